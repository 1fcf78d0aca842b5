"""A generic folder of images as a data module."""

from __future__ import annotations

from typing import Literal

from vaezoo.data.image_data import FolderImages
from vaezoo.data.prepare import KeepEncoded, PrepareOptions
from vaezoo.data.transforms import MODES, ImagePipeline, check_image
from vaezoo.errors import ConfigError
from vaezoo.interfaces import Example


class ImageFolder(FolderImages):
    """Any folder of images (L/LA/RGB/RGBA, 8- or 16-bit), resized and centre-cropped to a square; seeded split files."""

    title = "image folder"
    source_hint = (
        "Point data.root at a folder of image files (.png .jpg .jpeg .bmp .webp .tif .tiff .ppm .pgm, searched recursively), "
        "or at a folder written by `vaezoo data prepare image-folder SOURCE DEST` (train.lmdb, validation.lmdb)"
    )
    prepare_name = "image-folder"
    prepare_options = ("test_size", "seed")  # the LMDB keeps the original files: size and mode are chosen when reading
    reads_any_prepared = True

    def __init__(
        self,
        root: str,
        image_size: int,
        batch_size: int = 32,
        mode: Literal["L", "LA", "RGB", "RGBA"] = "RGB",
        convert_mode: bool = True,
        resize: bool = True,
        flip: bool = False,
        test_size: int | float = 0.1,
        split_seed: int = 0,
        split_dir: str | None = None,
    ) -> None:
        """
        Args:
            root: the image folder (searched recursively), or a folder prepared by ``vaezoo data prepare``.
            image_size: side of the square images produced.
            mode: pixel mode produced: L (grey), LA, RGB or RGBA.
            convert_mode: convert images of another mode; when false, such an image is an error naming it.
            resize: resize the shorter side to ``image_size`` and centre-crop; when false, an image of
                another size is an error naming it.
            flip: random horizontal flips of training batches (off: not every kind of image is symmetric).
            test_size: test images: a count, or a fraction in (0, 1).
            split_seed: seed of the split written to ``train.txt``/``test.txt`` on first use.
            split_dir: where the split files live (default: ``root``).
        """
        if mode not in MODES:
            raise ConfigError(f"data.mode must be one of {', '.join(MODES)}, got {mode!r}")
        pipeline = ImagePipeline(image_size, mode=mode, convert_mode=convert_mode, resize=resize)
        super().__init__(root, batch_size, pipeline, flip, test_size, split_seed, split_dir)

    @classmethod
    def prepare_converter(cls, options: PrepareOptions):
        return "encoded", None, KeepEncoded(check_image)

    @classmethod
    def example(cls) -> Example:
        from .testing import temporary_root, write_image_files

        def build() -> ImageFolder:
            root = temporary_root("image_folder")
            write_image_files(root, 3, (12, 10), mode="L", suffix=".png")
            write_image_files(root / "nested", 3, (10, 10), mode="RGBA", suffix=".png", seed=1)
            return cls(root=str(root), image_size=8, batch_size=2, test_size=2)

        return Example(build=build)
