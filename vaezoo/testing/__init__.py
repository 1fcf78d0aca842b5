"""Contract checks for components, shipped so that a plugin runs in its own test suite what vaezoo's suite runs on
every registered component::

    # tests/test_contract.py of a plugin
    import pytest
    from vaezoo.testing import check_entry, plugin_entries

    @pytest.mark.parametrize("entry", plugin_entries("my_plugin"), ids=str)
    def test_contract(entry):
        check_entry(entry)

Each check raises :class:`ContractError` (an ``AssertionError``) with one line naming the component and what it
broke. :mod:`vaezoo.testing.doubles` has minimal stand-ins for every slot of the hierarchical assembler.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable
from fnmatch import fnmatch
from pathlib import Path

import torch

from ..interfaces import INTERFACES, Component, DataModule, FeatureExtractor, Logger
from ..plugins import get_registry
from ..registry import Entry, RegistryError, check_implements

__all__ = [
    "ContractError",
    "check_component",
    "check_dataset",
    "check_entry",
    "check_feature_extractor",
    "check_gradient_is_the_derivative",
    "check_logger",
    "check_preset",
    "check_registration",
    "plugin_entries",
]


class ContractError(AssertionError):
    """A component that breaks its kind's contract."""


def plugin_entries(plugin: str | None = None, kinds: Iterable[str] | None = None) -> list[Entry]:
    """The registry's entries registered by ``plugin`` (every plugin's when None), of ``kinds`` (every kind with a
    contract: the component kinds, datasets and presets, when None). A plugin that is not loaded is an error, so
    that a misspelt name never checks nothing."""
    registry = get_registry()
    wanted = list(kinds) if kinds is not None else [*INTERFACES, "preset"]
    entries = [e for kind in wanted for e in registry.entries(kind) if plugin is None or e.plugin == plugin]
    if plugin is not None and not any(e.plugin == plugin for k in registry.kinds() for e in registry.entries(k)):
        raise ContractError(f"plugin {plugin!r} registered nothing (is it installed, and not blocked?)")
    return entries


def check_entry(entry: Entry) -> None:
    """The contract of one registry entry, whatever its kind."""
    if entry.kind == "preset":
        check_preset(entry.name)
    elif entry.kind == "dataset":
        check_dataset(entry.target)
    elif entry.kind == "feature_extractor":
        check_feature_extractor(entry.target)
    elif entry.kind == "logger":
        check_logger(entry.target)
    elif entry.kind in INTERFACES:
        check_component(entry.target, entry.kind)


def check_registration(cls: type, kind: str) -> None:
    """What the registry checks when ``cls`` is registered as ``kind``: its interface, abstract methods and slot
    constructor."""
    try:
        check_implements(INTERFACES.get(kind), kind, cls, cls.__name__, "?")
    except RegistryError as error:
        raise ContractError(str(error)) from None


def _fail(cls: type, message: str) -> ContractError:
    return ContractError(f"{cls.__qualname__}: {message}")


def check_component(cls: type, kind: str | None = None) -> None:
    """The common contract of a component class, on its own ``example()``:

    - it registers as ``kind`` (its interface, abstract methods and slot constructor: :func:`check_registration`);
    - ``example().build()`` is an instance, deterministic under the global seed;
    - the example's output has the stated shape and is finite;
    - backward gives a finite gradient to every parameter that requires one (but those the example names in
      ``gradient_free``), or to the inputs for parameter-free components: no part of it is dead;
    - that gradient is the derivative of the output (:func:`check_gradient_is_the_derivative`), unless the example
      names why it is a surrogate (``Example.surrogate_gradient``);
    - its state_dict saved to bytes and loaded into a differently initialised instance gives bitwise the same
      output in eval mode.
    """
    kind = kind or getattr(cls, "kind", "")
    if kind not in INTERFACES:
        raise _fail(cls, f"{kind!r} is not a component kind with a contract ({', '.join(INTERFACES)})")
    check_registration(cls, kind)
    if not issubclass(cls, Component):
        raise _fail(cls, "is not a vaezoo.interfaces.Component")
    example = cls.example()
    if example is None or not callable(getattr(example, "build", None)):
        raise _fail(cls, "example() must return a vaezoo.interfaces.Example")
    torch.manual_seed(0)
    module = example.build()
    if not isinstance(module, cls):
        raise _fail(cls, f"example().build() returned a {type(module).__name__}, not a {cls.__name__}")

    torch.manual_seed(0)
    out = example.run(module)
    if not isinstance(out, torch.Tensor):
        raise _fail(cls, f"the example's call returned a {type(out).__name__}, not a tensor")
    if example.output_shape is not None and tuple(out.shape) != tuple(example.output_shape):
        raise _fail(cls, f"the example's output has shape {tuple(out.shape)}, the example says {example.output_shape}")
    if not torch.isfinite(out).all():
        raise _fail(cls, "the example's output is not finite")

    out.float().sum().backward()
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if params:
        dead = [n for n, p in params if p.grad is None and not any(fnmatch(n, g) for g in example.gradient_free)]
        if all(p.grad is None for _, p in params):
            raise _fail(cls, "no gradient reaches any parameter")
        if dead:
            raise _fail(cls, f"no gradient reaches {', '.join(dead[:5])}{' ...' if len(dead) > 5 else ''}")
        grads = [p.grad for _, p in params]
    else:
        grads = [t.grad for t in example.inputs if isinstance(t, torch.Tensor) and t.requires_grad]
        if not any(g is not None for g in grads):
            raise _fail(cls, "no gradient reaches its inputs (and it has no parameters)")
    if not all(torch.isfinite(g).all() for g in grads if g is not None):
        raise _fail(cls, "a gradient is not finite")

    if example.surrogate_gradient is None:
        check_gradient_is_the_derivative(cls)

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1234)
    clone = example.build()
    clone.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    module.eval(), clone.eval()
    with torch.no_grad():
        torch.manual_seed(7)
        expected = example.run(module)
        torch.manual_seed(7)
        got = example.run(clone)
    if not torch.equal(got, expected):
        raise _fail(cls, "its state_dict does not carry its state: a loaded copy gives another output")


