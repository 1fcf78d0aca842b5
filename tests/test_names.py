"""Preset names and pretrained names meet: ``vaezoo.load(PRESET)`` loads the preset's one pretrained entry,
``vaezoo.create(NAME, pretrained=True)`` is ``vaezoo.load(NAME)``, and a name given to the other function says which
function to call. A test plugin registers tiny presets and pretrained entries; the weights are installed in the
temporary model store (the conftest fixture sets VAEZOO_HOME), so everything is offline."""

from __future__ import annotations

import pytest
import torch

import vaezoo
from vaezoo import hookimpl, hub
from vaezoo.cli import main
from vaezoo.errors import VaezooError
from vaezoo.plugins import get_registry, plugin

TINY = {"latent_dim": 4, "hidden_channels": 4, "hidden_units": 16}


class _Table:
    @hookimpl
    def register_presets(self, register):
        spec = get_registry().get("preset", "vae-mnist").target(**TINY)
        for name in ("names-tiny", "names-two", "names-bare"):
            register(name, lambda _spec=spec, **overrides: {**_spec, "init_args": {**_spec["init_args"], **overrides}})

    @hookimpl
    def register_pretrained(self, register):
        entries = {"names-tiny-weights": "names-tiny", "names-two-a": "names-two", "names-two-b": "names-two"}
        for name, preset in entries.items():
            register(name, repo_id=f"acme/{name}", preset=preset, license="mit", source="test")


@pytest.fixture
def installed():
    """The table registered and ``names-tiny-weights`` installed in the store; yields its state dict."""
    with plugin(_Table(), name="names-table"):
        torch.manual_seed(3)
        model = vaezoo.create("names-tiny")
        hub.save_pretrained(model, hub.store_path("names-tiny-weights"), pretrained="names-tiny-weights")
        yield model.state_dict()


def _same_weights(model, state) -> None:
    assert model.state_dict().keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key


def test_load_of_a_preset_is_its_one_pretrained_entry(installed):
    by_preset = vaezoo.load("names-tiny")
    _same_weights(by_preset, installed)
    assert by_preset.card.name == "names-tiny-weights" and by_preset.card.origin == "store"
    assert not by_preset.training
    for name in ("names-tiny", "names-tiny-weights"):  # create(..., pretrained=True) is load
        model = vaezoo.create(name, pretrained=True)
        _same_weights(model, installed)
        assert model.card.name == "names-tiny-weights"
    assert hub.from_pretrained("names-tiny").card.name == "names-tiny-weights"  # trainer.init_from takes it too
    fresh = vaezoo.create("names-tiny")  # without pretrained: untrained, as before
    assert not hasattr(fresh, "card") and any(not torch.equal(v, installed[k]) for k, v in fresh.state_dict().items())


def _one_line(call) -> str:
    with pytest.raises(VaezooError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_names_given_to_the_other_function_say_which_to_call(installed, capsys):
    expected = "'names-bare' is a preset without published weights: vaezoo.create('names-bare') builds it untrained"
    assert expected in _one_line(lambda: vaezoo.load("names-bare"))
    assert expected in _one_line(lambda: vaezoo.create("names-bare", pretrained=True))
    assert _one_line(lambda: vaezoo.create("names-tiny-weights")) == (
        "'names-tiny-weights' is a pretrained model, not a preset: vaezoo.load('names-tiny-weights') loads it; "
        "vaezoo.create('names-tiny') builds its architecture untrained"
    )
    assert "several pretrained entries (names-two-a, names-two-b)" in _one_line(lambda: vaezoo.load("names-two"))
    assert "takes no overrides (latent_dim)" in _one_line(lambda: vaezoo.create("names-tiny", True, latent_dim=8))
    assert "did you mean" in _one_line(lambda: vaezoo.load("names-tiyn"))  # neither: close matches, as before
    assert main(["sample", "names-bare", "--n", "2"]) == 2  # the commands say it the same way
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "vaezoo.create('names-bare')" in err
