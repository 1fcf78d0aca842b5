"""The paper's data sets and ``vaezoo data prepare``, on small data written here in the real formats.

Layout-sensitive files (IDX, CIFAR rows, ImageNet 32 rows, 16-bit PNG, official LMDB) are written by
hand in this file rather than by ``vaezoo.data.synthetic``, so that reader and writer cannot share a
mistake; MNIST is also cross-checked against torchvision's own reader.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import zlib
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from vaezoo_datasets import CIFAR10, FFHQ256, MNIST, CelebA64, CelebAHQ256, ImageFolder, ImageNet32
from vaezoo_datasets.testing import write_celeba, write_image_files

import vaezoo
from vaezoo.cli import main
from vaezoo.data.prepare import PrepareOptions, prepare
from vaezoo.data.splits import resolve_test_count
from vaezoo.data.transforms import CELEBA64_CROP
from vaezoo.errors import ConfigError


# -- writers of the real formats ----------------------------------------------------------------
def idx_file(path: Path, array: np.ndarray, gz: bool = False) -> None:
    data = (
        struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
        + b"".join(struct.pack(">I", d) for d in array.shape)
        + array.astype(np.uint8).tobytes()
    )
    path.write_bytes(gzip.compress(data) if gz else data)


def cifar_row(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One row of a CIFAR/ImageNet-32 batch: the 1024 red values, then green, then blue (row-major)."""
    return np.concatenate([r.ravel(), g.ravel(), b.ravel()]).astype(np.uint8)


def pickle_batch(path: Path, rows: np.ndarray, labels: list[int]) -> None:
    path.write_bytes(pickle.dumps({b"batch_label": b"x", b"data": rows, b"labels": labels}, protocol=2))


