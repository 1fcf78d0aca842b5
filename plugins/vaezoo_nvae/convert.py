"""Import official NVlabs/NVAE ``train.py`` checkpoints.

The checkpoint is read with ``torch.load(weights_only=True)``, allowing only ``argparse.Namespace`` besides tensors
and plain containers. The architecture is rebuilt from the stored training arguments
(:func:`vaezoo_nvae.presets.spec_from_official_args`), every state_dict key is renamed to ours
(:func:`map_official_key`; ``*.weight_normalized`` aliases are dropped, autoregressive masks are rebuilt by the
model), and the result is written as a vaezoo model folder (``vaezoo.load("local-dir:...")`` reads it).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from vaezoo.errors import CheckpointError, ConfigError

from .presets import spec_from_official_args

#: official top-level prefixes whose children are cells, and our names for them
_CELL_LISTS = {
    "pre_process": "preprocess",
    "enc_tower": "encoder_tower",
    "dec_tower": "decoder_tower",
    "post_process": "postprocess",
}
#: inverted-residual sub-module index (without the leading up-sampling) -> our name
_INVERTED_RESIDUAL = {0: "bn_in", 1: "expand", 2: "depthwise", 3: "project", 4: "bn_out"}
_ALIAS_SUFFIX = ".weight_normalized"


def _cell_key(rest: str, up_cell: bool) -> str | None:
    """Map a key inside an official cell (after ``<list>.<index>.``) to ours."""
    if m := re.fullmatch(r"skip\.conv_([1-4])\.(\w+)", rest):
        return f"skip.convs.{int(m.group(1)) - 1}.{m.group(2)}"
    if m := re.fullmatch(r"skip\.1\.(\w+)", rest):
        return f"skip.conv.{m.group(1)}"
    if m := re.fullmatch(r"_ops\.(\d+)\.bn_act\.(\w+)", rest):
        return f"ops.{m.group(1)}.bn_act.bn.{m.group(2)}"
    if m := re.fullmatch(r"_ops\.(\d+)\.conv_0\.(\w+)", rest):
        return f"ops.{m.group(1)}.conv.{m.group(2)}"
    if m := re.fullmatch(r"se\.se\.([02])\.(\w+)", rest):
        return f"se.fc{1 if m.group(1) == '0' else 2}.{m.group(2)}"
    if m := re.fullmatch(r"conv\.(weight|bias|log_weight_norm)", rest):  # encoder / decoder combiners
        return rest
    if m := re.fullmatch(r"_ops\.0\.conv\.(\d+)\.(.+)", rest):  # inverted residual (decoder / post-processing)
        index = int(m.group(1)) - (1 if up_cell else 0)  # up cells start with a parameter-free up-sampling
        part, tail = _INVERTED_RESIDUAL.get(index), m.group(2)
        if part in ("bn_in", "bn_out") and (t := re.fullmatch(r"bn\.(\w+)", tail)):
            return f"ops.{part}.{t.group(1)}"
        if part in ("expand", "depthwise"):
            if t := re.fullmatch(r"conv\.0\.(weight)", tail):
                return f"ops.{part}.conv.{t.group(1)}"
            if t := re.fullmatch(r"conv\.1\.(\w+)", tail):
                return f"ops.{part}.bn_act.bn.{t.group(1)}"
        if part == "project" and tail == "weight":
            return "ops.project.weight"
    return None


def map_official_key(key: str, up_cells: Iterable[str] = ()) -> str:
    """Our state_dict key for an official one. ``up_cells`` holds the ``<list>.<index>`` prefixes of up-sampling
    cells (see :func:`official_key_map`). Raises :class:`CheckpointError` for a key with no counterpart."""
    up_cells = set(up_cells)
    if key == "prior_ftr0":
        return "decoder_input"
    if m := re.fullmatch(r"stem\.(\w+)", key):
        return f"stem.conv.{m.group(1)}"
    if m := re.fullmatch(r"enc0\.1\.(\w+)", key):
        return f"encoder_head.conv.{m.group(1)}"
    if m := re.fullmatch(r"image_conditional\.1\.(\w+)", key):
        return f"decoder_head.conv.{m.group(1)}"
    if m := re.fullmatch(r"enc_sampler\.(\d+)\.(\w+)", key):
        return f"posteriors.{m.group(1)}.conv.{m.group(2)}"
    if m := re.fullmatch(r"dec_sampler\.(\d+)\.1\.(\w+)", key):
        return f"priors.{int(m.group(1)) + 1}.conv.{m.group(2)}"  # priors[0] is the fixed top prior
    if m := re.fullmatch(r"nf_cells\.(\d+)\.cell([12])\.(conv\.convz\.0|conv\.convz\.2|mu\.conv_0)\.(\w+)", key):
        part = {"conv.convz.0": "in_conv", "conv.convz.2": "depthwise", "mu.conv_0": "mu"}[m.group(3)]
        return f"flows.{m.group(1)}.cells.{int(m.group(2)) - 1}.{part}.{m.group(4)}"
    if m := re.fullmatch(r"(pre_process|enc_tower|dec_tower|post_process)\.(\d+)\.(.+)", key):
        mapped = _cell_key(m.group(3), f"{m.group(1)}.{m.group(2)}" in up_cells)
        if mapped is not None:
            return f"{_CELL_LISTS[m.group(1)]}.{m.group(2)}.{mapped}"
    raise CheckpointError(f"official NVAE state_dict key {key!r} has no counterpart in vaezoo's NVAE")


def official_key_map(keys: Iterable[str]) -> dict[str, str | None]:
    """Official key -> our key, or None for a ``*.weight_normalized`` alias (dropped). Raises on unknown keys."""
    keys = list(keys)
    key_set = set(keys)
    # up-sampling cells are the cells whose skip path is Sequential(up-sampling, conv)
    up_cells = {
        m.group(1) for k in keys if (m := re.fullmatch(r"((?:dec_tower|post_process)\.\d+)\.skip\.1\.weight", k))
    }
    out: dict[str, str | None] = {}
    for key in keys:
        if key.endswith(_ALIAS_SUFFIX):
            original = key[: -len(_ALIAS_SUFFIX)] + ".weight"
            if original not in key_set:
                raise CheckpointError(f"official NVAE state_dict key {key!r} aliases {original!r}, which is missing")
            out[key] = None
            continue
        out[key] = map_official_key(key, up_cells)
    return out


def map_official_state_dict(state_dict: Mapping[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename an official state_dict to ``model``'s keys, checking that every key and shape matches."""
    mapping = official_key_map(state_dict.keys())
    ours = model.state_dict()
    out: dict[str, Tensor] = {}
    for key, target in mapping.items():
        if target is None:
            original = state_dict[key[: -len(_ALIAS_SUFFIX)] + ".weight"]
            if state_dict[key].shape != original.shape or (
                state_dict[key].device.type != "meta" and not torch.equal(state_dict[key], original)
            ):
                raise CheckpointError(f"official NVAE state_dict key {key!r} differs from the weight it should alias")
            continue
        if target not in ours:
            raise CheckpointError(f"official NVAE state_dict key {key!r} maps to {target!r}, which the model lacks")
        if tuple(state_dict[key].shape) != tuple(ours[target].shape):
            raise CheckpointError(
                f"official NVAE state_dict key {key!r} has shape {tuple(state_dict[key].shape)}, "
                f"the model's {target!r} has {tuple(ours[target].shape)}"
            )
        if target in out:
            raise CheckpointError(f"official NVAE state_dict keys map twice to {target!r}")
        out[target] = state_dict[key]
    missing = [k for k in ours if k not in out]
    if missing:
        raise CheckpointError(f"the official NVAE checkpoint lacks {len(missing)} model entries, first {missing[0]!r}")
    return out


