"""``vaezoo data download NAME ROOT`` and the data modules' ``download: true``, against a local HTTP server.

The server (http.server on 127.0.0.1, an ephemeral port) serves small archives in the real formats, built here: MNIST's
four gzipped IDX files and CIFAR-10's cifar-10-python.tar.gz (pickled batches and batches.meta), a few images each.
``VAEZOO_DATA_MIRROR`` points the download at it and the expected md5 is patched to the md5 of what is served,
computed here with hashlib; the data sets then load the exact pixels and labels served. Nothing reaches the internet.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import os
import pickle
import socket
import struct
import tarfile
import threading
from dataclasses import replace

import numpy as np
import pytest
import torch
from vaezoo_datasets import CIFAR10, MNIST

from vaezoo.cli import main
from vaezoo.errors import ConfigError

MNIST_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """(served folder, request paths): a local server that VAEZOO_DATA_MIRROR points at."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, format, *args):  # every request is logged through here: count it, print nothing
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("VAEZOO_DATA_MIRROR", f"http://127.0.0.1:{server.server_address[1]}/")
    monkeypatch.setenv("VAEZOO_PROGRESS", "0")
    try:
        yield served, requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _idx(array: np.ndarray) -> bytes:
    # the IDX format: 0x0000, type 0x08 (uint8), the number of dimensions, big-endian sizes, the values
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _serve_mnist(served, monkeypatch) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    arrays = {
        "train_images": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, 5, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, 3, dtype=np.uint8),
    }
    md5 = {}
    for key, array in arrays.items():
        data = gzip.compress(_idx(array))
        (served / f"{MNIST_NAMES[key]}.gz").write_bytes(data)
        md5[f"{MNIST_NAMES[key]}.gz"] = hashlib.md5(data).hexdigest()
    assert sorted(a.filename for a in MNIST.archives) == sorted(md5)
    monkeypatch.setattr(MNIST, "archives", tuple(replace(a, md5=md5[a.filename]) for a in MNIST.archives))
    return arrays


def _serve_cifar(served, monkeypatch=None) -> dict[str, np.ndarray]:
    """cifar-10-python.tar.gz: data_batch_1..5 (2 images each), test_batch (3), batches.meta; md5 patched when
    ``monkeypatch`` is given. Returns the served train and test rows and labels."""
    rng = np.random.default_rng(11)
    batches = {f"data_batch_{i}": 2 for i in range(1, 6)} | {"test_batch": 3}
    buffer = io.BytesIO()
    served_rows = {}
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:

        def add(name: str, content: dict) -> None:
            data = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for name, count in batches.items():
            rows = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
            labels = rng.integers(0, 10, count).tolist()
            served_rows[name] = (rows, labels)
            add(
                name,
                {b"batch_label": name.encode(), b"labels": labels, b"data": rows, b"filenames": [b"x.png"] * count},
            )
        add("batches.meta", {b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": 2, b"num_vis": 3072})
    archive = buffer.getvalue()
    (served / "cifar-10-python.tar.gz").write_bytes(archive)
    if monkeypatch is not None:
        monkeypatch.setattr(CIFAR10, "archives", (replace(CIFAR10.archives[0], md5=hashlib.md5(archive).hexdigest()),))
    train = [served_rows[f"data_batch_{i}"] for i in range(1, 6)]
    return {
        "train_images": np.concatenate([r for r, _ in train]),
        "train_labels": np.array(sum((labels for _, labels in train), [])),
        "test_images": served_rows["test_batch"][0],
        "test_labels": np.array(served_rows["test_batch"][1]),
        "md5": hashlib.md5(archive).hexdigest(),
    }


def _images_and_labels(dataset) -> tuple[torch.Tensor, list[int]]:
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), [y for _, y in items]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err.strip()


def test_mnist_download_loads_the_served_digits_and_runs_once(mirror, tmp_path, monkeypatch, capsys):
    served, requests = mirror
    arrays = _serve_mnist(served, monkeypatch)
    root = tmp_path / "data"
    assert main(["data", "download", "mnist", str(root)]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # no bar off a terminal (torchvision's own bar would write to stderr)
    assert out.startswith(f"MNIST: 4 files (0.0 MB, md5 verified) -> {root / 'MNIST' / 'raw'} in ")
    data = MNIST(root=str(root), pad=0, binarize=False)
    for split, dataset in (("train", data.train_dataset()), ("test", data.test_dataset())):
        images, labels = _images_and_labels(dataset)
        assert torch.equal(images, torch.from_numpy(arrays[f"{split}_images"]).unsqueeze(1).float() / 255)
        assert labels == arrays[f"{split}_labels"].tolist()
    # torchvision's layout: the .gz files and their decompressed copies; nothing else under root
    assert sorted(p.name for p in root.iterdir()) == ["MNIST"]
    raw = sorted(p.name for p in (root / "MNIST" / "raw").iterdir())
    assert raw == sorted([*MNIST_NAMES.values(), *(f"{n}.gz" for n in MNIST_NAMES.values())])
    for key, name in MNIST_NAMES.items():
        assert (root / "MNIST" / "raw" / name).read_bytes() == _idx(arrays[key])

    requests.clear()
    assert main(["data", "download", "MNIST", str(root)]) == 0
    assert capsys.readouterr().out.startswith(f"MNIST: already in {root}, nothing downloaded: MNIST (5 train / 3 test")
    assert requests == []


def test_cifar10_download_true_loads_the_served_batches(mirror, tmp_path, monkeypatch):
    served, _ = mirror
    expected = _serve_cifar(served, monkeypatch)
    root = tmp_path / "cifar"
    data = CIFAR10(root=str(root), download=True)
    for split, dataset in (("train", data.train_dataset()), ("test", data.test_dataset())):
        images, labels = _images_and_labels(dataset)
        rows = torch.from_numpy(expected[f"{split}_images"]).reshape(-1, 3, 32, 32)  # R, G, B planes, row-major
        assert torch.equal(images, rows.float() / 255)
        assert labels == expected[f"{split}_labels"].tolist()
    # the tarball is deleted once unpacked; no staging folder is left
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]
    assert sorted(p.name for p in (root / "cifar-10-batches-py").iterdir()) == sorted(
        ["batches.meta", "test_batch", *(f"data_batch_{i}" for i in range(1, 6))]
    )


def test_a_wrong_checksum_is_one_line_and_leaves_nothing(mirror, tmp_path, capsys):
    served, _ = mirror
    md5 = _serve_cifar(served)["md5"]  # the official md5 stays expected: the small archive does not match it
    official = CIFAR10.archives[0].md5
    root = tmp_path / "new" / "cifar"
    assert main(["data", "download", "CIFAR10", str(root)]) == 2
    err = _one_error_line(capsys)
    assert err.startswith(
        f"error: cannot download cifar-10-python.tar.gz of CIFAR10: {os.environ['VAEZOO_DATA_MIRROR']}"
        f"cifar-10-python.tar.gz: md5 {md5}, "
        f"expected {official} (a corrupt or changed file). Nothing was written to {root}; get the data yourself. "
        "Expected the CIFAR-10 python version"
    ), err
    assert not (tmp_path / "new").exists()  # the folders it made are gone again

    existing = tmp_path / "existing"
    (existing / "notes.txt").parent.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=f"md5 {md5}, expected {official}"):
        CIFAR10(root=str(existing), download=True)
    assert [p.name for p in existing.iterdir()] == ["notes.txt"]