def png16(path: Path, array: np.ndarray) -> None:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA), written by hand: Pillow cannot write 16-bit colour."""
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = b"".join(b"\x00" + np.ascontiguousarray(array[y]).astype(">u2").tobytes() for y in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def first_items(dataset, n=None):
    n = len(dataset) if n is None else n
    return torch.stack([dataset[i][0] for i in range(n)])


# -- MNIST --------------------------------------------------------------------------------------
@pytest.fixture
def mnist_root(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (12, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, 12),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, 6),
    }
    for name, array in arrays.items():
        idx_file(raw / name, array)
    return tmp_path


def test_mnist_matches_torchvision_and_pads_to_32(mnist_root):
    import torchvision

    reference = torchvision.datasets.MNIST(str(mnist_root), train=True, download=False)
    plain = MNIST(str(mnist_root), pad=0, binarize=False).train_dataset()
    assert len(plain) == len(reference) == 12
    assert torch.equal(first_items(plain), reference.data.unsqueeze(1).float() / 255)
    assert [plain[i][1] for i in range(12)] == reference.targets.tolist()

    data = MNIST(str(mnist_root))
    assert data.image_shape == (1, 32, 32)
    padded = first_items(data.train_dataset())
    assert padded.shape == (12, 1, 32, 32)
    assert torch.equal(padded[:, :, 2:30, 2:30], first_items(plain))
    assert padded[:, :, :2].abs().sum() == 0 and padded[:, :, :, 30:].abs().sum() == 0


def test_mnist_reads_gzipped_files(mnist_root, tmp_path_factory):
    gz_root = tmp_path_factory.mktemp("gz")
    (gz_root / "MNIST" / "raw").mkdir(parents=True)
    for path in (mnist_root / "MNIST" / "raw").iterdir():
        (gz_root / "MNIST" / "raw" / f"{path.name}.gz").write_bytes(gzip.compress(path.read_bytes()))
    a, b = MNIST(str(mnist_root), binarize=False), MNIST(str(gz_root), binarize=False)
    assert torch.equal(first_items(a.test_dataset()), first_items(b.test_dataset()))


def test_mnist_binarisation_is_seeded(mnist_root):
    data = MNIST(str(mnist_root))
    batch = first_items(data.train_dataset())
    first = data.train_transform(batch, torch.Generator().manual_seed(5))
    again = data.train_transform(batch, torch.Generator().manual_seed(5))
    other = data.train_transform(batch, torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert set(first.unique().tolist()) <= {0.0, 1.0}

    test = first_items(data.test_dataset())
    assert set(test.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(test, first_items(MNIST(str(mnist_root)).test_dataset()))  # a fixed draw
    assert not torch.equal(test, first_items(MNIST(str(mnist_root), test_binarization_seed=1).test_dataset()))


def test_mnist_missing_and_corrupt_files(tmp_path, mnist_root):
    with pytest.raises(ConfigError) as excinfo:
        MNIST(str(tmp_path / "nowhere"))
    message = one_line_error(excinfo)
    assert "MNIST not found" in message and "MNIST/raw" in message and "train-images-idx3-ubyte" in message

    bad = mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x03" + bad.read_bytes()[4:])  # float magic
    with pytest.raises(ConfigError, match="t10k-images-idx3-ubyte: not a uint8 IDX file"):
        MNIST(str(mnist_root)).test_dataset()


# -- CIFAR-10 -----------------------------------------------------------------------------------
@pytest.fixture
def cifar_root(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    ramp = np.arange(32 * 32).reshape(32, 32) % 256
    for index in range(1, 6):
        rows = np.stack([cifar_row(ramp, np.full((32, 32), 10 * index), np.full((32, 32), 200)) for _ in range(4)])
        pickle_batch(folder / f"data_batch_{index}", rows, [index, index, 0, 9])
    pickle_batch(folder / "test_batch", np.stack([cifar_row(ramp.T, ramp, ramp) for _ in range(3)]), [1, 2, 3])
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"] * 10}, protocol=2))
    return tmp_path


def test_cifar10_reads_python_batches(cifar_root):
    data = CIFAR10(str(cifar_root))
    train, test = data.train_dataset(), data.test_dataset()
    assert (len(train), len(test)) == (20, 3)
    image, label = train[4]  # first image of data_batch_2
    assert image.shape == (3, 32, 32) and label == 2
    ramp = torch.arange(32 * 32).reshape(32, 32) % 256
    assert torch.equal(image[0] * 255, ramp.float())  # the red plane comes first, row-major
    assert torch.all(image[1] == 20 / 255) and torch.all(image[2] == 200 / 255)
    assert torch.equal(test[0][0][0] * 255, ramp.T.float()) and test[2][1] == 3


def test_cifar10_flips_are_seeded_mirrors(cifar_root):
    data = CIFAR10(str(cifar_root))
    batch = first_items(data.train_dataset())
    out = data.train_transform(batch, torch.Generator().manual_seed(3))
    assert torch.equal(out, data.train_transform(batch, torch.Generator().manual_seed(3)))
    flipped = [bool(torch.equal(o, x.flip(-1))) for o, x in zip(out, batch, strict=True)]
    kept = [bool(torch.equal(o, x)) for o, x in zip(out, batch, strict=True)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)
    assert torch.equal(CIFAR10(str(cifar_root), flip=False).train_transform(batch, torch.Generator()), batch)


def test_cifar10_missing_data_and_hostile_pickle(cifar_root, tmp_path_factory):
    with pytest.raises(ConfigError) as excinfo:
        CIFAR10(str(tmp_path_factory.mktemp("empty")))
    assert "cifar-10-batches-py" in one_line_error(excinfo) and "download" in str(excinfo.value)

    marker = cifar_root / "pwned"

    class Hostile:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    (cifar_root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({"data": Hostile()}))
    with pytest.raises(ConfigError, match="refusing to load posix.mkdir"):
        CIFAR10(str(cifar_root)).test_dataset()
    assert not marker.exists()


# -- split sizes and seeded split files -----------------------------------------------------------
def test_split_sizes_follow_the_official_counts_and_adapt():
    assert resolve_test_count(30000, None, (27000, 3000)) == 3000
    assert resolve_test_count(70000, None, (63000, 7000)) == 7000
    assert resolve_test_count(162770 + 19867, None, (162770, 19867)) == 19867
    assert resolve_test_count(100, None, (63000, 7000)) == 10  # the official fraction for small data
    assert resolve_test_count(5, None, (27000, 3000)) == 1  # never an empty split
    assert resolve_test_count(100, 0.25) == 25 and resolve_test_count(100, 7) == 7
    for bad in (0, 100, 1.5, 0.0, "x"):
        with pytest.raises(ConfigError, match="data.test_size"):
            resolve_test_count(100, bad)


def test_folder_split_files_are_written_once_and_reused(tmp_path):
    write_image_files(tmp_path, 20, (8, 8))
    data = CelebAHQ256(str(tmp_path), image_size=8, test_size=5, split_seed=3)
    train, test = data.train_dataset(), data.test_dataset()
    assert (len(train), len(test)) == (15, 5)
    written = {name: (tmp_path / name).read_text() for name in ("train.txt", "test.txt", "split.json")}
    assert sorted(written["train.txt"].split() + written["test.txt"].split()) == [f"{i:06d}.png" for i in range(20)]
    assert json.loads(written["split.json"])["seed"] == 3
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporaries

    again = CelebAHQ256(str(tmp_path), image_size=8, test_size=5, split_seed=3)
    assert again.test_dataset().names == test.names
    assert {name: (tmp_path / name).read_text() for name in written} == written

    # the same seed elsewhere gives the same split; another seed on these files is refused
    other = tmp_path / "copy"
    write_image_files(other, 20, (8, 8))
    assert CelebAHQ256(str(other), image_size=8, test_size=5, split_seed=3).test_dataset().names == test.names
    with pytest.raises(ConfigError, match="split_seed 3 and 5 test images, not split_seed 4"):
        CelebAHQ256(str(tmp_path), image_size=8, test_size=5, split_seed=4).test_dataset()
    # an image added after the split is not silently ignored
    write_image_files(tmp_path, 1, (8, 8), start=99)
    with pytest.raises(ConfigError, match="1 images in neither train.txt nor test.txt"):
        CelebAHQ256(str(tmp_path), image_size=8, test_size=5, split_seed=3).test_dataset()


def test_published_split_lists_are_used_as_given(tmp_path):
    write_image_files(tmp_path / "img", 6, (8, 8))
    (tmp_path / "img" / "train.txt").write_text("# a published split\n000000.png\n000001.png\n000002.png\n")
    (tmp_path / "img" / "test.txt").write_text("000005.png\n")
    data = FFHQ256(str(tmp_path / "img"), image_size=8)
    assert data.train_dataset().names == ["000000.png", "000001.png", "000002.png"]
    assert data.test_dataset().names == ["000005.png"]
    (tmp_path / "img" / "test.txt").write_text("missing.png\n")
    with pytest.raises(ConfigError, match="test.txt lists missing.png"):
        FFHQ256(str(tmp_path / "img"), image_size=8).test_dataset()


# -- CelebA 64 ----------------------------------------------------------------------------------
def coordinate_face() -> Image.Image:
    """A 178x218 RGB image whose red value is the column and green value the row."""
    x, y = np.meshgrid(np.arange(178), np.arange(218))
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], axis=-1).astype(np.uint8))


def test_celeba64_crop_geometry(tmp_path):
    folder = tmp_path / "img_align_celeba"
    folder.mkdir()
    for index in range(4):
        coordinate_face().save(folder / f"{index:06d}.png")
    crop = CelebA64(str(tmp_path), image_size=148, test_size=1).train_dataset()[0][0] * 255
    assert crop.shape == (3, 148, 148)
    assert torch.equal(crop[0, 0], torch.arange(15, 163).float())  # columns 15..162
    assert torch.equal(crop[1, :, 0], torch.arange(40, 188).float())  # rows 40..187

    data = CelebA64(str(tmp_path), test_size=1)
    assert data.image_shape == (3, 64, 64)
    expected = np.asarray(coordinate_face().crop(CELEBA64_CROP).resize((64, 64), Image.BILINEAR), dtype=np.float32)
    assert torch.equal(data.train_dataset()[0][0], torch.from_numpy(expected).permute(2, 0, 1) / 255)


def test_celeba64_official_partition_and_wrong_size(tmp_path):
    write_celeba(tmp_path, 8, partition=(4, 3))  # the 8th image is in partition 2 (CelebA's test set)
    data = CelebA64(str(tmp_path))
    assert data.image_dir == tmp_path / "celeba" / "img_align_celeba"
    assert data.train_dataset().names == [f"{i:06d}.jpg" for i in range(1, 5)]
    assert data.test_dataset().names == [f"{i:06d}.jpg" for i in range(5, 8)]
    assert not (data.image_dir / "train.txt").exists()  # the official partition needs no split files
    assert len(CelebA64(str(tmp_path), use_official_partition=False, test_size=2).test_dataset()) == 2

    Image.new("RGB", (64, 64)).save(data.image_dir / "000002.jpg")
    with pytest.raises(ConfigError) as excinfo:
        CelebA64(str(tmp_path)).train_dataset()[1]
    assert "000002.jpg: 64x64 pixels, expected 178x218" in one_line_error(excinfo)


# -- image folders: modes, bit depths, sizes, bad files -------------------------------------------
def test_image_folder_modes_and_bit_depths(tmp_path):
    grey16 = (np.arange(48).reshape(6, 8) * 1361).astype(np.uint16)
    rgb16 = np.stack([grey16, 65535 - grey16, np.full_like(grey16, 257 * 7 + 1)], axis=-1)
    png16(tmp_path / "grey16.png", grey16)
    png16(tmp_path / "rgb16.png", rgb16)
    Image.fromarray(grey16).save(tmp_path / "grey16.tif")  # Pillow's I;16 path
    Image.fromarray(np.full((6, 8), 51, np.uint8)).save(tmp_path / "grey8.png")
    Image.fromarray(np.full((6, 8, 4), 102, np.uint8)).save(tmp_path / "rgba8.png")

    def item(name, **kwargs):
        data = ImageFolder(str(tmp_path), image_size=6, resize=True, split_dir=str(tmp_path / "splits"), **kwargs)
        return data.pipeline((tmp_path / name).read_bytes(), name)

    exact_grey = torch.from_numpy(grey16[:, 1:7].astype(np.float32) / 65535)  # centre-cropped 8 -> 6 wide
    assert torch.equal(item("grey16.png", mode="L")[0], exact_grey)
    assert torch.equal(item("grey16.tif", mode="L")[0], exact_grey)
    colour = item("rgb16.png", mode="RGB")
    assert colour.shape == (3, 6, 6) and torch.equal(colour[0], exact_grey)
    assert torch.equal(colour[1], torch.from_numpy((65535 - grey16[:, 1:7]).astype(np.float32) / 65535))
    assert torch.equal(colour[2], torch.full((6, 6), np.float32(1800) / np.float32(65535)))
    assert torch.equal(item("grey8.png", mode="RGB"), torch.full((3, 6, 6), 0.2))  # grey replicated to RGB
    rgba = item("rgba8.png", mode="RGBA")
    assert rgba.shape == (4, 6, 6) and torch.equal(rgba, torch.full((4, 6, 6), 0.4))
    assert item("grey16.png", mode="LA")[1].eq(1).all()  # an opaque alpha is added

    with pytest.raises(ConfigError) as excinfo:
        item("rgba8.png", mode="RGB", convert_mode=False)
    assert "rgba8.png: RGBA image, expected RGB" in one_line_error(excinfo)
    with pytest.raises(ConfigError, match="grey8.png: 8x6 pixels, expected 6x6"):
        ImageFolder(str(tmp_path), image_size=6, resize=False).pipeline(
            (tmp_path / "grey8.png").read_bytes(), "grey8.png"
        )


def test_image_folder_resizes_crops_and_names_bad_files(tmp_path):
    write_image_files(tmp_path, 6, (30, 20), mode="RGB", suffix=".jpg")
    data = ImageFolder(str(tmp_path), image_size=10, mode="L", test_size=2)
    x, label = data.train_dataset()[0]
    assert data.image_shape == (1, 10, 10) and x.shape == (1, 10, 10) and label == -1
    assert 0 <= x.min() and x.max() <= 1
    assert len(data.train_dataset()) == 4 and len(data.test_dataset()) == 2

    (tmp_path / "000003.jpg").write_bytes(b"not a jpeg at all")
    names = data.train_dataset().names + data.test_dataset().names
    broken = ImageFolder(str(tmp_path), image_size=10, test_size=2)
    dataset = broken.train_dataset() if "000003.jpg" in broken.train_dataset().names else broken.test_dataset()
    with pytest.raises(ConfigError) as excinfo:
        dataset[dataset.names.index("000003.jpg")]
    assert "000003.jpg: not a readable image" in one_line_error(excinfo) and "000003.jpg" in names


def test_missing_data_is_one_line_naming_the_layout(tmp_path):
    for cls, expected in [(CelebA64, "img_align_celeba"), (CelebAHQ256, "train.lmdb"), (FFHQ256, "images1024x1024"),
                          (ImageNet32, "train_data_batch_1"), (ImageFolder, "folder of image files")]:  # fmt: skip
        kwargs = {"image_size": 8} if cls is ImageFolder else {}
        with pytest.raises(ConfigError) as excinfo:
            cls(str(tmp_path / "absent"), **kwargs)
        assert "not found" in one_line_error(excinfo) and expected in str(excinfo.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no image files in"):
        FFHQ256(str(tmp_path / "empty")).train_dataset()


def test_recipe_spec_builds_data_modules(cifar_root):
    data = vaezoo.build(
        {"class_path": "CIFAR10", "init_args": {"root": str(cifar_root), "batch_size": 4}}, kind="dataset"
    )
    assert isinstance(data, CIFAR10) and data.batch_size == 4
    with pytest.raises(ConfigError) as excinfo:
        vaezoo.build({"class_path": "CIFAR10", "init_args": {"root": str(cifar_root / "nope")}}, kind="dataset")
    assert "CIFAR-10 not found" in one_line_error(excinfo)


# -- ImageNet 32 ----------------------------------------------------------------------------------
@pytest.fixture
def imagenet_root(tmp_path):
    (tmp_path / "Imagenet32_train").mkdir()
    (tmp_path / "Imagenet32_val").mkdir()
    rng = np.random.default_rng(1)
    planes = rng.integers(0, 256, (9, 3, 32, 32))
    for batch in (1, 2, 10):  # numeric, not lexical, order
        first = {1: 0, 2: 3, 10: 6}[batch]
        rows = np.stack([cifar_row(*planes[i]) for i in range(first, first + 3)])
        pickle_batch(tmp_path / "Imagenet32_train" / f"train_data_batch_{batch}", rows, [1, 500, 1000])
    np.savez(
        tmp_path / "Imagenet32_val" / "val_data.npz",
        data=np.stack([cifar_row(*planes[0])] * 2),
        labels=np.array([7, 8]),
    )
    return tmp_path, torch.from_numpy(planes).float() / 255


def test_imagenet32_batches_and_prepared_lmdb(imagenet_root, tmp_path_factory):
    root, planes = imagenet_root
    data = ImageNet32(str(root))
    train, test = data.train_dataset(), data.test_dataset()
    assert torch.equal(first_items(train), planes)
    assert [train[i][1] for i in range(3)] == [0, 499, 999] and test[1][1] == 7
    assert torch.equal(test[0][0], planes[0])

    dest = tmp_path_factory.mktemp("out") / "imagenet32"
    assert main(["data", "prepare", "imagenet32", str(root), str(dest)]) == 0
    prepared = ImageNet32(str(dest))
    assert prepared.from_lmdb and torch.equal(first_items(prepared.train_dataset()), planes)
    assert torch.equal(first_items(prepared.test_dataset()), first_items(test))
    assert (dest / "train.txt").read_text().splitlines()[6] == "train_data_batch_10#0"


# -- LMDB: the official layout, prepare, verify, fork safety ----------------------------------------
def test_official_raw_lmdb_layout_is_read(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    for name, subset in (("train.lmdb", images[:3]), ("validation.lmdb", images[3:])):
        env = lmdb.open(str(tmp_path / name), map_size=1 << 24)
        with env.begin(write=True) as txn:
            for index, image in enumerate(subset):
                txn.put(str(index).encode(), image.tobytes())  # raw HWC RGB, as NVAE's scripts store it
        env.close()
    data = CelebAHQ256(str(tmp_path), image_size=8)
    assert data.from_lmdb and (len(data.train_dataset()), len(data.test_dataset())) == (3, 2)
    assert torch.equal(data.test_dataset()[1][0], torch.from_numpy(images[4]).permute(2, 0, 1).float() / 255)
    upscaled = CelebAHQ256(str(tmp_path), image_size=16).train_dataset()[0][0]  # resized like the official Resize(size)
    assert upscaled.shape == (3, 16, 16)


def test_prepare_faces_matches_the_folder_and_is_checksummed(tmp_path):
    faces = tmp_path / "faces"
    write_image_files(faces, 10, (24, 18))
    dest = tmp_path / "ffhq"
    manifest = prepare("ffhq256", faces, dest, PrepareOptions(image_size=12, test_size=3, seed=1))
    assert sorted(p.name for p in dest.iterdir()) == [
        "manifest.json",
        "test.txt",
        "train.lmdb",
        "train.txt",
        "validation.lmdb",
    ]
    assert manifest == json.loads((dest / "manifest.json").read_text())
    assert (manifest["splits"]["train"]["count"], manifest["splits"]["test"]["count"]) == (7, 3)
    assert manifest["encoding"] == "raw-rgb" and manifest["image_size"] == 12
    assert main(["data", "verify", str(dest)]) == 0
    assert not list(faces.glob("*.txt"))  # SOURCE is only read

    from_folder = FFHQ256(str(faces), image_size=12, test_size=3, split_seed=1)
    from_lmdb = FFHQ256(str(dest), image_size=12)
    assert from_folder.test_dataset().names == (dest / "test.txt").read_text().split()
    for a, b in (
        (from_folder.train_dataset(), from_lmdb.train_dataset()),
        (from_folder.test_dataset(), from_lmdb.test_dataset()),
    ):
        assert torch.equal(first_items(a), first_items(b))

    again = prepare("ffhq256", faces, tmp_path / "again", PrepareOptions(image_size=12, test_size=3, seed=1))
    assert again["files"] == manifest["files"]  # deterministic output
    with pytest.raises(ConfigError, match="prepared for 'ffhq256', not 'celebahq256'"):
        CelebAHQ256(str(dest)).train_dataset()

    data_file = dest / "train.lmdb" / "data.mdb"
    corrupted = bytearray(data_file.read_bytes())
    corrupted[-100] ^= 0xFF
    data_file.write_bytes(bytes(corrupted))
    assert main(["data", "verify", str(dest)]) == 2


def test_prepare_celeba64_keeps_jpegs_and_crops_when_read(tmp_path):
    write_celeba(tmp_path / "src", 6, partition=(4, 2))
    dest = tmp_path / "celeba64"
    assert main(["data", "prepare", "celeba64", str(tmp_path / "src"), str(dest)]) == 0
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["encoding"] == "encoded" and manifest["splits"]["test"]["count"] == 2
    with lmdb.open(str(dest / "train.lmdb"), readonly=True, lock=False) as env, env.begin() as txn:
        assert txn.get(b"0") == (tmp_path / "src" / "celeba" / "img_align_celeba" / "000001.jpg").read_bytes()
    folder, prepared = CelebA64(str(tmp_path / "src")), CelebA64(str(dest))
    assert torch.equal(first_items(prepared.train_dataset()), first_items(folder.train_dataset()))


def test_prepare_refuses_overwrite_and_leaves_nothing_on_bad_source(tmp_path, capsys):
    source = tmp_path / "images"
    write_image_files(source, 5, (8, 8))
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    assert main(["data", "prepare", "image-folder", str(source), str(existing)]) == 2
    assert "already exists" in capsys.readouterr().err and (existing / "keep.txt").read_text() == "mine"

    (source / "000003.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    dest = tmp_path / "out"
    assert main(["data", "prepare", "image-folder", str(source), str(dest)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "000003.png: not a readable image" in err
    assert not dest.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["existing", "images"]

    assert main(["data", "prepare", "image-folder", str(tmp_path / "absent"), str(dest)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["data", "prepare", "imagenet32", str(source), str(dest), "--image_size", "8"]) == 2
    assert "imagenet32 does not take --image_size" in capsys.readouterr().err
    assert main(["data", "prepare", "celeba", str(source), str(dest)]) == 2
    assert "did you mean celeba64" in capsys.readouterr().err


def test_prepared_image_folder_keeps_modes_and_reads_in_forked_workers(tmp_path):
    source = tmp_path / "images"
    write_image_files(source, 6, (10, 10), mode="L")
    png16(source / "deep.png", (np.arange(100).reshape(10, 10) * 600).astype(np.uint16))
    dest = tmp_path / "prepared"
    prepare("image-folder", source, dest, PrepareOptions(test_size=2, workers=2))
    direct = ImageFolder(str(source), image_size=10, mode="L", test_size=2, split_dir=str(tmp_path / "splits"))
    prepared = ImageFolder(str(dest), image_size=10, mode="L")
    expected = first_items(direct.train_dataset())
    assert torch.equal(first_items(prepared.train_dataset()), expected)

    train = prepared.train_dataset()
    train[0]  # the parent opens its environment before the workers fork
    loader = DataLoader(train, batch_size=2, num_workers=2, multiprocessing_context="fork")
    assert torch.equal(torch.cat([x for x, _ in loader]), expected)
    assert torch.equal(pickle.loads(pickle.dumps(train))[1][0], expected[1])  # what a spawned worker receives


def test_train_transform_flips_are_resumable(tmp_path):
    write_image_files(tmp_path, 6, (8, 8))
    data = FFHQ256(str(tmp_path), image_size=8, test_size=2)
    batch = first_items(data.train_dataset())
    generator = torch.Generator().manual_seed(0)
    generator.manual_seed(11)
    state = generator.get_state()
    first = data.train_transform(batch, generator)
    generator.set_state(state)
    assert torch.equal(first, data.train_transform(batch, generator))
    assert "4 train / 2 test" in data.describe() and "flips" in data.describe()