def load_official_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an official ``checkpoint.pt`` safely: tensors, containers and ``argparse.Namespace`` only."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors name the refused global in a long message
        first = " ".join(str(exc).split())[:300]
        raise CheckpointError(
            f"{path}: refused to load (only tensors and argparse.Namespace are allowed): {first}"
        ) from exc
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise CheckpointError(f"{path}: not an official NVAE checkpoint (no 'state_dict' mapping)")
    args = checkpoint.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if not isinstance(args, dict):
        raise CheckpointError(f"{path}: not an official NVAE checkpoint (no 'args' namespace)")
    return {**checkpoint, "args": dict(args)}


def model_from_official_checkpoint(checkpoint: str | Path | Mapping[str, Any]) -> nn.Module:
    """The vaezoo model of an official checkpoint (a path, or what :func:`load_official_checkpoint` returned), with
    its weights, in eval mode; the official arguments are kept in ``model.official_args``."""
    import vaezoo

    where = str(checkpoint) if isinstance(checkpoint, (str, Path)) else "official checkpoint"
    if isinstance(checkpoint, (str, Path)):
        checkpoint = load_official_checkpoint(checkpoint)
    try:
        model = vaezoo.build(spec_from_official_args(checkpoint["args"]))
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    try:
        state = map_official_state_dict(checkpoint["state_dict"], model)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    model.load_state_dict(state, strict=True)
    model.official_args = dict(checkpoint["args"])
    return model.eval()


