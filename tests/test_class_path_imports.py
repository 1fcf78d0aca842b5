"""Every path that reads a class path refuses an unregistered one *before importing it*.

A canary module on ``sys.path`` leaves a file behind as soon as it is imported; its class is handed to each path that
parses a class path: a recipe file, an overlay, a dotted command-line override (both spellings), the ``--data`` of
``vaezoo evaluate``, a saved model's ``config.json``, :func:`vaezoo.build`, and the converter's arguments. Each is
refused (exit 2 or a ConfigError naming the key), and the canary is never imported. Refusing *after* the import
(as a subtype check would) is too late: the module's top level has already run.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml
from conftest import REPO_ROOT

import vaezoo
from vaezoo.cli import main
from vaezoo.errors import ConfigError

RECIPE = REPO_ROOT / "recipes" / "vae_mnist.yaml"
CANARY = "vaezoo_canary_never_imported"
PAYLOAD = f"{CANARY}.Payload"
TINY = ["--model.init_args.latent_dim", "2", "--model.init_args.hidden_channels", "2",
        "--model.init_args.hidden_units", "8", "--trainer.max_steps", "1", "--trainer.logging.progress", "false"]  # fmt: skip


@pytest.fixture
def canary(tmp_path, monkeypatch):
    """The canary module's marker file; the module is importable from sys.path for the test's duration."""
    folder = tmp_path / "site"
    folder.mkdir()
    marker = tmp_path / "canary_was_imported"
    (folder / f"{CANARY}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n\nclass Payload:\n    def __init__(self, *args, **kwargs):\n"
        f"        open({str(marker)!r}, 'w').close()\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, CANARY, raising=False)
    yield marker
    sys.modules.pop(CANARY, None)  # never leak it to later tests, even when one fails


def _never_imported(marker) -> None:
    assert CANARY not in sys.modules and not marker.exists(), "the canary module was imported"


def _recipe_with_canary(path, section: str = "prior"):
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["model"].setdefault("init_args", {})[section] = {"class_path": PAYLOAD}  # over the preset the recipe names
    path.write_text(yaml.safe_dump(recipe))
    return path


def _refused(argv, capsys, *expected):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err


def test_recipe_file(canary, tmp_path, capsys):
    recipe = _recipe_with_canary(tmp_path / "recipe.yaml")
    _refused(["fit", str(recipe), *TINY, "--run_dir", str(tmp_path / "r")], capsys, PAYLOAD)
    assert not (tmp_path / "r").exists()
    _never_imported(canary)


@pytest.mark.parametrize("section", ["prior", "likelihood"])
def test_overlay(canary, tmp_path, capsys, section):
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({"model": {"init_args": {section: {"class_path": PAYLOAD}}}}))
    argv = ["fit", str(RECIPE), "--config", str(overlay), *TINY, "--run_dir", str(tmp_path / "r")]
    _refused(argv, capsys, PAYLOAD)
    _never_imported(canary)


@pytest.mark.parametrize(
    "override",
    [
        ["--model.init_args.prior", PAYLOAD],
        ["--model.init_args.prior.class_path", PAYLOAD],
        ["--model", PAYLOAD],
        ["--objective", PAYLOAD],
        ["--data", PAYLOAD],
        ["--model.init_args.posterior", json.dumps({"class_path": PAYLOAD})],
    ],
    ids=["dotted", "dotted-class-path", "model", "objective", "data", "json-value"],
)
def test_command_line_override(canary, tmp_path, capsys, override):
    _refused(["fit", str(RECIPE), *TINY, *override, "--run_dir", str(tmp_path / "r")], capsys)
    assert not (tmp_path / "r").exists()
    _never_imported(canary)


def test_print_config_of_a_recipe(canary, tmp_path, capsys):
    recipe = _recipe_with_canary(tmp_path / "recipe.yaml")
    _refused(["fit", str(recipe), "--print_config"], capsys)
    _never_imported(canary)


def test_config_json_of_a_saved_model(canary, tmp_path):
    model = vaezoo.create("vae-mnist", latent_dim=2, hidden_channels=2, hidden_units=8)
    folder = model.save_pretrained(tmp_path / "saved")
    config = json.loads((folder / "config.json").read_text())
    config["model"]["init_args"]["prior"] = {"class_path": PAYLOAD}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=PAYLOAD):
        vaezoo.load(f"local-dir:{folder}")
    _never_imported(canary)


@pytest.mark.parametrize("where", ["top", "nested"])
def test_build_from_a_spec(canary, where):
    spec = {"class_path": "ConvVAE", "init_args": {"prior": {"class_path": PAYLOAD}}}
    with pytest.raises(ConfigError, match=PAYLOAD):
        vaezoo.build({"class_path": PAYLOAD} if where == "top" else spec)
    _never_imported(canary)


def test_data_argument_of_evaluate(canary, tmp_path, capsys):
    folder = vaezoo.create("vae-mnist", latent_dim=2, hidden_channels=2, hidden_units=8).save_pretrained(tmp_path / "m")
    _refused(["evaluate", str(folder), "--k", "0", "--data", PAYLOAD], capsys, PAYLOAD)
    _refused(["evaluate", str(folder), "--k", "0", "--data", json.dumps({"class_path": PAYLOAD})], capsys, PAYLOAD)
    _never_imported(canary)


def test_converter_arguments(canary, tmp_path, capsys):
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"not read")
    _refused(["convert", PAYLOAD, str(checkpoint), str(tmp_path / "out")], capsys, PAYLOAD)
    _refused(["convert", "nvlabs", str(checkpoint), "--pretrained", PAYLOAD], capsys, PAYLOAD)
    assert not (tmp_path / "out").exists()
    _never_imported(canary)


def test_the_allow_list_alone_refuses_before_importing(canary):
    """The allow-list by itself (without the registry check that :func:`vaezoo.build` runs first): jsonargparse
    refuses a class path outside the registered classes without importing it, and still reads registered ones."""
    from jsonargparse import ArgumentParser

    from vaezoo.config import restrict_value_imports
    from vaezoo.interfaces import Prior

    restrict_value_imports(vaezoo.get_registry())
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--prior", type=Prior)
    with pytest.raises(Exception, match=PAYLOAD):
        parser.parse_object({"prior": {"class_path": PAYLOAD}})
    registered = vaezoo.get_registry().find_class("StandardNormalPrior").class_path
    assert parser.parse_object({"prior": {"class_path": registered}}).prior.class_path == registered
    _never_imported(canary)


@pytest.mark.parametrize(
    "spec, kind, message",
    [
        ({"class_path": "ConvVAE", "init_args": {"prior": {"class_path": "NoSuch"}}}, "model",
         "model.prior: unknown component 'NoSuch' (choices: "),
        ({"class_path": "ConvVAE", "dict_kwargs": {"prior": {"class_path": "ConvVA"}}}, "model",
         "model.prior: unknown component 'ConvVA'; did you mean ConvVAE? (choices: "),
        ({"class_path": "NVAEObjective", "init_args": {"regularizers": [{"class_path": "SpectralRegularizer"},
                                                                       {"class_path": "Nope"}]}}, "objective",
         "objective.regularizers[1]: unknown component 'Nope' (choices: "),
        ({"class_path": 3}, "model", "model.class_path must be a string, got int"),
        ({"init_args": {"latent_dim": 2}}, "model",
         "model spec must be a mapping with a class_path (or a preset), got a mapping of init_args"),
        ("ConvVAE", "model", "model spec must be a mapping with a class_path (or a preset), got str"),
        ({"batch_size": 4, "pad": 2}, "data", "data spec must be a mapping with a class_path, got a mapping of batch_size, pad"),
        ({"preset": "nvae-mnist-smal"}, "model", "model.preset: unknown preset 'nvae-mnist-smal'; did you mean nvae-mnist-small,"),
        ({"class_path": "ConvVAE", "init_args": {"latent_dim": "many"}}, "model",
         "model: Parser key \"model\":; Parser key \"latent_dim\":; Expected a <class 'int'>. Got value: many"),
    ],
    ids=["nested", "dict_kwargs-close-match", "list-item", "not-a-string", "no-class-path", "not-a-mapping",
         "data-without-class-path", "unknown-preset", "bad-value"],
)  # fmt: skip
def test_a_spec_that_cannot_be_built_is_one_line_naming_its_key(spec, kind, message):
    """:func:`vaezoo.build` names where in the spec the problem is (``init_args`` and ``dict_kwargs`` are not part of
    the path, list items are indexed), and raises a ConfigError, never exits."""
    with pytest.raises(ConfigError) as info:
        vaezoo.build(spec, kind=kind)
    text = str(info.value)
    assert text.startswith(message) and "\n" not in text, text


def test_a_model_spec_may_name_a_preset_as_recipes_do():
    """``vaezoo.build(recipe["model"])`` builds a recipe's ``model: {preset: NAME, init_args: {...}}``: the preset's
    architecture with the overrides, the same model (and config) as ``vaezoo.create(NAME, **overrides)``."""
    torch.manual_seed(0)
    built = vaezoo.build({"preset": "vae-mnist", "init_args": {"latent_dim": 3}})
    torch.manual_seed(0)
    created = vaezoo.create("vae-mnist", latent_dim=3)
    assert built.config == created.config and built.config["init_args"]["latent_dim"] == 3
    for (name, a), (_, b) in zip(built.state_dict().items(), created.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