def test_no_server_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    with socket.socket() as probe:  # a port that was free a moment ago, closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("VAEZOO_DATA_MIRROR", f"http://127.0.0.1:{port}")
    root = tmp_path / "mnist"
    assert main(["data", "download", "MNIST", str(root)]) == 2
    err = _one_error_line(capsys)
    assert err.startswith(
        f"error: cannot download {MNIST.archives[0].filename} of MNIST: "
        f"http://127.0.0.1:{port}/{MNIST.archives[0].filename}: Connection refused. Nothing was written to {root}"
    ), err
    assert not root.exists()


def test_an_interrupted_download_leaves_nothing(mirror, tmp_path, monkeypatch, capsys):
    import torchvision.datasets.utils as tv_utils

    served, _ = mirror
    _serve_cifar(served, monkeypatch)
    extract = tv_utils.extract_archive

    def interrupted(from_path, to_path, remove_finished=False):
        extract(from_path, to_path)  # the batches are all there, half-way through the command
        raise KeyboardInterrupt

    monkeypatch.setattr(tv_utils, "extract_archive", interrupted)
    root = tmp_path / "data"
    root.mkdir()
    assert main(["data", "download", "CIFAR10", str(root)]) == 130
    assert list(root.iterdir()) == []


def test_an_archive_without_the_expected_layout_is_refused(mirror, tmp_path, monkeypatch, capsys):
    served, _ = mirror
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:  # a verified tarball of something else
        info = tarfile.TarInfo("cifar-10-batches-py/readme.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    (served / "cifar-10-python.tar.gz").write_bytes(buffer.getvalue())
    md5 = hashlib.md5(buffer.getvalue()).hexdigest()
    monkeypatch.setattr(CIFAR10, "archives", (replace(CIFAR10.archives[0], md5=md5),))
    root = tmp_path / "cifar"
    assert main(["data", "download", "CIFAR10", str(root)]) == 2
    assert _one_error_line(capsys).startswith(
        "error: the archives of CIFAR10 do not hold what it reads (CIFAR-10 not found under "
    )
    assert not root.exists()


def test_data_sets_without_an_archive_and_folders_in_the_way(tmp_path, capsys):
    root = tmp_path / "faces"
    assert main(["data", "download", "CelebAHQ256", str(root)]) == 2
    assert _one_error_line(capsys).startswith(
        "error: CelebAHQ256 has no public archive that vaezoo can download. Expected a folder of CelebA-HQ images"
    )
    assert main(["data", "download", "celeba64", str(root)]) == 2
    assert "CelebA64 has no public archive" in _one_error_line(capsys)
    assert main(["data", "download", "MNSIT", str(root)]) == 2
    assert "unknown data set 'MNSIT'; did you mean MNIST" in _one_error_line(capsys)
    assert not root.exists()

    partial = tmp_path / "cifar" / "cifar-10-batches-py"
    partial.mkdir(parents=True)
    (partial / "data_batch_1").write_bytes(b"left over")
    assert main(["data", "download", "CIFAR10", str(tmp_path / "cifar")]) == 2
    assert _one_error_line(capsys).startswith(f"error: {partial} exists but CIFAR10 cannot read it (CIFAR-10 not found")
    assert [p.name for p in partial.iterdir()] == ["data_batch_1"]
