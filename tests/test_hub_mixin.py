"""ModelHubMixin: the save_pretrained / push_to_hub / from_pretrained methods a concrete model class opts into.

The models here are defined in the test (registered through a plugin object), so the mixin is checked on its
own, whichever built-in model classes inherit it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import vaezoo
from vaezoo import hookimpl
from vaezoo.errors import CheckpointError
from vaezoo.hub import HubError, ModelHubMixin
from vaezoo.interfaces import Example, GenerativeModel, ModelOutput
from vaezoo.plugins import plugin

HUB_DIR = Path(vaezoo.__file__).parent / "hub"


class TinyHubVAE(ModelHubMixin, GenerativeModel):
    """A one-latent-vector VAE on flattened images, self-contained (no registered components)."""

    def __init__(self, image_shape: tuple[int, int, int] = (1, 4, 4), latent_dim: int = 2) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.latent_dim = latent_dim
        pixels = self.image_shape[0] * self.image_shape[1] * self.image_shape[2]
        self.encoder = nn.Linear(pixels, 2 * latent_dim)
        self.decoder = nn.Linear(latent_dim, pixels)
        self.register_buffer("scale", torch.ones(latent_dim))  # a persistent buffer travels with the weights

    def latent_shapes(self, batch_size: int) -> list[tuple[int, ...]]:
        return [(batch_size, self.latent_dim)]

    def forward(self, x: Tensor, noise: list[Tensor] | None = None) -> ModelOutput:
        mu, log_sigma = self.encoder(x.flatten(1)).chunk(2, dim=1)
        eps = noise[0] if noise else torch.randn_like(mu)
        z = mu + log_sigma.exp() * eps * self.scale
        params = self.decoder(z).view(x.shape[0], *self.image_shape)
        recon = nn.functional.binary_cross_entropy_with_logits(params, x, reduction="none").flatten(1).sum(1)
        log_q = (-0.5 * eps**2 - log_sigma).sum(1)
        log_p = (-0.5 * z**2).sum(1)
        return ModelOutput(recon=recon, kl=(log_q - log_p).unsqueeze(0), log_q=log_q, log_p=log_p, params=params)

    def sample_params(self, n: int, temperature: float = 1.0, noise: list[Tensor] | None = None) -> Tensor:
        z = (noise[0] if noise else torch.randn(n, self.latent_dim)) * temperature
        return self.decoder(z).view(n, *self.image_shape)

    @classmethod
    def example(cls) -> Example:
        x = torch.rand(2, 1, 4, 4).round()
        return Example(build=cls, inputs=(x, [torch.randn(2, 2)]), output_shape=(2,), call=lambda m, i: m(*i).nelbo)


class OtherHubVAE(TinyHubVAE):
    """Another model class: loading a TinyHubVAE through it must be refused."""


class _HubModelsPlugin:
    @hookimpl
    def register_components(self, register):
        register("model", TinyHubVAE)
        register("model", OtherHubVAE)


@pytest.fixture
def registered():
    with plugin(_HubModelsPlugin(), name="hub_mixin_models"):
        yield


def _model() -> TinyHubVAE:
    """A built model whose weights and buffers differ from its seeded initialisation (equal outputs after a
    round trip can only come from the file)."""
    model = vaezoo.build({"class_path": "TinyHubVAE", "init_args": {"image_shape": [1, 4, 4], "latent_dim": 2}})
    with torch.no_grad():
        for tensor in model.state_dict().values():
            tensor.add_(0.1 * torch.randn_like(tensor))
    return model.eval()


def _outputs(model: GenerativeModel) -> list[Tensor]:
    torch.manual_seed(1)
    noise = [torch.randn(s) for s in model.latent_shapes(3)]
    x = torch.rand(3, *model.image_shape).round()
    with torch.no_grad():
        out = model(x, noise=noise)
        return [model.sample_params(3, noise=noise), out.nelbo, out.log_iw, out.params]


def test_the_abstract_contract_knows_nothing_of_the_hub():
    for method in ("save_pretrained", "push_to_hub", "from_pretrained"):
        assert not hasattr(GenerativeModel, method), method
        assert callable(getattr(TinyHubVAE, method)), method


def test_save_then_from_pretrained_round_trips(registered, tmp_path):
    model = _model()
    folder = model.save_pretrained(tmp_path / "tiny", license="mit", description="a tiny test model")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    loaded = TinyHubVAE.from_pretrained(str(folder))
    assert type(loaded) is TinyHubVAE and not loaded.training and loaded.device == torch.device("cpu")
    assert loaded.config == model.config
    assert loaded.card_metadata == {"license": "mit", "description": "a tiny test model"}
    for a, b in zip(_outputs(model), _outputs(loaded), strict=True):
        assert torch.equal(a, b)
    assert type(vaezoo.load(f"local-dir:{folder}")) is TinyHubVAE


def test_from_pretrained_refuses_a_model_of_another_class(registered, tmp_path):
    folder = _model().save_pretrained(tmp_path / "tiny")
    with pytest.raises(CheckpointError) as info:
        OtherHubVAE.from_pretrained(folder)
    message = str(info.value)
    assert message == f"{folder} holds a TinyHubVAE, not a OtherHubVAE" and "\n" not in message


def test_push_to_hub_delegates_and_refuses_offline_before_any_request(registered, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match=r"^hf-hub:acme/tiny@main: HF_HUB_OFFLINE is set; pushing needs network"):
        _model().push_to_hub("acme/tiny")


FORBIDDEN = ("vaezoo.interfaces", "vaezoo.models", "vaezoo.training", "vaezoo.commands", "vaezoo.cli")
RELATIVE_FORBIDDEN = tuple(name.split(".", 1)[1] for name in FORBIDDEN)  # as `from ..interfaces import`


@pytest.mark.parametrize("path", sorted(HUB_DIR.glob("*.py")), ids=lambda p: p.name)
def test_hub_modules_stay_below_the_contracts_and_the_mixin_on_top(path):
    """vaezoo.hub works on any nn.Module with a spec: it never imports the contracts, models, training, the CLI
    or a plugin, and only the package itself re-exports the mixin (which is built on the other modules)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            parts = [module.split(".")[0]] if module else [alias.name for alias in node.names]  # from .. import x
            if node.level == 2 and set(parts) & set(RELATIVE_FORBIDDEN):
                pytest.fail(f"{path.name} imports ..{module or parts}")
            if node.level == 1 and module == "mixin" and path.name != "__init__.py":
                pytest.fail(f"{path.name} imports the mixin")
            names = [module] if node.level == 0 else []
        else:
            continue
        for name in names:
            assert not name.startswith(FORBIDDEN + ("vaezoo_",)), f"{path.name} imports {name}"
