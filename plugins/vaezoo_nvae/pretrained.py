"""The published NVAE weights: the pretrained table behind ``vaezoo.load("nvae-...")``.

Each entry names the Hub repo that holds the converted official checkpoint (``vaezoo convert nvlabs ...``
then ``vaezoo push ... --pretrained NAME``) with its provenance. The metric of each entry is the paper's
number (Table 1 of Vahdat & Kautz, NeurIPS 2020), labelled as such: it was not measured on the converted
weights. ``revision`` stays "main" until a commit is pinned.

The NVAE plugin registers the table with ``register_pretrained = hookimpl(pretrained.register_pretrained)``.
"""

from __future__ import annotations

SOURCE = "converted from the official NVlabs checkpoint"
LICENSE = "NVIDIA Source Code License (non-commercial); converted weights keep it"
LICENSE_LINK = "https://github.com/NVlabs/NVAE/blob/master/LICENSE"
PROTOCOL = "test-set negative log-likelihood, importance-weighted estimate with 1000 samples"
METRIC_SOURCE = "paper, Table 1"

#: name -> (Hub repo, preset, dataset, NLL value, unit)
TABLE: dict[str, tuple[str, str, str, float, str]] = {
    "nvae-mnist": ("vaezoo/nvae-mnist", "nvae-mnist", "MNIST 28x28 (dynamically binarized)", 78.01, "nats"),
    "nvae-cifar10": ("vaezoo/nvae-cifar10", "nvae-cifar10", "CIFAR-10 32x32", 2.91, "bits/dim"),
    "nvae-celeba64": ("vaezoo/nvae-celeba64", "nvae-celeba64", "CelebA 64x64", 2.03, "bits/dim"),
    "nvae-celebahq": ("vaezoo/nvae-celebahq256", "nvae-celebahq256", "CelebA HQ 256x256 (5-bit)", 0.70, "bits/dim"),
    "nvae-ffhq": ("vaezoo/nvae-ffhq256", "nvae-ffhq256", "FFHQ 256x256 (5-bit)", 0.69, "bits/dim"),
}


def register_pretrained(register) -> None:
    """The ``register_pretrained`` hook body: one ``register(name, **metadata)`` call per published model."""
    for name, (repo_id, preset, dataset, value, unit) in TABLE.items():
        register(
            name,
            repo_id=repo_id,
            revision="main",
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
