"""Inception-v3 features for FID and KID, through torch-fidelity (``pip install -e ".[fid]"``).

FID is defined with one network: the 2015-12-05 Inception-v3 TensorFlow graph, ported to PyTorch as
``pt_inception-2015-12-05-6726825d.pth`` by pytorch-fid (torch-fidelity publishes the same file). Its weights cannot be
downloaded here (vaezoo never downloads at evaluation time): the user supplies the file, by ``--fid_weights PATH`` or
``$VAEZOO_FID_WEIGHTS``; a missing file is refused in one line naming where it is published and where to put it,
before anything slow happens. The file is read with ``torch.load(weights_only=True)`` first (a file holding code is
refused), then handed to torch-fidelity's network, which reads it again.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vaezoo.errors import VaezooError
from vaezoo.interfaces import Example, FeatureExtractor

from .digits import file_sha256

WEIGHTS_ENV = "VAEZOO_FID_WEIGHTS"
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_NAME}"
#: the same weights as torch-fidelity publishes them
WEIGHTS_MIRROR = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
RESIZE_RULE = (
    "grey repeated to 3 channels; quantised to 8 bits (round(255 x), as a saved PNG); resized to 299x299 by "
    "torch-fidelity's TensorFlow-1-compatible bilinear interpolation; scaled to [-1, 1]"
)


def weights_path(weights: str | None) -> Path:
    """The weights file from the option, else ``$VAEZOO_FID_WEIGHTS``; one line saying where to get it when neither
    names an existing file."""
    given = weights or os.environ.get(WEIGHTS_ENV) or None
    if given is None:
        raise VaezooError(
            f"Inception weights needed for FID/KID: download {WEIGHTS_NAME} from {WEIGHTS_URL} and pass "
            f"--fid_weights PATH or set {WEIGHTS_ENV}=PATH (vaezoo downloads nothing)"
        )
    path = Path(given).expanduser()
    if not path.is_file():
        source = "--fid_weights" if weights else f"${WEIGHTS_ENV}"
        raise VaezooError(
            f"Inception weights {path} ({source}) not found: download {WEIGHTS_NAME} from {WEIGHTS_URL} and put it there"
        )
    return path


class InceptionV3(FeatureExtractor):
    """The 2048 pool features of the FID Inception-v3 (torch-fidelity's port), from a user-supplied weights file."""

    metric = "fid"
    kid_metric = "kid"
    prc_metric = "prc"
    label = "FID: Fréchet distance in the pool features of the FID Inception-v3 (2015-12-05 graph)"
    feature_dim = 2048

    def __init__(self, weights: str | None = None) -> None:
        super().__init__()
        path = weights_path(weights)
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as exc:
            raise VaezooError(
                f"FID needs torch-fidelity: pip install 'vaezoo[fid]' ({type(exc).__name__}: {exc})"
            ) from exc
        try:  # only tensors: a file that would run code when unpickled is refused here, before torch-fidelity reads it
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - one line whatever the reason
            raise VaezooError(f"{path}: not a readable Inception state dict ({str(exc).splitlines()[0]})") from exc
        if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
            raise VaezooError(f"{path}: not the FID Inception-v3 weights ({WEIGHTS_NAME} from {WEIGHTS_URL})")
        try:
            self.net = FeatureExtractorInceptionV3(
                "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
            )
        except Exception as exc:  # noqa: BLE001 - keys or shapes that do not fit the network
            raise VaezooError(f"{path}: does not fit the FID Inception-v3 ({str(exc).splitlines()[0]})") from exc
        self.weights_path = path
        self.weights_sha256 = file_sha256(path)
        self.eval()

    @classmethod
    def open(cls, weights: str | None = None) -> InceptionV3:
        return cls(weights).eval()

    def forward(self, images: Tensor) -> Tensor:
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise VaezooError(f"InceptionV3 takes grey or RGB images, got {x.shape[1]} channels")
        pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
        (features,) = self.net(pixels.to(next(self.net.parameters()).device))
        return features

    def protocol(self) -> dict[str, Any]:
        return {
            "name": "InceptionV3",
            "weights": self.weights_path.name,
            "weights_sha256": self.weights_sha256,
            "resize": RESIZE_RULE,
            "features": f"{self.feature_dim}-d pool3 features of torch-fidelity's FID Inception-v3 ({WEIGHTS_NAME})",
        }

    @classmethod
    def example(cls) -> Example:
        return Example(
            build=lambda: cls(str(random_weights_file())), inputs=(torch.rand(1, 1, 8, 8),), output_shape=(1, 2048)
        )


@lru_cache(maxsize=1)
def random_weights_file() -> Path:
    """A randomly initialised network of the FID Inception's architecture, saved as a state dict (seeded; for tests:
    torchvision's Inception-v3 with 1008 classes and no auxiliary head has the port's keys and shapes). Removed at
    exit."""
    import torchvision

    folder = Path(tempfile.mkdtemp(prefix="vaezoo-inception-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    # on the CPU whatever the caller's default device (a file of meta tensors would hold no weights, and it is cached)
    with torch.random.fork_rng(), torch.device("cpu"):
        torch.manual_seed(0)
        net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    path = folder / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path
