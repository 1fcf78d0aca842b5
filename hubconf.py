"""torch.hub entry points of vaezoo's presets, for a checkout of this repository.

    model = torch.hub.load("path/to/vaezoo", "nvae_mnist_small", source="local")   # untrained, as vaezoo.create
    model = torch.hub.load("path/to/vaezoo", "nvae_cifar10", source="local", pretrained=True)   # as vaezoo.load

Each entry point builds its preset through vaezoo's public API: ``vaezoo.create(PRESET, **kwargs)`` by default, or,
with ``pretrained=True``, ``vaezoo.load(PRESET, **kwargs)`` (the registered pretrained entry of that preset; where
its weights are not available it stops with vaezoo's usual one-line error saying what to do). torch.hub installs
nothing: vaezoo and its plugins must be installed (``python -m pip install -e .`` in the checkout), which
``dependencies`` checks.
"""

# what torch.hub checks is importable before it calls an entry point: torch, the core's requirements and the
# built-in plugins that define the presets below (they come with `pip install -e .`, not with the checkout alone)
dependencies = [
    "torch",
    "torchvision",
    "pluggy",
    "jsonargparse",
    "safetensors",
    "huggingface_hub",
    "rich",
    "yaml",
    "vaezoo",
    "vaezoo_baselines",
    "vaezoo_iaf",
    "vaezoo_ladder",
    "vaezoo_nvae",
    "vaezoo_vdvae",
]


def _describe(preset: str) -> tuple[str, str]:
    """(the preset's one-line summary, what ``pretrained=True`` gives), read from vaezoo's registry."""
    try:
        import vaezoo
    except ImportError:  # torch.hub names the missing dependencies when the entry point is called
        return f"The vaezoo preset {preset}", ": its registered pretrained entry"
    registry = vaezoo.get_registry()
    summary = registry.get("preset", preset).summary if preset in registry.names("preset") else ""
    weights = [e.name for e in registry.entries("pretrained") if e.target.get("preset") == preset]
    published = (
        f", a ready model in eval mode with the weights of the registered pretrained entry {weights[0]!r} "
        "(`vaezoo list pretrained` says where they load from)"
        if len(weights) == 1
        else ": this preset has no published weights, so it stops with one line saying so"
    )
    return (summary[:1].upper() + summary[1:]) if summary else f"The vaezoo preset {preset}", published


def _entry_point(name: str, preset: str):
    """The torch.hub entry point ``name`` of vaezoo preset ``preset``."""

    def entry(pretrained: bool = False, **kwargs):
        import vaezoo

        return vaezoo.load(preset, **kwargs) if pretrained else vaezoo.create(preset, **kwargs)

    summary, published = _describe(preset)
    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = f"""{summary}.

    Args:
        pretrained: False (default): the preset ``{preset}`` untrained, ``vaezoo.create({preset!r}, **kwargs)``
            (its initial weights drawn from torch's global generator). True: ``vaezoo.load({preset!r}, **kwargs)``{published}.
        **kwargs: untrained, overrides of the preset's init_args; pretrained, ``vaezoo.load``'s options (e.g.
            ``device="cuda"``).
    """
    return entry


nvae_mnist_small = _entry_point("nvae_mnist_small", "nvae-mnist-small")
nvae_mnist = _entry_point("nvae_mnist", "nvae-mnist")
nvae_cifar10 = _entry_point("nvae_cifar10", "nvae-cifar10")
nvae_celeba64 = _entry_point("nvae_celeba64", "nvae-celeba64")
nvae_imagenet32 = _entry_point("nvae_imagenet32", "nvae-imagenet32")
nvae_celebahq256 = _entry_point("nvae_celebahq256", "nvae-celebahq256")
nvae_ffhq256 = _entry_point("nvae_ffhq256", "nvae-ffhq256")
vae_mnist = _entry_point("vae_mnist", "vae-mnist")
iaf_vae_mnist = _entry_point("iaf_vae_mnist", "iaf-vae-mnist")
lvae_mnist = _entry_point("lvae_mnist", "lvae-mnist")
vdvae_mnist = _entry_point("vdvae_mnist", "vdvae-mnist")
