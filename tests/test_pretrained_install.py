"""Installing official checkpoints under a pretrained name, the resolution order of pretrained names, provenance
(``model.card``), and failing fast with what to do when a name is found nowhere.

A test plugin registers a preset built from the ``mnist_small`` official fixture's arguments and pretrained
entries that use it. Offline throughout: the conftest fixture sets HF_HUB_OFFLINE=1 and temporary HF_HOME and
VAEZOO_HOME; the Hub cases use a server on 127.0.0.1 (pytest-httpserver), a closed port and a silent socket.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT
from model_outputs import model_outputs
from PIL import Image
from vaezoo_nvae.convert import convert_nvlabs_checkpoint, load_official_checkpoint
from vaezoo_nvae.presets import spec_from_official_args
from werkzeug import Request, Response

import vaezoo
from vaezoo import hookimpl, hub
from vaezoo.cli import main
from vaezoo.errors import RegistryError, VaezooError
from vaezoo.plugins import plugin

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "nvae_official"
MNIST_CKPT = FIXTURES / "mnist_small" / "checkpoint.pt"
CIFAR_CKPT = FIXTURES / "cifar_small" / "checkpoint.pt"
PRESET_SPEC = spec_from_official_args(load_official_checkpoint(MNIST_CKPT)["args"])
URL, PAGE = "https://example.org/nvae/mnist_small/checkpoint.pt", "https://example.org/nvae#checkpoints"
LICENSE = "NVIDIA Source Code License (non-commercial); converted weights keep it"
METRICS = [{"name": "NLL", "value": 78.0, "unit": "nats", "split": "test", "protocol": "IW, k=1000, test set"}]


def _entry(repo_id: str) -> dict:
    return dict(
        repo_id=repo_id, revision="main", converter="nvlabs", checkpoint_url=URL, checkpoint_page=PAGE,
        preset="fixture-mnist-small", description="the mnist_small fixture", source="official fixture",
        license=LICENSE, license_link="https://example.org/license", dataset="MNIST", metrics=METRICS,
    )  # fmt: skip


class _FixtureTable:
    """Presets, pretrained entries and a converter without an architecture check, as a third party would add."""

    @hookimpl
    def register_presets(self, register):
        register("fixture-mnist-small", lambda **overrides: json.loads(json.dumps(PRESET_SPEC)), description="fixture")

    @hookimpl
    def register_pretrained(self, register):
        register("fixture-nvae", **_entry("acme/fixture-nvae"))
        register("fixture-gated", **_entry("acme/fixture-gated"))

    @hookimpl
    def register_components(self, register):
        # converts like nvlabs but registers no checkpoint_spec: the converted folder's spec is what is checked
        register("converter", lambda c, o: str(convert_nvlabs_checkpoint(c, o)), name="plain-nvlabs")


@pytest.fixture
def table():
    with plugin(_FixtureTable(), name="fixture-table"):
        yield


def _store_listing() -> list[str]:
    store = hub.store_dir()
    return sorted(p.name for p in store.iterdir()) if store.is_dir() else []


def test_install_then_load_by_name_offline(table, tmp_path, capsys):
    assert main(["convert", "nvlabs", str(MNIST_CKPT), "--pretrained", "fixture-nvae"]) == 0
    assert 'vaezoo.load("fixture-nvae") now loads it offline' in capsys.readouterr().out
    folder = hub.store_path("fixture-nvae")
    assert folder == Path(os.environ["VAEZOO_HOME"]) / "models" / "fixture-nvae"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert _store_listing() == ["fixture-nvae"], "no staging folder is left behind"
    metadata = json.loads((folder / "config.json").read_text())["metadata"]
    assert (
        metadata["license"] == LICENSE and metadata["metrics"] == METRICS and metadata["pretrained"] == "fixture-nvae"
    )
    assert metadata["converted_from"].startswith("NVlabs/NVAE train.py checkpoint checkpoint.pt")
    assert metadata["checkpoint_sha256"] == hashlib.sha256(MNIST_CKPT.read_bytes()).hexdigest()  # the very file
    assert "IW, k=1000, test set" in (folder / "README.md").read_text()

    assert main(["convert", "nvlabs", str(MNIST_CKPT), str(tmp_path / "plain")]) == 0  # the plain conversion
    reference = vaezoo.load(f"local-dir:{tmp_path / 'plain'}")
    loaded = vaezoo.load("fixture-nvae")  # HF_HUB_OFFLINE=1, empty HF cache: from the store
    for a, b in zip(model_outputs(reference), model_outputs(loaded), strict=True):
        assert torch.equal(a, b)
    card = loaded.card
    assert (card.name, card.preset, card.origin, card.location) == (
        "fixture-nvae",
        "fixture-mnist-small",
        "store",
        str(folder),
    )
    assert card.license == LICENSE and card.metrics[0]["protocol"] == "IW, k=1000, test set"
    assert card.loaded_from == f"store:{folder}" and loaded.card_metadata == metadata
    assert reference.card.origin == "local-dir" and reference.card.location == str(tmp_path / "plain")

    # the commands take the name too, offline
    assert main(["sample", "fixture-nvae", "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert Image.open(tmp_path / "s.png").size[0] > 0
    assert main(["list", "pretrained", "fixture-*"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"fixture-nvae\s.*installed", listing) and re.search(r"fixture-gated\s.*nowhere", listing)

    # installing again replaces the folder in one piece; so does any converter whose output matches the preset
    assert main(["convert", "plain-nvlabs", str(MNIST_CKPT), "--pretrained", "fixture-nvae"]) == 0
    assert _store_listing() == ["fixture-nvae"]
    for a, b in zip(model_outputs(reference), model_outputs(vaezoo.load("fixture-nvae")), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("source", ["nvlabs", "plain-nvlabs"])
def test_another_architecture_is_refused_naming_the_arguments(table, source, capsys):
    assert main(["convert", source, str(CIFAR_CKPT), "--pretrained", "fixture-nvae"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {CIFAR_CKPT} does not match pretrained fixture-nvae")
    assert "(preset fixture-mnist-small): " in err
    if source == "nvlabs":  # the converter names the official arguments, checked before converting
        for difference in ("dataset [3,32,32] != [1,32,32]", "num_channels_enc 3 != 4", "num_groups_per_scale 4 != 2"):
            assert difference in err
    else:  # a converter without argument names: the vaezoo spec paths, checked on the converted folder
        assert "encoder_channels 3 != 4" in err and "groups_per_scale 4 != 2" in err
    assert _store_listing() == [], "nothing is installed, nothing is left behind"


def test_unknown_names_and_sources_fail_at_once(table, capsys):
    with pytest.raises(RegistryError, match="unknown pretrained 'fixture-nvea'; did you mean fixture-nvae"):
        vaezoo.load("fixture-nvea")
    assert main(["convert", "nvlabs", str(MNIST_CKPT), "--pretrained", "fixture-nvea"]) == 2
    assert "did you mean fixture-nvae" in capsys.readouterr().err
    assert main(["convert", "nvlabs", str(MNIST_CKPT)]) == 2
    assert "either an OUT folder or --pretrained NAME" in capsys.readouterr().err


def _load_error(name: str) -> tuple[str, float]:
    started = time.perf_counter()
    with pytest.raises(VaezooError) as info:
        vaezoo.load(name)
    seconds = time.perf_counter() - started
    message = str(info.value)
    assert "\n" not in message
    return message, seconds


def _assert_install_hint(message: str, name: str) -> None:
    assert f"{name} is not installed in {hub.store_path(name)} either" in message
    assert f"the official checkpoint is published at {URL} (see {PAGE})" in message
    assert message.endswith(f"`vaezoo convert nvlabs CHECKPOINT.pt --pretrained {name}`")


def test_found_nowhere_offline_fails_fast_with_what_to_do(table, capsys):
    message, seconds = _load_error("fixture-nvae")
    assert seconds < 5
    assert "HF_HUB_OFFLINE is set: run `vaezoo download fixture-nvae` with network access first" in message
    _assert_install_hint(message, "fixture-nvae")
    assert main(["evaluate", "fixture-nvae", "--data", "BundledMNIST"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"published at {URL}" in err


class _Hub:
    """The answers of the Hub to HEAD/GET .../resolve/...: acme/fixture-gated is gated, everything else missing."""

    def __call__(self, request: Request) -> Response:
        if request.path.startswith("/acme/fixture-gated/"):
            headers = {
                "X-Error-Code": "GatedRepo",
                "X-Error-Message": "Access to model acme/fixture-gated is restricted",
            }
            return Response("", 403, headers)
        return Response("", 404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_not_found_gated_and_no_network_are_three_messages(table, httpserver, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    httpserver.expect_request(re.compile(".*")).respond_with_handler(_Hub())
    endpoint = httpserver.url_for("/").rstrip("/")
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    messages = {}
    for case, name in (("not found", "fixture-nvae"), ("gated", "fixture-gated")):
        messages[case], seconds = _load_error(name)
        assert seconds < 5, case
        _assert_install_hint(messages[case], name)
    assert f"repository acme/fixture-nvae not found on {endpoint}" in messages["not found"]
    assert f"acme/fixture-gated is gated on {endpoint}" in messages["gated"]
    assert "accept its terms and set HF_TOKEN" in messages["gated"]

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")  # nothing listens: no network
    messages["no network"], seconds = _load_error("fixture-nvae")
    assert seconds < 5
    assert "cannot reach the Hub at http://127.0.0.1" in messages["no network"]
    _assert_install_hint(messages["no network"], "fixture-nvae")

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        messages["silent"], seconds = _load_error("fixture-nvae")
    assert seconds < 5
    assert "did not answer within 3 s" in messages["silent"]
    _assert_install_hint(messages["silent"], "fixture-nvae")
    heads = {m.split(";")[0] for m in messages.values()}
    assert len(heads) == len(messages), "each failure has its own message"


def test_resolution_order_store_then_cache(table, tmp_path):
    from test_hub import fill_cache

    cached = tmp_path / "cached"
    convert_nvlabs_checkpoint(MNIST_CKPT, cached)
    with torch.no_grad():  # a different model in the cache: outputs tell which one was loaded
        model = vaezoo.load(f"local-dir:{cached}")
        for p in model.parameters():
            p.add_(0.01)
    hub.save_pretrained(model, cached)
    snapshot = fill_cache(Path(os.environ["HF_HUB_CACHE"]), "acme/fixture-nvae", cached)

    from_cache = vaezoo.load("fixture-nvae")
    assert from_cache.card.origin == "hf-cache" and from_cache.card.location == f"acme/fixture-nvae@{snapshot.name}"
    assert str(hub.locate("fixture-nvae")).startswith("cached (acme/fixture-nvae@")

    assert main(["convert", "nvlabs", str(MNIST_CKPT), "--pretrained", "fixture-nvae"]) == 0
    from_store = vaezoo.load("fixture-nvae")
    assert from_store.card.origin == "store" and hub.locate("fixture-nvae").kind == "installed"
    assert not torch.equal(model_outputs(from_store)[0], model_outputs(from_cache)[0])
    for a, b in zip(
        model_outputs(from_store),
        model_outputs(vaezoo.load(f"local-dir:{hub.store_path('fixture-nvae')}")),
        strict=True,
    ):
        assert torch.equal(a, b)