def check_gradient_is_the_derivative(cls: type) -> None:
    """The gradient backward gives, against the output's own central difference in float64: along a random direction
    d of the parameters (and float inputs that require a gradient), ``<grad, d>`` equals
    ``(f(theta + h d) - f(theta - h d)) / 2h`` for ``f = sum(output)``. Each evaluation starts from the same buffers
    (BatchNorm statistics, power-iteration vectors, taken after a first call has created any lazy ones) and the same
    seed, so ``f`` is one deterministic function. A detached or dropped term, a wrong custom backward or a parameter
    that never reaches the output while it should all break it."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        example = cls.example()
        module = example.build()
        inputs = [
            t for t in example.inputs if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad
        ]
        leaves = [p for p in module.parameters() if p.requires_grad] + inputs
        if not leaves or any(t.dtype != torch.float64 for t in leaves):
            return  # a component that keeps its own dtype: the float32 gradient checks of check_component only
        with torch.no_grad():
            torch.manual_seed(11)
            example.run(module)  # creates lazy state (e.g. power-iteration vectors)
        buffers = {name: b.clone() for name, b in module.named_buffers()}

        def f() -> torch.Tensor:
            with torch.no_grad():
                for name, b in module.named_buffers():
                    b.copy_(buffers[name])
            torch.manual_seed(11)
            return example.run(module).sum()

        for t in leaves:
            t.grad = None
        value = f()
        value.backward()
        generator = torch.Generator().manual_seed(3)
        direction = [torch.randn(t.shape, generator=generator, dtype=torch.float64) for t in leaves]
        analytic = sum(float((t.grad * d).sum()) for t, d in zip(leaves, direction, strict=True) if t.grad is not None)
        # an output rounded to float32 on purpose (a logsumexp kept in fp32) takes a larger step and tolerance
        h, tolerance = (1e-6, 1e-4) if value.dtype == torch.float64 else (1e-3, 1e-2)
        values = []
        with torch.no_grad():
            for sign in (1.0, -1.0):
                for t, d in zip(leaves, direction, strict=True):
                    t.add_(sign * h * d)
                values.append(float(f()))
                for t, d in zip(leaves, direction, strict=True):
                    t.sub_(sign * h * d)
    finally:
        torch.set_default_dtype(default)
    numeric = (values[0] - values[1]) / (2 * h)
    if abs(analytic - numeric) > max(1e-6, tolerance * abs(numeric)):
        raise _fail(
            cls,
            f"its gradient is not the derivative of its output: {analytic:.6g} along a random direction, the finite "
            f"difference {numeric:.6g} (a surrogate gradient? say why in Example.surrogate_gradient)",
        )


def check_feature_extractor(cls: type) -> None:
    """A frozen measurement network (no backward): float32 features ``(N, feature_dim)``, finite, no parameter that
    trains, and a protocol naming everything a figure in its features depends on (weights and their sha256, the
    resize rule, the features)."""
    check_registration(cls, "feature_extractor")
    if not issubclass(cls, FeatureExtractor) or not cls.metric or not cls.label:
        raise _fail(cls, "a feature extractor subclasses FeatureExtractor and names its metric and label")
    example = cls.example()
    module = example.build()
    with torch.no_grad():
        out = example.run(module)
    expected = (len(example.inputs[0]), module.feature_dim)
    if tuple(out.shape) != expected or tuple(example.output_shape) != expected:
        raise _fail(cls, f"features of shape {tuple(out.shape)}, expected {expected}")
    if out.dtype != torch.float32 or not torch.isfinite(out).all():
        raise _fail(cls, "features must be finite float32")
    missing = {"name", "weights", "weights_sha256", "resize", "features"} - set(module.protocol())
    if missing:
        raise _fail(cls, f"its protocol lacks {', '.join(sorted(missing))}")
    sha = module.protocol()["weights_sha256"]
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise _fail(cls, f"weights_sha256 is not a sha256: {sha!r}")
    if any(p.requires_grad for p in module.parameters()):
        raise _fail(cls, "a measurement network is frozen: none of its parameters requires a gradient")


def check_logger(cls: type) -> None:
    """A logger (:class:`~vaezoo.interfaces.Logger`) says in ``missing()`` why it cannot run here (a string) or
    None; when it can, it opens as ``cls(run_dir)`` in a temporary run folder (its other arguments have defaults),
    takes scalars, an image grid, a rewind, more scalars and a close without an error, and writes only inside the run
    folder it was given."""
    check_registration(cls, "logger")
    if not issubclass(cls, Logger):
        raise _fail(cls, "is not a vaezoo.interfaces.Logger")
    reason = cls.missing()
    if reason is not None and not (isinstance(reason, str) and reason.strip()):
        raise _fail(cls, f"missing() must return None or a reason (a non-empty string), got {reason!r}")
    if reason is not None:
        return  # what it needs is not installed here: the rest is checked where it is
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        run_dir.mkdir()
        if not isinstance(cls.describe(run_dir), str):
            raise _fail(cls, "describe(run_dir) must return a string")
        try:
            logger = cls(run_dir)
            logger.log_scalars(1, {"loss": 1.5, "kl/group_0": 0.25, "lr": 1e-3})
            logger.log_images(1, "samples", torch.rand(3, 10, 12))
            logger.rewind(0)
            logger.log_scalars(1, {"loss": 1.25, "kl/group_0": 0.125, "lr": 1e-3})
            logger.close()
        except Exception as exc:
            raise _fail(cls, f"{type(exc).__name__} while logging: {exc}") from exc
        outside = [p.name for p in Path(folder).iterdir() if p != run_dir]
        if outside:
            raise _fail(cls, f"wrote outside the run folder it was given: {', '.join(sorted(outside))}")


def check_dataset(cls: type) -> None:
    """A data module's example builds, both splits are non-empty, and images have ``image_shape`` in [0, 1]."""
    check_registration(cls, "dataset")
    if not issubclass(cls, DataModule):
        raise _fail(cls, "is not a vaezoo.interfaces.DataModule")
    data = cls.example().build()
    for split, dataset in (("train", data.train_dataset()), ("test", data.test_dataset())):
        if len(dataset) == 0:
            raise _fail(cls, f"its {split} split is empty")
        x, *_ = dataset[0]
        if tuple(x.shape) != tuple(data.image_shape):
            raise _fail(cls, f"a {split} image has shape {tuple(x.shape)}, image_shape is {tuple(data.image_shape)}")
        if float(x.min()) < 0.0 or float(x.max()) > 1.0:
            raise _fail(cls, f"{split} images are not in [0, 1]")


