"""The published NVAE weights: the pretrained table behind ``vaezoo.load("nvae-...")``.

NVIDIA publishes the official checkpoints on Google Drive (linked from the NVlabs/NVAE README) under a
non-commercial licence. Each entry records where (``checkpoint_url``, ``checkpoint_page``) and the converter
that installs one under the entry's name (``vaezoo convert nvlabs checkpoint.pt --pretrained NAME``: the
checkpoint's arguments are checked against the entry's preset first). Each entry also names a Hub repo for
converted weights (``vaezoo push ... --pretrained NAME``), looked for after the local store and the cache. The metric of each entry is the paper's
number (Table 1 of Vahdat & Kautz, NeurIPS 2020), labelled as such: it was not measured on the converted
weights. ``revision`` stays "main" until a commit is pinned.

One model ships with the package: ``nvae-mnist-small`` (:data:`BUNDLED`), the quickstart's small NVAE trained by
``vaezoo fit recipes/nvae_mnist_small.yaml`` (``benchmarks/reproduce_pretrained.py`` trains it again). Its saved-model
folder lies in ``weights/nvae-mnist-small/`` of this package, so ``vaezoo.load("nvae-mnist-small")`` works offline
right after installation; its card metadata (the metrics that fit measured, with their protocol, and the run's
provenance) is read from that folder's config.json.

The NVAE plugin registers the table with ``register_pretrained = hookimpl(pretrained.register_pretrained)``.
"""

from __future__ import annotations

import json
from importlib import resources

SOURCE = "converted from the official NVlabs checkpoint"
LICENSE = "NVIDIA Source Code License (non-commercial); converted weights keep it"
LICENSE_LINK = "https://github.com/NVlabs/NVAE/blob/master/LICENSE"
PROTOCOL = "test-set negative log-likelihood, importance-weighted estimate with 1000 samples"
METRIC_SOURCE = "paper, Table 1"
#: where NVIDIA publishes the official checkpoints (one Google Drive folder, a subfolder per data set)
CHECKPOINT_URL = "https://drive.google.com/drive/folders/1KVpw12AzdVjvbfEYM_6_3sxTy93wWkbe"
CHECKPOINT_PAGE = "https://github.com/NVlabs/NVAE#running-the-main-nvae-training-and-evaluation-scripts"
CONVERTER = "nvlabs"

#: name -> (Hub repo, preset, dataset, NLL value, unit)
TABLE: dict[str, tuple[str, str, str, float, str]] = {
    "nvae-mnist": ("vaezoo/nvae-mnist", "nvae-mnist", "MNIST 28x28 (dynamically binarized)", 78.01, "nats"),
    "nvae-cifar10": ("vaezoo/nvae-cifar10", "nvae-cifar10", "CIFAR-10 32x32", 2.91, "bits/dim"),
    "nvae-celeba64": ("vaezoo/nvae-celeba64", "nvae-celeba64", "CelebA 64x64", 2.03, "bits/dim"),
    "nvae-celebahq": ("vaezoo/nvae-celebahq256", "nvae-celebahq256", "CelebA HQ 256x256 (5-bit)", 0.70, "bits/dim"),
    "nvae-ffhq": ("vaezoo/nvae-ffhq256", "nvae-ffhq256", "FFHQ 256x256 (5-bit)", 0.69, "bits/dim"),
}


#: name -> folder inside this package: saved models that ship with it (card keys read from their config.json)
BUNDLED: dict[str, str] = {"nvae-mnist-small": "weights/nvae-mnist-small"}
_CARD_KEYS = ("preset", "description", "source", "license", "license_link", "dataset", "metrics")


def bundled_card(folder: str) -> dict:
    """The card keys of a bundled saved model's config.json; none when it cannot be read (the hub then says what is
    missing when the model is loaded: registering never fails)."""
    try:
        config = json.loads(resources.files(__package__).joinpath(f"{folder}/config.json").read_text(encoding="utf-8"))
        metadata = config["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {key: metadata[key] for key in _CARD_KEYS if key in metadata} if isinstance(metadata, dict) else {}


def register_pretrained(register) -> None:
    """The ``register_pretrained`` hook body: one ``register(name, **metadata)`` call per published model."""
    for name, folder in BUNDLED.items():
        register(name, **{"preset": name, **bundled_card(folder), "bundled": f"{__package__}:{folder}"})
    for name, (repo_id, preset, dataset, value, unit) in TABLE.items():
        register(
            name,
            repo_id=repo_id,
            revision="main",
            converter=CONVERTER,
            checkpoint_url=CHECKPOINT_URL,
            checkpoint_page=CHECKPOINT_PAGE,
            preset=preset,
            description=f"NVAE trained on {dataset} ({SOURCE})",
            source=SOURCE,
            license=LICENSE,
            license_link=LICENSE_LINK,
            dataset=dataset,
            metrics=[
                {
                    "name": "NLL",
                    "value": value,
                    "unit": unit,
                    "split": "test",
                    "protocol": PROTOCOL,
                    "source": METRIC_SOURCE,
                }
            ],
        )
