"""Saved models (config.json + model.safetensors + README.md), strict loading, the pretrained table, the cache.

Everything here is offline: the autouse fixture in conftest.py sets HF_HUB_OFFLINE=1 and a temporary HF_HOME.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import struct
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from model_outputs import model_outputs
from safetensors.torch import load_file, save_file
from vaezoo_baselines.conv_vae import ConvVAE
from vaezoo_nvae import pretrained as nvae_pretrained

import vaezoo
from vaezoo import hookimpl, hub
from vaezoo.cli import main
from vaezoo.errors import CheckpointError, ConfigError, RegistryError, VaezooError
from vaezoo.hub.loading import load_folder
from vaezoo.interfaces import GenerativeModel
from vaezoo.plugins import get_registry, plugin

CARD = {
    "license": "apache-2.0",
    "dataset": "mnist",
    "source": "trained by the test suite",
    "metrics": [{"name": "NLL", "value": 81.5, "unit": "nats", "split": "test", "protocol": "IW, 1000 samples"}],
}


def _model(preset: str = "test-vae"):
    """A tiny model whose weights and statistics are not its seeded initialisation: equal outputs after a
    round trip can only come from the file."""
    model = vaezoo.create(preset).eval()
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():  # what is saved: parameters and persistent buffers
            if name in params:
                tensor.add_(0.1 * torch.randn_like(tensor))
            elif tensor.is_floating_point():
                tensor.mul_(1 + 0.1 * torch.rand_like(tensor))  # keeps BatchNorm variances positive
    return model


def _assert_same_outputs(a, b):
    for x, y in zip(model_outputs(a), model_outputs(b), strict=True):
        assert torch.equal(x, y)


def _one_line_error(exc_info) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    return message


def _rewrite_weights(folder: Path, tensors: dict) -> None:
    """Replace model.safetensors and record its new hash, as a (buggy) converter would."""
    save_file(tensors, str(folder / "model.safetensors"))
    _record_weights(folder)


def _record_weights(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    data = (folder / "model.safetensors").read_bytes()
    config["weights"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (folder / "config.json").write_text(json.dumps(config))


# ---------------------------------------------------------------------------------------------
# Round trip and format
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["test-vae", "test-nvae"])
def test_local_round_trip_gives_identicalmodel_outputs(preset, tmp_path):
    model = _model(preset)
    folder = model.save_pretrained(tmp_path / "tiny", **CARD)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]

    loaders = [
        vaezoo.load(f"local-dir:{folder}"),
        hub.from_pretrained(folder),
        type(model).from_pretrained(str(folder)),
    ]
    for loaded in loaders:
        assert type(loaded) is type(model) and not loaded.training and loaded.device == torch.device("cpu")
        state = loaded.state_dict()
        for name, tensor in model.state_dict().items():
            assert torch.equal(state[name], tensor), name
        assert loaded.config == model.config and loaded.preset == preset
        assert loaded.card_metadata["metrics"] == CARD["metrics"]
    _assert_same_outputs(model, loaders[0])


def test_saved_files_parse(tmp_path):
    model = _model()
    folder = model.save_pretrained(tmp_path / "tiny", **CARD)

    raw = (folder / "model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])
    assert header.pop("__metadata__") == {"format": "pt"}
    state = model.state_dict()
    assert set(header) == set(state)
    end = 0
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        assert info["dtype"] == "F32" and info["shape"] == list(state[name].shape)
        begin, stop = info["data_offsets"]
        assert begin == end and stop - begin == state[name].numel() * 4
        end = stop
    assert 8 + header_len + end == len(raw)

    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "vaezoo" and config["format_version"] == hub.FORMAT_VERSION
    assert config["vaezoo_version"] == vaezoo.__version__
    assert config["model"] == model.config
    assert config["weights"] == {"sha256": hashlib.sha256(raw).hexdigest(), "size": len(raw)}
    assert config["metadata"] == {"preset": "test-vae", **CARD}

    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "apache-2.0" and card.data.library_name == "vaezoo"

    # the modes mkdir and open() give under the user's umask (not private temporary-file modes)
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "file").write_text("")
    assert stat.S_IMODE(folder.stat().st_mode) == stat.S_IMODE((tmp_path / "probe").stat().st_mode)
    file_mode = stat.S_IMODE((tmp_path / "probe" / "file").stat().st_mode)
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {file_mode}
    assert card.data.datasets == ["mnist"]
    assert "| NLL | 81.5 | nats | test | IW, 1000 samples |" in card.text
    assert '"class_path": "ConvVAE"' in card.text


def test_free_text_license_becomes_other_with_name_and_link(tmp_path):
    entry = dict(nvae_pretrained.TABLE)["nvae-celebahq"]
    folder = _model().save_pretrained(
        tmp_path / "tiny", license=nvae_pretrained.LICENSE, license_link=nvae_pretrained.LICENSE_LINK, dataset=entry[2]
    )
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "other" and card.data.license_name == "nvidia-source-code-license-non-commercial"
    assert card.data.license_link == nvae_pretrained.LICENSE_LINK
    assert card.data.datasets is None and "CelebA HQ 256x256" in card.text  # not a dataset id: only in the text


class AliasedVAE(ConvVAE):
    """A model whose state_dict names one tensor twice, as the official NVAE's ``weight_normalized`` entries do."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.twin = self.decoder[0]