def check_preset(name: str, run: bool = False) -> None:
    """A preset builds (on the meta device: no memory) into a registered model class with parameters. With ``run``
    (for a small preset: it is built on the CPU), one training pass too: the model's forward on a batch of 2 random
    binary images of its shape gives a finite negative ELBO per example, and its backward a finite gradient to
    every parameter that receives one, so that parts which fit their slots but not each other fail here rather
    than in a user's first run."""
    from ..config import build

    registry = get_registry()
    with torch.device("meta"):
        model = build(registry.get("preset", name).target(), kind="model", registry=registry)
    if registry.find_class(type(model).__name__) is None:
        raise ContractError(f"preset {name!r}: builds a {type(model).__name__}, which is not a registered model")
    if sum(p.numel() for p in model.parameters()) == 0:
        raise ContractError(f"preset {name!r}: the model has no parameters")
    if not run:
        return
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build(registry.get("preset", name).target(), kind="model", registry=registry).train()
        x = torch.rand(2, *model.image_shape).round()
        try:
            output = model(x)
            loss = output.recon + output.kl.sum(0)
        except Exception as exc:  # noqa: BLE001 - the point is to name it in one line
            raise ContractError(f"preset {name!r}: the forward pass fails: {type(exc).__name__}: {exc}") from exc
        if loss.shape != (2,) or not torch.isfinite(loss).all():
            raise ContractError(
                f"preset {name!r}: the negative ELBO per example is {loss.tolist()}, not 2 finite values"
            )
        loss.mean().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad:
        raise ContractError(f"preset {name!r}: a non-finite gradient reaches {', '.join(bad[:3])}")
