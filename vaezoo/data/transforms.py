"""Image decoding and the transforms of the data modules.

Per-image work (decode, mode conversion, crop, resize) is deterministic and runs inside the datasets,
so it can run in DataLoader workers. Every random transform (horizontal flips, binarisation) runs on
whole batches in ``DataModule.train_transform`` with the trainer's seeded generator: the augmentation
is part of the resumable training state, and the same generator state gives the same batch.

8-bit images stay 8-bit through resizing (PIL, as torchvision's ``Resize`` on PIL images does in the
official NVAE pipeline), so the tensors hold exact multiples of 1/255. 16-bit PNGs are decoded at
full precision (torchvision's PNG decoder; Pillow would truncate 16-bit colour to 8 bits) and scaled
by 1/65535.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ..errors import ConfigError

#: the official NVAE crop of the aligned 178x218 CelebA faces (left, upper, right, lower), before Resize(64)
CELEBA64_CROP: tuple[int, int, int, int] = (15, 40, 178 - 15, 218 - 30)
#: width and height of CelebA's aligned images (img_align_celeba)
CELEBA_ALIGNED_SIZE: tuple[int, int] = (178, 218)

#: file name endings read as images (lower case)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
#: the pixel modes a data module can produce; the channel count is the length of the name
MODES = ("L", "LA", "RGB", "RGBA")

# storage variants that are not a different content: palettes, bilevel and premultiplied images
_EXPANDED_MODE = {"1": "L", "P": "RGB", "PA": "RGBA", "La": "LA", "RGBa": "RGBA"}
_SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# the leading bytes of the encoded formats an LMDB value may hold (anything else is raw RGB)
_SIGNATURES = (_PNG_SIGNATURE, b"\xff\xd8\xff", b"BM", b"GIF8", b"II*\x00", b"MM\x00*", b"P5", b"P6")
# ITU-R 601-2 luma, the weights PIL's convert("L") uses
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# what decoding a bad file can raise: PIL (OSError, SyntaxError, ValueError, DecompressionBombError), torchvision (RuntimeError)
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, RuntimeError, Image.DecompressionBombError)


def random_horizontal_flip(batch: Tensor, generator: torch.Generator | None = None, probability: float = 0.5) -> Tensor:
    """Mirror each image of ``[B, C, H, W]`` left-right with ``probability``, one draw per image."""
    device = generator.device if generator is not None else torch.device("cpu")
    flip = torch.rand(batch.shape[0], generator=generator, device=device) < probability
    flip = flip.to(batch.device).view(-1, *([1] * (batch.ndim - 1)))
    return torch.where(flip, batch.flip(-1), batch)


def is_encoded_image(data: bytes) -> bool:
    """Whether ``data`` starts like an encoded image file (PNG, JPEG, BMP, GIF, TIFF, PNM, WebP)."""
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def _is_16bit_png(data: bytes) -> bool:
    # IHDR is the first chunk: 8 signature bytes, length, "IHDR", width, height, then the bit depth
    return data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) > 24 and data[24] == 16


def raw_rgb_image(value: bytes, name: str) -> Image.Image:
    """An image stored as raw RGB bytes (the official NVAE LMDB layout): the side is sqrt(len / 3)."""
    side = int(round((len(value) / 3) ** 0.5))
    if side == 0 or 3 * side * side != len(value):
        raise ConfigError(
            f"{name}: {len(value)} bytes are neither an encoded image nor a square raw RGB image (3*side*side bytes)"
        )
    return Image.frombytes("RGB", (side, side), value)


@dataclass(frozen=True)
class ImagePipeline:
    """An encoded image (or a PIL image) -> float tensor ``[C, image_size, image_size]`` in [0, 1].

    Steps: decode; bring the pixels to ``mode`` (or refuse, when ``convert_mode`` is false); check the
    source size (``source_size`` as width x height, when given); crop to ``crop_box``; resize the
    shorter side to ``image_size`` and centre-crop (or refuse another size, when ``resize`` is false).
    Every refusal and every unreadable file is a one-line :class:`ConfigError` naming the file.
    """

    image_size: int
    mode: str = "RGB"
    convert_mode: bool = True
    resize: bool = True
    crop_box: tuple[int, int, int, int] | None = None
    source_size: tuple[int, int] | None = None

    @property
    def channels(self) -> int:
        return len(self.mode)

    def __call__(self, data: bytes, name: str) -> Tensor:
        """Decode an encoded image file's bytes."""
        image = self.decode(data, name)
        return _to_tensor(image)

    def from_image(self, image: Image.Image, name: str) -> Tensor:
        """The same steps for an already decoded 8-bit PIL image."""
        return _to_tensor(self._process_8bit(image, name))

    def decode(self, data: bytes, name: str) -> Image.Image | np.ndarray:
        """The processed image: an 8-bit PIL image, or a float32 ``[H, W, C]`` array for 16-bit sources."""
        try:
            if _is_16bit_png(data):
                return self._process_float(_decode_16bit_png(data), name)
            image = Image.open(io.BytesIO(data))
            image.load()
        except ConfigError:
            raise
        except _DECODE_ERRORS as exc:
            raise ConfigError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from exc
        if image.mode in _SIXTEEN_BIT_GREY:
            return self._process_float(np.asarray(image, dtype=np.float32)[..., None] / 65535.0, name)
        if image.mode in ("I", "F"):
            raise ConfigError(f"{name}: 32-bit {image.mode!r} pixels are not supported; store 8- or 16-bit images")
        return self._process_8bit(image, name)

    def uint8_rgb(self, data: bytes, name: str) -> Image.Image:
        """The processed image as 8-bit RGB (what the raw-RGB LMDB layout stores)."""
        image = self.decode(data, name)
        if isinstance(image, np.ndarray):  # 16-bit source: round to the nearest 8-bit level
            image = Image.fromarray(np.round(image * 255.0).astype(np.uint8))
        return image if image.mode == "RGB" else image.convert("RGB")

    # -- steps ---------------------------------------------------------------------------------
    def _process_8bit(self, image: Image.Image, name: str) -> Image.Image:
        if image.mode in _EXPANDED_MODE:
            expanded = "RGBA" if image.mode == "P" and "transparency" in image.info else _EXPANDED_MODE[image.mode]
            image = image.convert(expanded)
        if image.mode != self.mode:
            if not self.convert_mode:
                raise ConfigError(
                    f"{name}: {image.mode} image, expected {self.mode} (set convert_mode: true to convert)"
                )
            image = image.convert(self.mode)
        return self._geometry([image], name)[0]

    def _process_float(self, array: np.ndarray, name: str) -> np.ndarray:
        source_mode = MODES[array.shape[-1] - 1]
        if source_mode != self.mode:
            if not self.convert_mode:
                raise ConfigError(
                    f"{name}: 16-bit {source_mode} image, expected {self.mode} (set convert_mode: true to convert)"
                )
            array = _convert_float(array, source_mode, self.mode)
        planes = [Image.fromarray(np.ascontiguousarray(array[..., c])) for c in range(array.shape[-1])]
        planes = self._geometry(planes, name)
        return np.clip(np.stack([np.asarray(p) for p in planes], axis=-1), 0.0, 1.0)

    def _geometry(self, planes: list[Image.Image], name: str) -> list[Image.Image]:
        """The same crop and resize applied to one image or to each float plane of one."""
        import torchvision.transforms.functional as TF

        width, height = planes[0].size
        if self.source_size is not None and (width, height) != tuple(self.source_size):
            w, h = self.source_size
            raise ConfigError(f"{name}: {width}x{height} pixels, expected {w}x{h}")
        if self.crop_box is not None:
            planes = [p.crop(self.crop_box) for p in planes]
            width, height = planes[0].size
        size = self.image_size
        if (width, height) != (size, size):
            if not self.resize:
                raise ConfigError(
                    f"{name}: {width}x{height} pixels, expected {size}x{size} (set resize: true to resize and centre-crop)"
                )
            # torchvision's Resize(int) on PIL images: the shorter side becomes `size` (bilinear, antialiased)
            planes = [TF.center_crop(TF.resize(p, size), [size, size]) for p in planes]
        return planes