class _AliasedPlugin:
    @hookimpl
    def register_components(self, register):
        register("model", AliasedVAE)


def test_state_dict_aliases_are_stored_once_and_restored(tmp_path):
    with plugin(_AliasedPlugin()):
        model = vaezoo.build({"class_path": "AliasedVAE", "init_args": {"image_shape": [1, 8, 8], "latent_dim": 3}})
        assert {"twin.weight", "decoder.0.weight"} <= set(model.state_dict())
        folder = model.save_pretrained(tmp_path / "aliased")
        stored = load_file(str(folder / "model.safetensors"))
        assert ("twin.weight" in stored) != ("decoder.0.weight" in stored), "a shared tensor is stored once"
        loaded = vaezoo.load(f"local-dir:{folder}")
        assert loaded.twin.weight is loaded.decoder[0].weight
        _assert_same_outputs(model.eval(), loaded)


def test_loading_is_strict_about_keys_and_shapes(tmp_path):
    folder = _model().save_pretrained(tmp_path / "tiny")
    tensors = load_file(str(folder / "model.safetensors"))

    _rewrite_weights(folder, {k: v for k, v in tensors.items() if k != "decoder.0.bias"})
    with pytest.raises(CheckpointError) as info:
        vaezoo.load(f"local-dir:{folder}")
    assert "missing keys: decoder.0.bias" in _one_line_error(info)

    _rewrite_weights(folder, {**tensors, "decoder.9.extra": torch.zeros(2)})
    with pytest.raises(CheckpointError) as info:
        vaezoo.load(f"local-dir:{folder}")
    assert "unexpected keys: decoder.9.extra" in _one_line_error(info)

    _rewrite_weights(folder, {**tensors, "decoder.0.bias": torch.zeros(5)})
    with pytest.raises(CheckpointError) as info:
        vaezoo.load(f"local-dir:{folder}")
    assert "size mismatch for decoder.0.bias" in _one_line_error(info)

    both = {k: v for k, v in tensors.items() if k != "decoder.0.bias"}
    _rewrite_weights(folder, {**both, "decoder.9.extra": torch.zeros(2)})
    with pytest.raises(CheckpointError) as info:
        vaezoo.load(f"local-dir:{folder}")
    assert _one_line_error(info).endswith(
        "model.safetensors does not match config.json: missing keys: decoder.0.bias; unexpected keys: decoder.9.extra"
    )


# ---------------------------------------------------------------------------------------------
# Broken folders: one clear line each, and exit status 2 from the CLI
# ---------------------------------------------------------------------------------------------
def _break_truncated(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _break_corrupted(folder):
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))


def _break_header(folder):
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 50) + b'{"a": not json' + b" " * 40)
    _record_weights(folder)  # even with a matching hash, the file is not safetensors


