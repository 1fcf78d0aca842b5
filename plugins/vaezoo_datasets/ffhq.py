"""FFHQ at 256x256, as NVAE uses it: resized faces, 63,000 train / 7,000 test for the full set.

The official script splits FFHQ with an unseeded permutation; here the split is seeded and written
next to the images (``train.txt``/``test.txt``), so it is the same on every machine.
"""

from __future__ import annotations

from .celeba import RawRGBFaces


class FFHQ256(RawRGBFaces):
    """FFHQ at 256x256 (NVAE): resized faces, 63,000 train / 7,000 test for the full set (seeded); flips for training."""

    title = "FFHQ 256"
    official_split = (63000, 7000)
    prepare_name = "ffhq256"
    source_hint = (
        "Expected a folder of FFHQ images (e.g. images1024x1024/ of https://github.com/NVlabs/ffhq-dataset, searched "
        "recursively), or the official LMDB layout (ROOT/train.lmdb and ROOT/validation.lmdb, raw RGB values under keys "
        "'0', '1', ...) as written by `vaezoo data prepare ffhq256 SOURCE DEST`"
    )