def _decode_16bit_png(data: bytes) -> np.ndarray:
    # torchvision 0.29 (pinned) deprecates its image codecs in favour of torchcodec, which is not a dependency;
    # it is the one decoder at hand that keeps 16-bit colour PNGs at 16 bits (Pillow truncates them to 8)
    from torchvision.io import ImageReadMode, decode_png

    encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        planes = decode_png(encoded, mode=ImageReadMode.UNCHANGED)  # uint16 [C, H, W]
    return planes.to(torch.int32).permute(1, 2, 0).numpy().astype(np.float32) / 65535.0


def _convert_float(array: np.ndarray, source: str, target: str) -> np.ndarray:
    """Mode conversion of float pixels, with PIL's rules: luma for grey, alpha dropped or set opaque."""
    colour = array[..., :3] if source.startswith("RGB") else array[..., :1]
    alpha = array[..., -1:] if source.endswith("A") else np.ones_like(array[..., :1])
    if target.startswith("RGB"):
        colour = colour if colour.shape[-1] == 3 else np.repeat(colour, 3, axis=-1)
    elif colour.shape[-1] == 3:
        colour = (colour @ _LUMA)[..., None]
    return np.concatenate([colour, alpha], axis=-1) if target.endswith("A") else colour


def _to_tensor(image: Image.Image | np.ndarray) -> Tensor:
    if isinstance(image, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32))
    pixels = np.array(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy()).float().div_(255.0)


def check_image(data: bytes, name: str) -> None:
    """Decode ``data`` fully: a one-line :class:`ConfigError` naming ``name`` unless it is a usable image."""
    try:
        if _is_16bit_png(data):
            _decode_16bit_png(data)
            return
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            mode = image.mode
    except _DECODE_ERRORS as exc:
        raise ConfigError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from exc
    if mode in ("I", "F"):
        raise ConfigError(f"{name}: 32-bit {mode!r} pixels are not supported; store 8- or 16-bit images")


def dynamic_binarize(batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """A fresh Bernoulli draw of each pixel intensity."""
    return torch.bernoulli(batch, generator=generator)