#: spec path (see :func:`vaezoo.hub.installing.spec_differences`) -> the official argument that sets it
_OFFICIAL_ARGUMENTS = {
    "image_shape": "dataset",
    "likelihood": "dataset",
    "likelihood.crop": "dataset",
    "likelihood.num_bits": "num_x_bits",
    "likelihood.num_mixtures": "num_mixture_dec",
    "encoder_channels": "num_channels_enc",
    "decoder_channels": "num_channels_dec",
    "latent_channels": "num_latent_per_group",
    "num_latent_scales": "num_latent_scales",
    "groups_per_scale": "num_groups_per_scale",
    "adaptive_groups": "ada_groups",
    "min_groups_per_scale": "min_groups_per_scale",
    "encoder_cells_per_group": "num_cell_per_cond_enc",
    "decoder_cells_per_group": "num_cell_per_cond_dec",
    "preprocess_blocks": "num_preprocess_blocks",
    "preprocess_cells": "num_preprocess_cells",
    "postprocess_blocks": "num_postprocess_blocks",
    "postprocess_cells": "num_postprocess_cells",
    "num_flows": "num_nf",
    "flow": "num_nf",
    "posterior": "res_dist",
}


def official_argument_name(path: str) -> str | None:
    """The official ``train.py`` argument behind a spec path, e.g. ``encoder_channels`` -> ``num_channels_enc``."""
    if path in _OFFICIAL_ARGUMENTS:
        return _OFFICIAL_ARGUMENTS[path]
    if path.endswith(".use_se"):
        return "use_se"
    return None


def official_checkpoint_spec(checkpoint: str | Path) -> dict:
    """The vaezoo spec that an official checkpoint's stored training arguments describe."""
    where = str(checkpoint)
    args = load_official_checkpoint(checkpoint)["args"]
    try:
        return spec_from_official_args(args)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


def convert_nvlabs_checkpoint(checkpoint: str | Path, out_dir: str | Path) -> Path:
    """Convert an official NVlabs/NVAE ``checkpoint.pt`` into a vaezoo model folder; returns the folder."""
    from vaezoo.hub import save_pretrained

    source = Path(checkpoint)
    raw = load_official_checkpoint(source)
    model = model_from_official_checkpoint(raw)
    args = raw["args"]
    return save_pretrained(
        model,
        out_dir,
        description=f"NVAE ({args.get('dataset')}) converted from an official NVlabs/NVAE checkpoint",
        source=f"NVlabs/NVAE train.py checkpoint {source.name} (epoch {raw.get('epoch')}, global step {raw.get('global_step')})",
        license="NVIDIA Source Code License (non-commercial)",
        license_link="https://github.com/NVlabs/NVAE/blob/master/LICENSE",
        dataset=str(args.get("dataset")),
    )
