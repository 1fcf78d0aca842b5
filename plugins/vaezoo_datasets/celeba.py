"""CelebA 64 and CelebA-HQ 256, as NVAE uses them.

CelebA 64 crops the aligned 178x218 faces to the box (15, 40, 163, 188) and resizes the 148x148 crop
to 64x64. Its prepared LMDB stores the original JPEG files (the official layout for CelebA 64: encoded
images), cropped and resized when read. The official split trains on partition 0 of
``list_eval_partition.txt`` (162,770 images) and tests on partition 1 (19,867, CelebA's validation
partition); without that file a seeded split of the same proportion is used.

CelebA-HQ 256 (and FFHQ 256, :mod:`vaezoo.data.ffhq`) resize the faces to 256x256; their LMDB stores
raw RGB bytes. The official code splits CelebA-HQ 27,000 / 3,000.
"""

from __future__ import annotations

from pathlib import Path

from vaezoo.data.image_data import FolderImages
from vaezoo.data.prepare import KeepEncoded, PrepareOptions, ToRawRGB
from vaezoo.data.splits import list_images
from vaezoo.data.transforms import CELEBA64_CROP, CELEBA_ALIGNED_SIZE, ImagePipeline
from vaezoo.errors import ConfigError
from vaezoo.interfaces import Example

PARTITION_FILE = "list_eval_partition.txt"


class RawRGBFaces(FolderImages):
    """Square faces resized to ``image_size``: a folder of images or the official raw-RGB LMDB pair."""

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        image_size: int = 256,
        flip: bool = True,
        test_size: int | float | None = None,
        split_seed: int = 0,
        split_dir: str | None = None,
    ) -> None:
        """
        Args:
            root: a folder of face images (any size, searched recursively) or a prepared LMDB folder.
            image_size: side of the images produced (the shorter side is resized, then centre-cropped).
            flip: random horizontal flips of training batches.
            test_size: test images: null (the official count for the full data set, else its fraction),
                a count, or a fraction in (0, 1).
            split_seed: seed of the split written to ``train.txt``/``test.txt`` next to the images.
            split_dir: where the split files live (default: the image folder).
        """
        super().__init__(root, batch_size, ImagePipeline(image_size), flip, test_size, split_seed, split_dir)

    @classmethod
    def prepare_converter(cls, options: PrepareOptions):
        size = options.image_size or 256
        return "raw-rgb", size, ToRawRGB(ImagePipeline(size))

    @classmethod
    def example(cls) -> Example:
        from .testing import temporary_root, write_image_files

        def build() -> RawRGBFaces:
            root = temporary_root(cls.__name__.lower())
            write_image_files(root, 5, (20, 20), suffix=".png")
            return cls(root=str(root), batch_size=2, image_size=16)

        return Example(build=build)


class CelebAHQ256(RawRGBFaces):
    """CelebA-HQ at 256x256 (NVAE): resized faces, 27,000 train / 3,000 test for the full set; flips for training."""

    title = "CelebA-HQ 256"
    official_split = (27000, 3000)
    prepare_name = "celebahq256"
    source_hint = (
        "Expected a folder of CelebA-HQ images (any size, e.g. the 30,000 1024x1024 images of CelebAMask-HQ/CelebA-HQ-img; "
        "searched recursively), or the official LMDB layout (ROOT/train.lmdb and ROOT/validation.lmdb, raw RGB values "
        "under keys '0', '1', ...) as written by `vaezoo data prepare celebahq256 SOURCE DEST`"
    )


class CelebA64(FolderImages):
    """CelebA 64 (NVAE): the crop (15, 40, 163, 188) of the aligned 178x218 faces, resized to 64; flips for training."""

    title = "CelebA 64"
    official_split = (162770, 19867)
    prepare_name = "celeba64"
    prepare_options = ("test_size", "seed")  # the LMDB keeps the original JPEGs; the crop happens when reading
    source_hint = (
        "Expected the aligned CelebA JPEGs (img_align_celeba/*.jpg, 178x218) with list_eval_partition.txt next to the "
        "folder, as torchvision.datasets.CelebA(ROOT, download=True) lays them out (ROOT/celeba/img_align_celeba; from "
        "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html), or a folder written by "
        "`vaezoo data prepare celeba64 SOURCE DEST` (train.lmdb, validation.lmdb)"
    )

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        image_size: int = 64,
        flip: bool = True,
        use_official_partition: bool = True,
        test_size: int | float | None = None,
        split_seed: int = 0,
        split_dir: str | None = None,
    ) -> None:
        """
        Args:
            root: the CelebA folder (``ROOT/celeba/img_align_celeba``, ``ROOT/img_align_celeba`` or the images
                themselves) or a prepared LMDB folder.
            image_size: side the 148x148 crop is resized to.
            flip: random horizontal flips of training batches.
            use_official_partition: train on partition 0 and test on partition 1 of ``list_eval_partition.txt``
                when it is there; otherwise (or when false) a seeded split.
            test_size: for the seeded split: null (the official proportion), a count or a fraction in (0, 1).
            split_seed: seed of the seeded split (written to ``train.txt``/``test.txt`` next to the images).
            split_dir: where the split files live (default: the image folder).
        """
        pipeline = ImagePipeline(image_size, crop_box=CELEBA64_CROP, source_size=CELEBA_ALIGNED_SIZE)
        super().__init__(root, batch_size, pipeline, flip, test_size, split_seed, split_dir)
        self.use_official_partition = use_official_partition

    def split_settings(self) -> dict:
        return {**super().split_settings(), "use_official_partition": self.use_official_partition}

    @classmethod
    def find_image_dir(cls, root: Path) -> Path:
        for folder in (root / "celeba" / "img_align_celeba", root / "img_align_celeba"):
            if folder.is_dir():
                return folder
        return super().find_image_dir(root)

    @staticmethod
    def partition_file(image_dir: Path) -> Path | None:
        candidates = (
            image_dir.parent / PARTITION_FILE,
            image_dir / PARTITION_FILE,
            image_dir.parent / "Eval" / PARTITION_FILE,
        )
        return next((p for p in candidates if p.is_file()), None)

    @classmethod
    def split(cls, image_dir: Path, *, use_official_partition: bool = True, **settings) -> tuple[list[str], list[str]]:
        partition = cls.partition_file(image_dir) if use_official_partition else None
        if partition is None:
            return super().split(image_dir, **settings)
        train, test = [], []
        for number, line in enumerate(partition.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise ConfigError(
                    f"{partition}:{number}: expected 'IMAGE PARTITION' with partition 0, 1 or 2, got {line.strip()!r}"
                )
            # partition 2 (CelebA's test set) is not used by NVAE, which evaluates on the validation partition
            {"0": train, "1": test}.get(fields[1], []).append(fields[0])
        available = set(list_images(image_dir))
        missing = next((name for name in train + test if name not in available), None)
        if missing is not None:
            raise ConfigError(cls.missing(f"{partition} lists {missing}, which is not in {image_dir}"))
        return sorted(train), sorted(test)

    @classmethod
    def prepare_converter(cls, options: PrepareOptions):
        # validate what will be read back: a decodable image of the aligned size
        return (
            "encoded",
            None,
            KeepEncoded(ImagePipeline(64, crop_box=CELEBA64_CROP, source_size=CELEBA_ALIGNED_SIZE).decode),
        )

    @classmethod
    def example(cls) -> Example:
        from .testing import temporary_root, write_celeba

        return Example(
            build=lambda: cls(root=str(write_celeba(temporary_root("celeba64"), 5)), batch_size=2, image_size=16)
        )
