"""The shared machinery of the image data modules (faces, ImageNet 32, generic folders).

Each reads either a prepared LMDB pair (``root/train.lmdb`` and ``root/validation.lmdb``: written by
``vaezoo data prepare`` or by the official NVAE scripts) or the data set's native files; the choice
is made from what ``root`` holds. Decoding runs per image in the datasets; random horizontal flips run
per batch in :meth:`train_transform`, with the trainer's seeded generator.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..interfaces import DataModule
from .lmdb_images import TEST_LMDB, TRAIN_LMDB, DecodeLMDBValue, LMDBImages, has_lmdb_pair, read_manifest
from .prepare import PrepareOptions, PreparePlan, ReadAndConvert, map_in_order
from .splits import folder_split, list_images
from .transforms import ImagePipeline, random_horizontal_flip

NO_LABEL = -1


class ImageFiles(Dataset):
    """Image files of one folder, listed by relative name, as ``(image, NO_LABEL)``."""

    def __init__(self, folder: Path, names: list[str], decode: Callable[[bytes, str], Tensor]) -> None:
        self.folder, self.names, self.decode = folder, list(names), decode

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path = self.folder / self.names[index]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from exc
        return self.decode(data, str(path)), NO_LABEL


class ImageDataModule(DataModule):
    """Base of the image data modules: an LMDB pair under ``root``, else the native files."""

    #: human name, used in messages
    title: ClassVar[str] = "images"
    #: where to get the data and the layout expected (appended to every missing-data error)
    source_hint: ClassVar[str] = ""
    #: the name of ``vaezoo data prepare NAME`` (None: not preparable) and the options it takes
    prepare_name: ClassVar[str | None] = None
    prepare_options: ClassVar[tuple[str, ...]] = ()
    #: whether a prepared LMDB of another data set is accepted (the generic folder reads any)
    reads_any_prepared: ClassVar[bool] = False

    def __init__(self, root: str, batch_size: int, pipeline: ImagePipeline, flip: bool) -> None:
        if batch_size < 1:
            raise ConfigError(f"data.batch_size must be positive, got {batch_size}")
        if pipeline.image_size < 1:
            raise ConfigError(f"data.image_size must be positive, got {pipeline.image_size}")
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise ConfigError(self.missing(f"{self.root} does not exist"))
        self.batch_size = batch_size
        self.pipeline = pipeline
        self.flip = flip
        self.image_shape = (pipeline.channels, pipeline.image_size, pipeline.image_size)
        self.from_lmdb = has_lmdb_pair(self.root)
        self._datasets: tuple[Dataset, Dataset] | None = None

    @classmethod
    def missing(cls, problem: str) -> str:
        return f"{cls.title} not found: {problem}. {cls.source_hint}"

    # -- datasets ------------------------------------------------------------------------------
    def datasets(self) -> tuple[Dataset, Dataset]:
        if self._datasets is None:
            train, test = self._lmdb_datasets() if self.from_lmdb else self._native_datasets()
            for split, dataset in (("train", train), ("test", test)):
                if len(dataset) == 0:
                    raise ConfigError(self.missing(f"the {split} split under {self.root} is empty"))
            self._datasets = train, test
        return self._datasets

    def train_dataset(self) -> Dataset:
        return self.datasets()[0]

    def test_dataset(self) -> Dataset:
        return self.datasets()[1]

    def _lmdb_datasets(self) -> tuple[Dataset, Dataset]:
        manifest = read_manifest(self.root)
        if manifest is not None and not self.reads_any_prepared and manifest.get("dataset") != self.prepare_name:
            raise ConfigError(
                f"{self.root} was prepared for {manifest.get('dataset')!r}, not {self.prepare_name!r} ({type(self).__name__})"
            )
        decode = DecodeLMDBValue(self.pipeline)
        train, test = LMDBImages(self.root / TRAIN_LMDB, decode), LMDBImages(self.root / TEST_LMDB, decode)
        if manifest is not None:
            for dataset, split in ((train, "train"), (test, "test")):
                expected = manifest["splits"][split]["count"]
                if len(dataset) != expected:
                    raise ConfigError(
                        f"{dataset.path} holds {len(dataset)} images, its manifest says {expected}: prepare it again"
                    )
        return train, test

    @abc.abstractmethod
    def _native_datasets(self) -> tuple[Dataset, Dataset]:
        """Train and test datasets from the data set's own files."""

    # -- training ------------------------------------------------------------------------------
    def train_transform(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Random horizontal flips (seeded by the trainer's generator) when ``flip`` is on."""
        return random_horizontal_flip(batch, generator) if self.flip else batch

    def describe(self) -> str:
        train, test = self.datasets()
        source = f"LMDB in {self.root}" if self.from_lmdb else str(self.root)
        size = "x".join(str(s) for s in self.image_shape[1:])
        flips = ", random horizontal flips for training" if self.flip else ""
        return (
            f"{self.title} ({len(train)} train / {len(test)} test, {self.pipeline.mode} {size}, from {source}{flips})"
        )


class FolderImages(ImageDataModule):
    """An image data module whose native files are a folder of images, split by seeded split files."""

    #: official (train, test) counts of the full data set (None: no official split)
    official_split: ClassVar[tuple[int, int] | None] = None
    default_test_fraction: ClassVar[float] = 0.1
    prepare_options = ("image_size", "test_size", "seed")

    def __init__(
        self,
        root: str,
        batch_size: int,
        pipeline: ImagePipeline,
        flip: bool,
        test_size: int | float | None,
        split_seed: int,
        split_dir: str | None,
    ) -> None:
        super().__init__(root, batch_size, pipeline, flip)
        self.test_size, self.split_seed = test_size, split_seed
        self.split_dir = Path(split_dir).expanduser() if split_dir else None
        self.image_dir = None if self.from_lmdb else self.find_image_dir(self.root)

    @classmethod
    def find_image_dir(cls, root: Path) -> Path:
        """The folder holding the images (searched recursively)."""
        if not root.is_dir():
            raise ConfigError(cls.missing(f"{root} is not a folder"))
        return root

    @classmethod
    def split(
        cls, image_dir: Path, *, test_size: Any, seed: int, split_dir: Path | None, write: bool
    ) -> tuple[list[str], list[str]]:
        """(train, test) image names relative to ``image_dir``."""
        names = list_images(image_dir)
        if not names:
            raise ConfigError(cls.missing(f"no image files in {image_dir}"))
        return folder_split(
            image_dir, names, test_size=test_size, seed=seed, official=cls.official_split,
            default_fraction=cls.default_test_fraction, split_dir=split_dir, write=write,
        )  # fmt: skip

    def split_settings(self) -> dict:
        """The keyword arguments of :meth:`split` that this instance was configured with."""
        return {"test_size": self.test_size, "seed": self.split_seed, "split_dir": self.split_dir}

    def _native_datasets(self) -> tuple[Dataset, Dataset]:
        train, test = self.split(self.image_dir, **self.split_settings(), write=True)
        return ImageFiles(self.image_dir, train, self.pipeline), ImageFiles(self.image_dir, test, self.pipeline)

    # -- vaezoo data prepare -------------------------------------------------------------------
    @classmethod
    def prepare_converter(cls, options: PrepareOptions) -> tuple[str, int | None, Callable[[bytes, str], bytes]]:
        """(encoding, stored image size or None, file bytes -> LMDB value)."""
        raise NotImplementedError

    @classmethod
    def prepare_plan(cls, source: Path, options: PrepareOptions) -> PreparePlan:
        image_dir = cls.find_image_dir(source)
        seed = options.seed if options.seed is not None else 0
        # an existing split next to the images (ours or published) is honoured; none is written into SOURCE
        train, test = cls.split(image_dir, test_size=options.test_size, seed=seed, split_dir=None, write=False)
        encoding, image_size, convert = cls.prepare_converter(options)
        read = ReadAndConvert(image_dir, convert)
        names = {"train": train, "test": test}
        if encoding == "raw-rgb":
            expected = {split: len(n) * 3 * image_size**2 for split, n in names.items()}
        else:
            expected = {split: sum((image_dir / name).stat().st_size for name in n) for split, n in names.items()}
        return PreparePlan(
            names=names,
            values=lambda split: map_in_order(read, names[split], options.workers),
            encoding=encoding,
            image_size=image_size,
            expected_bytes=expected,
            details={"image_dir": str(image_dir.resolve()), "split_seed": seed, "test_size": options.test_size},
        )