def _break_class_path(folder):
    config = json.loads((folder / "config.json").read_text())
    config["model"]["init_args"]["likelihood"]["class_path"] = "vaezoo_evil_module.Payload"
    (folder / "config.json").write_text(json.dumps(config))


def _drop(name):
    return lambda folder: (folder / name).unlink()


def _break_json(folder):
    (folder / "config.json").write_text("{ this is not json")


def _break_format(folder):
    config = json.loads((folder / "config.json").read_text())
    config["format_version"] = hub.FORMAT_VERSION + 1
    (folder / "config.json").write_text(json.dumps(config))


BROKEN = {
    "truncated": (
        _break_truncated,
        CheckpointError,
        "model.safetensors has .* bytes, config.json says .* \\(truncated",
    ),
    "corrupted": (_break_corrupted, CheckpointError, "model.safetensors is corrupted"),
    "bad header": (_break_header, CheckpointError, "model.safetensors is not a valid safetensors file"),
    "class path": (_break_class_path, ConfigError, "config.json: .*unknown component 'vaezoo_evil_module.Payload'"),
    "no weights": (_drop("model.safetensors"), CheckpointError, "missing model.safetensors"),
    "no config": (_drop("config.json"), CheckpointError, "missing config.json"),
    "bad json": (_break_json, CheckpointError, "config.json is not valid JSON"),
    "newer format": (_break_format, CheckpointError, "format version 2 .* upgrade vaezoo"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_folder_gives_one_clear_line(case, tmp_path, capsys):
    breaker, error, pattern = BROKEN[case]
    folder = _model().save_pretrained(tmp_path / "tiny")
    breaker(folder)
    with pytest.raises(error, match=pattern) as info:
        vaezoo.load(f"local-dir:{folder}")
    _one_line_error(info)
    # the CLI path that loads a folder (push validates before any network use): exit 2, one line
    assert main(["push", str(folder), "acme/tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_push_in_offline_mode_is_refused_in_one_line(tmp_path, capsys):
    folder = _model().save_pretrained(tmp_path / "tiny")
    assert main(["push", str(folder), "acme/tiny"]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("HF_HUB_OFFLINE is set; pushing needs network access to https://huggingface.co")
    )


def test_unknown_class_path_is_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "vaezoo_evil_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Payload:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = _model().save_pretrained(tmp_path / "tiny")
    _break_class_path(folder)
    with pytest.raises(ConfigError):
        vaezoo.load(f"local-dir:{folder}")
    assert not marker.exists() and "vaezoo_evil_module" not in sys.modules


@pytest.mark.parametrize(
    "name, pattern",
    [
        ("hf-hub:", "the repo id must be 'org/name'"),
        ("hf-hub:noslash", "the repo id must be 'org/name'"),
        ("hf-hub:a/b/c", "the repo id must be 'org/name'"),
        ("hf-hub:org/repo@", "empty revision"),
        ("hf-hub:org/re po", "bad hf-hub spec"),
        ("hf-hub:org/repo--x", "bad hf-hub spec"),
        ("local-dir:", "needs a path"),
        ("local-dir:/does/not/exist", "no such model folder"),
    ],
)
def test_bad_names_give_one_clear_line(name, pattern, capsys):
    with pytest.raises(VaezooError, match=pattern) as info:
        vaezoo.load(name)
    _one_line_error(info)
    if name.startswith("hf-hub:"):
        assert main(["download", name]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err


def test_from_pretrained_refuses_another_class(tmp_path):
    folder = _model().save_pretrained(tmp_path / "tiny")

    class Other(hub.ModelHubMixin, GenerativeModel):
        pass

    with pytest.raises(CheckpointError, match="holds a ConvVAE, not a Other"):
        Other.from_pretrained(str(folder))
    with pytest.raises(CheckpointError, match="neither a model folder"):
        hub.from_pretrained("./no/such/../folder here")


def test_save_needs_a_spec_and_metrics_need_a_protocol(tmp_path):
    model = _model()
    with pytest.raises(ConfigError, match=r"metrics\[0\] lacks protocol"):
        model.save_pretrained(tmp_path / "a", metrics=[{"name": "NLL", "value": 1.0}])
    with pytest.raises(ConfigError, match="must be JSON data"):
        model.save_pretrained(tmp_path / "a", dataset_obj=object())
    model.config = None
    with pytest.raises(ConfigError, match="has no model.config spec"):
        model.save_pretrained(tmp_path / "a")
    assert not (tmp_path / "a").exists()


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------
def test_save_replaces_a_model_folder_only_after_success(tmp_path, monkeypatch):
    first, second = _model(), _model()
    folder = first.save_pretrained(tmp_path / "tiny")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(hub.saving, "model_card", fail)  # the last file written: weights and config are already there
    with pytest.raises(OSError, match="disk full"):
        second.save_pretrained(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"], "no temporary folder is left behind"
    monkeypatch.undo()

    second.save_pretrained(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    _assert_same_outputs(second, vaezoo.load(f"local-dir:{folder}"))


def test_save_refuses_to_replace_other_data(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="refusing to replace .* not a saved vaezoo model"):
        _model().save_pretrained(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="it is a file"):
        _model().save_pretrained(tmp_path / "file")


# ---------------------------------------------------------------------------------------------
# The pretrained table and vaezoo.load(name) from the Hugging Face cache, offline
# ---------------------------------------------------------------------------------------------
def fill_cache(cache: Path, repo_id: str, folder: Path, revision: str = "main") -> Path:
    """Lay out a saved model in the Hugging Face cache, as huggingface_hub does after a download:
    blobs named by their etag, snapshots/<commit>/ with relative symlinks, refs/<revision> -> commit."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        data = path.read_bytes()
        etag = hashlib.sha256(data).hexdigest()
        (storage / "blobs" / etag).write_bytes(data)
        (snapshot / path.name).symlink_to(Path("..", "..", "blobs", etag))
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    return snapshot


def test_pretrained_table_entries():
    registry = get_registry()
    names = registry.names("pretrained")
    expected = {
        "nvae-mnist": ("nvae-mnist", 78.01, "nats"),
        "nvae-cifar10": ("nvae-cifar10", 2.91, "bits/dim"),
        "nvae-celeba64": ("nvae-celeba64", 2.03, "bits/dim"),
        "nvae-celebahq": ("nvae-celebahq256", 0.70, "bits/dim"),
        "nvae-ffhq": ("nvae-ffhq256", 0.69, "bits/dim"),
    }
    assert set(expected) <= set(names)
    for name, (preset, value, unit) in expected.items():
        entry = registry.get("pretrained", name)
        assert entry.plugin == "nvae"  # registered by the NVAE plugin's register_pretrained hook
        meta = entry.target
        assert meta["repo_id"] == f"vaezoo/{preset}" and meta["revision"] == "main" and meta["preset"] == preset
        assert meta["source"] == "converted from the official NVlabs checkpoint"
        # where NVIDIA publishes the checkpoint, and the converter that installs it under this name
        assert meta["converter"] == "nvlabs" and "nvlabs" in registry.names("converter")
        assert meta["checkpoint_url"].startswith("https://drive.google.com/drive/folders/")
        assert meta["checkpoint_page"].startswith("https://github.com/NVlabs/NVAE#")
        assert meta["license"].startswith("NVIDIA Source Code License (non-commercial)")
        (metric,) = meta["metrics"]
        assert (metric["value"], metric["unit"], metric["source"]) == (value, unit, "paper, Table 1")
        assert "1000 samples" in metric["protocol"]
        card = {k: v for k, v in meta.items() if k not in ("repo_id", "revision")}
        assert hub.check_metadata(card) == card  # usable as card metadata as it is (vaezoo push --pretrained)


def _official_checkpoint() -> Path:
    """The tiny official NVAE checkpoint of the fidelity fixtures shipped in the repository."""
    return Path(__file__).resolve().parent / "fixtures" / "nvae_official" / "mnist_small" / "checkpoint.pt"


def test_load_pretrained_name_from_a_prefilled_cache_offline(tmp_path, monkeypatch, capsys):
    # the maintainer path, with a tiny official checkpoint standing in for the CelebA HQ one
    folder = tmp_path / "nvae-celebahq256"
    assert main(["convert", "nvlabs", str(_official_checkpoint()), str(folder)]) == 0
    assert "HierarchicalVAE" in capsys.readouterr().out
    reference = vaezoo.load(f"local-dir:{folder}")
    cache = Path(os.environ["HF_HUB_CACHE"])
    snapshot = fill_cache(cache, "vaezoo/nvae-celebahq256", folder)

    loaded = vaezoo.load("nvae-celebahq")  # HF_HUB_OFFLINE=1: straight from the cache
    assert type(loaded).__name__ == "HierarchicalVAE" and not loaded.training
    stored = load_file(str(snapshot / "model.safetensors"))
    state = loaded.state_dict()
    assert all(torch.equal(state[k], v) for k, v in stored.items())
    _assert_same_outputs(reference, loaded)
    assert main(["download", "nvae-celebahq"]) == 0  # already cached: nothing to fetch, works offline

    # the environment is read at call time: another cache is another cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(VaezooError, match="empty-cache and HF_HUB_OFFLINE is set: run `vaezoo download nvae-celebahq`"):
        vaezoo.load("nvae-celebahq")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    again = vaezoo.load("hf-hub:vaezoo/nvae-celebahq256@main")
    state = again.state_dict()
    assert all(torch.equal(state[k], v) for k, v in stored.items())

    # a partial cache (the weights never arrived) is an error, never a half-loaded model
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(VaezooError, match="not \\(completely\\) in the Hugging Face cache"):
        vaezoo.load("nvae-celebahq")


def test_unknown_pretrained_name_suggests_close_matches(capsys):
    with pytest.raises(RegistryError, match="unknown pretrained 'nvae-celebhq'; did you mean nvae-celebahq"):
        vaezoo.load("nvae-celebhq")
    assert main(["download", "nvae-cifar"]) == 2
    assert "did you mean nvae-cifar10" in capsys.readouterr().err


def test_convert_unknown_source_lists_choices(capsys, tmp_path):
    class Converters:
        @hookimpl
        def register_components(self, register):
            register("converter", lambda checkpoint, out_dir: out_dir, name="test-source")

    with plugin(Converters()):
        assert main(["convert", "tset-source", "ckpt.pt", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert "unknown converter 'tset-source'; did you mean test-source" in err
        assert main(["convert", "test-source", str(tmp_path / "missing.pt"), str(tmp_path / "out")]) == 2
        assert "missing.pt' not found" in capsys.readouterr().err


def test_a_saved_model_names_the_plugins_it_needs(tmp_path, monkeypatch):
    from test_registry_plugins import WidePrior, _WidePriorPlugin

    from vaezoo import plugins

    with plugin(_WidePriorPlugin(), name="wide"):
        torch.manual_seed(0)
        folder = vaezoo.create(
            "test-vae", prior={"class_path": "WidePrior", "init_args": {"scale": 3.0}}
        ).save_pretrained(tmp_path / "wide")
        record = json.loads((folder / "config.json").read_text())["plugins"]
        assert record["WidePrior"] == {"plugin": "wide", "distribution": None, "version": None}
        assert record["ConvVAE"] == {"plugin": "baselines", "distribution": "vaezoo", "version": vaezoo.__version__}
        assert isinstance(vaezoo.load(str(folder)).prior, WidePrior)
    with pytest.raises(
        ConfigError, match=r"needs the plugin 'wide' \(it was registered in code, not installed\) for WidePrior$"
    ):
        vaezoo.load(str(folder))
    config = json.loads((folder / "config.json").read_text())
    config["plugins"]["WidePrior"].update(distribution="vaezoo-wide", version="1.2.0")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ConfigError, match=r"needs plugin vaezoo-wide \(pip install vaezoo-wide==1.2.0\) for WidePrior$"
    ):
        vaezoo.load(str(folder))
    nvae = vaezoo.create("test-nvae").save_pretrained(tmp_path / "nvae")
    monkeypatch.setenv("VAEZOO_BLOCK_PLUGINS", "nvae")
    plugins.reset()
    with pytest.raises(
        ConfigError,
        match=r"needs plugin 'nvae' \(from vaezoo\), which VAEZOO_BLOCK_PLUGINS blocks, for .*DepthwiseResidualCell",
    ):
        vaezoo.load(str(nvae))


# ---------------------------------------------------------------------------------------------
# The loading checks: which folder a name means, where errors say they come from, the card's provenance
# ---------------------------------------------------------------------------------------------
def test_a_run_folder_loads_its_model_and_other_folders_say_what_they_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = _model()
    model.save_pretrained(tmp_path / "run" / "model")
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    loaded = vaezoo.load("run")
    assert loaded.card.location == str((tmp_path / "run" / "model").absolute()) and loaded.card.origin == "local-dir"
    _assert_same_outputs(model, loaded)

    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(CheckpointError) as info:
        vaezoo.load("./unfinished")
    assert _one_line_error(info) == (
        "./unfinished: a run folder without a saved model (fit writes model/ when it ends); vaezoo evaluate and "
        "vaezoo sample read its last checkpoint"
    )
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as info:
        vaezoo.load("./empty")
    assert _one_line_error(info) == (
        "./empty: missing config.json: not a saved model folder (nor a run folder with model/)"
    )
    # a missing org/name is probably a Hub repo: say how those are written; a deeper or existing path is not
    for name, hint in [("acme/tiny", True), ("acme/tiny/more", False), ("run/tiny", False), ("./nothing", False)]:
        with pytest.raises(CheckpointError) as info:
            vaezoo.load(name)
        expected = f"{name}: no such model folder" + (f" (a Hub repo is written hf-hub:{name})" if hint else "")
        assert _one_line_error(info) == expected
    with pytest.raises(CheckpointError) as info:
        load_folder(tmp_path / "missing", "cpu", where="the store's copy")
    assert _one_line_error(info) == "the store's copy: no such model folder"


def test_every_loading_error_starts_with_where_the_model_came_from(tmp_path):
    """Each check names the model as the caller gave it: a broken config, a weights file that fails its hash, a
    plugin the config needs, weights that do not fit."""
    breakers = {
        "config": (_break_json, "config.json is not valid JSON ("),
        "hash": (_break_truncated, "model.safetensors has "),
        "plugins": (
            lambda f: _edit_config(f, lambda c: c["plugins"].update(Ghost={"plugin": "ghost", "distribution": None})),
            "needs the plugin 'ghost'",
        ),
        "keys": (
            lambda f: _rewrite_weights(f, {"decoder.0.bias": torch.zeros(1)}),
            "model.safetensors does not fit the model: size mismatch for decoder.0.bias",
        ),
    }
    for case, (breaker, detail) in breakers.items():
        folder = _model().save_pretrained(tmp_path / case)
        breaker(folder)
        for name, where in [(f"local-dir:{folder}", f"local-dir:{folder}"), (str(folder), str(folder))]:
            with pytest.raises(VaezooError) as info:
                vaezoo.load(name)
            assert _one_line_error(info).startswith(f"{where}: {detail}"), (case, str(info.value))
        with pytest.raises(VaezooError) as info:
            hub.from_pretrained(str(folder))
        assert _one_line_error(info).startswith(f"{folder}: {detail}"), case


def _edit_config(folder: Path, change) -> None:
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_weights_of_other_shapes_are_counted_and_unreadable_weights_say_why(tmp_path):
    folder = _model().save_pretrained(tmp_path / "tiny")
    tensors = load_file(str(folder / "model.safetensors"))
    _rewrite_weights(folder, {**tensors, "decoder.0.bias": torch.zeros(5), "decoder.0.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError) as info:
        vaezoo.load(str(folder))
    message = _one_line_error(info)
    assert message.startswith(f"{folder}: model.safetensors does not fit the model: size mismatch for decoder.0.")
    assert message.endswith(" (and 1 more)") and ". (and" not in message, message
    _rewrite_weights(folder, {**tensors, "decoder.0.bias": torch.zeros(5)})
    with pytest.raises(CheckpointError) as info:
        vaezoo.load(str(folder))
    message = _one_line_error(info)
    assert "more)" not in message and not message.endswith(".") and message.count("size mismatch") == 1
    _break_header(folder)
    with pytest.raises(CheckpointError) as info:
        vaezoo.load(str(folder))
    message = _one_line_error(info)
    detail = message.split("is not a valid safetensors file (", 1)[1]
    assert detail.endswith(")") and len(detail) > 10 and detail != "None)", message


def test_the_card_says_where_a_model_was_loaded_from(tmp_path, monkeypatch):
    folder = _model().save_pretrained(tmp_path / "tiny")
    card = load_folder(folder, "cpu", where="here").card
    assert (card.origin, card.location, card.name) == ("local-dir", str(folder), None)
    card = load_folder(folder, "cpu", where="here", origin="store", location="elsewhere", name="tiny-vae").card
    assert (card.origin, card.location, card.name) == ("store", "elsewhere", "tiny-vae")
    card = hub.from_pretrained(str(folder)).card
    assert (card.origin, card.location) == ("local-dir", str(folder.absolute()))
    monkeypatch.chdir(tmp_path)  # a relative folder is recorded by its absolute path
    assert hub.from_pretrained("tiny").card.location == str(folder.absolute())
    (tmp_path / "notes").mkdir()
    with pytest.raises(CheckpointError) as info:
        hub.from_pretrained("notes")
    assert _one_line_error(info).startswith("notes: missing config.json")
    card = vaezoo.load(f"local-dir:{folder}").card
    assert (card.origin, card.location) == ("local-dir", str(folder.absolute()))


def test_from_pretrained_passes_names_device_and_revision_on(tmp_path, monkeypatch):
    """A prefixed name, a pretrained name or a Hub repo id ``org/name`` goes to :func:`vaezoo.load` with the device
    and the revision; a folder is read in place."""
    from vaezoo.hub import loading
    from vaezoo.hub.names import pretrained_names

    calls = []

    def spy(name, device="cpu", revision=None):
        calls.append((name, device, revision))
        return torch.nn.Linear(1, 1)

    monkeypatch.setattr(loading, "load", spy)
    hub.from_pretrained("hf-hub:acme/tiny", revision="v1", device="meta")
    hub.from_pretrained("local-dir:./somewhere", device="meta")
    hub.from_pretrained("acme/tiny", revision="v2", device="meta")
    name = sorted(pretrained_names())[0]
    hub.from_pretrained(name, revision="v3", device="meta")
    assert calls == [
        ("hf-hub:acme/tiny", "meta", "v1"),
        ("local-dir:./somewhere", "meta", None),
        ("hf-hub:acme/tiny", "meta", "v2"),
        (name, "meta", "v3"),
    ]
    with pytest.raises(CheckpointError, match="neither a model folder, a Hub repo id"):
        hub.from_pretrained("not a/name/at all")
    assert len(calls) == 4


def test_a_plugin_that_failed_to_load_and_several_missing_plugins_are_named_at_once(tmp_path):
    from test_registry_plugins import _WidePriorPlugin

    class _Failing:
        @hookimpl
        def register_components(self, register):
            raise RuntimeError("broken wheel")

    with plugin(_WidePriorPlugin(), name="wide"):
        torch.manual_seed(0)
        folder = vaezoo.create("test-vae", prior={"class_path": "WidePrior"}).save_pretrained(tmp_path / "wide")
    ghost = {"plugin": "ghost", "distribution": "vaezoo-ghost", "version": None}
    _edit_config(folder, lambda c: c["plugins"].update(GhostA=ghost, GhostB=ghost))
    with plugin(_Failing(), name="wide"):
        with pytest.raises(ConfigError) as info:
            vaezoo.load(str(folder))
    message = _one_line_error(info)
    assert message.startswith(f"{folder}: needs plugin 'wide', which failed to load (") and "broken wheel" in message
    assert message.endswith("), for WidePrior; plugin vaezoo-ghost (pip install vaezoo-ghost) for GhostA, GhostB")
