"""NVAE model specs: the paper's configurations, small ones for tests, and the mapping from the official
training arguments (as stored in official checkpoints) to a vaezoo spec.

A spec is ``{"class_path": "HierarchicalVAE", "init_args": {...}}``; every sub-component is a nested spec naming a
registered class, so a recipe can swap any one of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from vaezoo.errors import ConfigError
from vaezoo.models import hierarchical_spec, preset_factory

#: the official arguments that change the model, with the defaults of the official argument parser
OFFICIAL_MODEL_ARG_DEFAULTS: dict[str, Any] = {
    "arch_instance": "res_mbconv",
    "num_channels_enc": 32,
    "num_channels_dec": 32,
    "num_latent_scales": 1,
    "num_groups_per_scale": 10,
    "ada_groups": False,
    "min_groups_per_scale": 1,
    "num_latent_per_group": 20,
    "num_cell_per_cond_enc": 1,
    "num_cell_per_cond_dec": 1,
    "num_preprocess_blocks": 2,
    "num_preprocess_cells": 3,
    "num_postprocess_blocks": 2,
    "num_postprocess_cells": 3,
    "num_nf": 0,
    "use_se": False,
    "res_dist": False,
    "num_x_bits": 8,
    "num_mixture_dec": 10,
}


def dataset_geometry(dataset: str) -> tuple[int, int]:
    """``(channels, image size)`` of the model input for an official ``--dataset`` name."""
    if dataset in ("mnist", "omniglot"):
        return 1, 32  # 28x28 padded by 2 on each side
    if dataset == "cifar10":
        return 3, 32
    if dataset == "ffhq":
        return 3, 256
    match = re.fullmatch(r"(celeba|imagenet|lsun_\w+?)_(\d+)", dataset)
    if match:
        return 3, int(match.group(2))
    raise ConfigError(
        f"unsupported NVAE dataset {dataset!r} (known: mnist, omniglot, cifar10, celeba_N, imagenet_N, lsun_*_N, ffhq)"
    )


def likelihood_spec(dataset: str, num_mixture_dec: int = 10, num_x_bits: int = 8) -> dict:
    channels, _ = dataset_geometry(dataset)
    if channels == 1:
        return {"class_path": "BernoulliLikelihood", "init_args": {"crop": 2}}
    if num_mixture_dec == 1:
        return {"class_path": "SoftClampedNormalLikelihood", "init_args": {"num_bits": num_x_bits}}
    return {
        "class_path": "DiscretizedLogisticMixture",
        "init_args": {"num_mixtures": num_mixture_dec, "num_bits": num_x_bits},
    }


def nvae_spec(
    *,
    image_shape: list[int],
    likelihood: dict,
    channels_enc: int,
    channels_dec: int,
    num_latent_scales: int,
    groups_per_scale: int | list[int],
    ada_groups: bool = False,
    min_groups_per_scale: int = 1,
    latent_per_group: int = 20,
    cells_per_group_enc: int = 2,
    cells_per_group_dec: int = 2,
    preprocess_blocks: int = 1,
    preprocess_cells: int = 2,
    postprocess_blocks: int = 1,
    postprocess_cells: int = 2,
    num_nf: int = 0,
    use_se: bool = True,
    res_dist: bool = True,
) -> dict:
    """The spec of an NVAE with the given architecture knobs (names follow the paper's hyper-parameters)."""
    residual = {"use_se": use_se, "residual_scale": 0.1}
    components = {
        "likelihood": likelihood,
        "preprocess_cell": {"class_path": "ResidualCell", "init_args": residual},
        "encoder_cell": {"class_path": "ResidualCell", "init_args": residual},
        "posterior": {"class_path": "ResidualNormalPosterior" if res_dist else "NormalPosterior"},
        "top_prior": {"class_path": "FixedNormalPrior"},
        "decoder_cell": {"class_path": "DepthwiseResidualCell", "init_args": {"expansion": 6.0, **residual}},
        "postprocess_cell": {"class_path": "DepthwiseResidualCell", "init_args": {"expansion": 3.0, **residual}},
        "flow": {"class_path": "PairedAutoregressiveFlow"} if num_nf else None,
    }
    return hierarchical_spec(
        components, image_shape=image_shape, num_flows=num_nf, encoder_channels=channels_enc,
        decoder_channels=channels_dec, latent_channels=latent_per_group, num_latent_scales=num_latent_scales,
        groups_per_scale=groups_per_scale, adaptive_groups=ada_groups, min_groups_per_scale=min_groups_per_scale,
        encoder_cells_per_group=cells_per_group_enc, decoder_cells_per_group=cells_per_group_dec,
        preprocess_blocks=preprocess_blocks, preprocess_cells=preprocess_cells, postprocess_blocks=postprocess_blocks,
        postprocess_cells=postprocess_cells,
    )  # fmt: skip


def spec_from_official_args(args: dict[str, Any]) -> dict:
    """The vaezoo spec of the model that the official code builds from its training arguments.

    Arguments that old checkpoints lack take the official defaults (``ada_groups`` False, ``min_groups_per_scale``
    1, ``num_mixture_dec`` 10, ...).
    """
    a = {**OFFICIAL_MODEL_ARG_DEFAULTS, **{k: v for k, v in args.items() if v is not None}}
    if "dataset" not in a:
        raise ConfigError("official NVAE arguments lack 'dataset'")
    if a["arch_instance"] != "res_mbconv":
        raise ConfigError(
            f"only the res_mbconv NVAE architecture is supported, got arch_instance {a['arch_instance']!r}"
        )
    if a["num_latent_scales"] == 1 and a["num_groups_per_scale"] == 1:
        raise ConfigError(
            "the single-group NVAE variant (num_latent_scales 1, num_groups_per_scale 1) is not supported"
        )
    channels, size = dataset_geometry(a["dataset"])
    return nvae_spec(
        image_shape=[channels, size, size],
        likelihood=likelihood_spec(a["dataset"], int(a["num_mixture_dec"]), int(a["num_x_bits"])),
        channels_enc=int(a["num_channels_enc"]),
        channels_dec=int(a["num_channels_dec"]),
        num_latent_scales=int(a["num_latent_scales"]),
        groups_per_scale=int(a["num_groups_per_scale"]),
        ada_groups=bool(a["ada_groups"]),
        min_groups_per_scale=int(a["min_groups_per_scale"]),
        latent_per_group=int(a["num_latent_per_group"]),
        cells_per_group_enc=int(a["num_cell_per_cond_enc"]),
        cells_per_group_dec=int(a["num_cell_per_cond_dec"]),
        preprocess_blocks=int(a["num_preprocess_blocks"]),
        preprocess_cells=int(a["num_preprocess_cells"]),
        postprocess_blocks=int(a["num_postprocess_blocks"]),
        postprocess_cells=int(a["num_postprocess_cells"]),
        num_nf=int(a["num_nf"]),
        use_se=bool(a["use_se"]),
        res_dist=bool(a["res_dist"]),
    )


def objective_spec_from_official_args(args: dict[str, Any]) -> dict:
    """The NVAEObjective spec matching the official loss settings (KL schedule and regulariser weight)."""
    anneal = bool(args.get("weight_decay_norm_anneal", False))
    return {
        "class_path": "NVAEObjective",
        "init_args": {
            "kl_anneal_portion": float(args.get("kl_anneal_portion", 0.3)),
            "kl_const_portion": float(args.get("kl_const_portion", 1e-4)),
            "kl_const_coeff": float(args.get("kl_const_coeff", 1e-4)),
            "regularization_weight": float(args.get("weight_decay_norm", 0.0)),
            "regularization_weight_init": float(args["weight_decay_norm_init"]) if anneal else None,
        },
    }


# The README training commands of the official implementation (architecture arguments only; all use SE and the
# residual posterior).
_PAPER: dict[str, dict[str, Any]] = {
    "nvae-mnist": dict(
        dataset="mnist", num_channels_enc=32, num_channels_dec=32, num_latent_scales=2, num_groups_per_scale=10,
        ada_groups=True, num_preprocess_blocks=2, num_preprocess_cells=3, num_postprocess_blocks=2,
        num_postprocess_cells=3, num_nf=0,
    ),
    "nvae-cifar10": dict(
        dataset="cifar10", num_channels_enc=128, num_channels_dec=128, num_latent_scales=1, num_groups_per_scale=30,
        num_preprocess_blocks=1, num_preprocess_cells=2, num_postprocess_blocks=1, num_postprocess_cells=2, num_nf=1,
    ),
    "nvae-celeba64": dict(
        dataset="celeba_64", num_channels_enc=64, num_channels_dec=64, num_latent_scales=3, num_groups_per_scale=20,
        ada_groups=True, num_preprocess_blocks=1, num_preprocess_cells=2, num_postprocess_blocks=1,
        num_postprocess_cells=2, num_nf=1,
    ),
    "nvae-imagenet32": dict(
        dataset="imagenet_32", num_channels_enc=192, num_channels_dec=192, num_latent_scales=1, num_groups_per_scale=28,
        num_preprocess_blocks=1, num_preprocess_cells=2, num_postprocess_blocks=1, num_postprocess_cells=2, num_nf=1,
    ),
    "nvae-celebahq256": dict(
        dataset="celeba_256", num_channels_enc=30, num_channels_dec=30, num_latent_scales=5, num_groups_per_scale=16,
        ada_groups=True, min_groups_per_scale=4, num_preprocess_blocks=1, num_preprocess_cells=2,
        num_postprocess_blocks=1, num_postprocess_cells=2, num_nf=2, num_x_bits=5,
    ),
    "nvae-ffhq256": dict(
        dataset="ffhq", num_channels_enc=30, num_channels_dec=30, num_latent_scales=5, num_groups_per_scale=16,
        ada_groups=True, min_groups_per_scale=4, num_preprocess_blocks=1, num_preprocess_cells=2,
        num_postprocess_blocks=1, num_postprocess_cells=2, num_nf=2, num_x_bits=5,
    ),
}  # fmt: skip
_PAPER_COMMON = dict(
    num_latent_per_group=20, num_cell_per_cond_enc=2, num_cell_per_cond_dec=2, use_se=True, res_dist=True
)

_DESCRIPTIONS = {
    "nvae-mnist": "NVAE for binarised MNIST (padded to 32x32, Bernoulli on the 28x28 crop), 33.4M parameters",
    "nvae-cifar10": "NVAE for CIFAR-10 (one 16x16 latent scale of 30 groups, 1 IAF per group), 130.9M parameters",
    "nvae-celeba64": "NVAE for CelebA 64x64 (3 latent scales, 20/10/5 groups), 153.3M parameters",
    "nvae-imagenet32": "NVAE for ImageNet 32x32 (one latent scale of 28 groups, 192 channels), 268.5M parameters",
    "nvae-celebahq256": "NVAE for CelebA-HQ 256x256 (5-bit data, 5 latent scales, 2 IAFs per group), 330.8M parameters",
    "nvae-ffhq256": "NVAE for FFHQ 256x256 (5-bit data, same architecture as CelebA-HQ), 330.8M parameters",
}

#: the small configurations (tests and quick runs)
_SMALL: dict[str, tuple[dict, str]] = {
    "nvae-mnist-small": (
        dict(
            image_shape=[1, 32, 32], likelihood=likelihood_spec("mnist"), channels_enc=8, channels_dec=8,
            num_latent_scales=2, groups_per_scale=4, ada_groups=True, latent_per_group=16, cells_per_group_enc=1,
            cells_per_group_dec=1, preprocess_blocks=2, preprocess_cells=1, postprocess_blocks=2, postprocess_cells=1,
            num_nf=1,
        ),
        "a small NVAE for padded MNIST: 8 channels, 2 latent scales with 4 and 2 groups of 16 channels, 1 IAF per group",
    ),
    "test-nvae": (
        dict(
            image_shape=[1, 8, 8], likelihood={"class_path": "BernoulliLikelihood", "init_args": {"crop": 0}},
            channels_enc=2, channels_dec=2, num_latent_scales=2, groups_per_scale=2, ada_groups=True,
            latent_per_group=2, cells_per_group_enc=1, cells_per_group_dec=1, preprocess_blocks=1,
            preprocess_cells=1, postprocess_blocks=1, postprocess_cells=1, num_nf=1,
        ),
        "a tiny NVAE with flows for tests (8x8 binary images)",
    ),
}  # fmt: skip


def paper_spec(name: str) -> dict:
    return spec_from_official_args({**_PAPER_COMMON, **_PAPER[name]})


def preset_factories() -> dict[str, tuple[Callable[..., dict], str]]:
    """``name -> (factory(**overrides) -> spec, description)`` for every NVAE preset."""
    out: dict[str, tuple[Callable[..., dict], str]] = {}
    for name in _PAPER:
        out[name] = (preset_factory(paper_spec, name=name), _DESCRIPTIONS[name])
    for name, (kwargs, description) in _SMALL.items():
        out[name] = (preset_factory(nvae_spec, **kwargs), description)
    return out


def tiny_model():
    """A ``test-nvae`` model (for the contract examples)."""
    import vaezoo

    return vaezoo.create("test-nvae")
