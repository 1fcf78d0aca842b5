"""Opening the thing a user names on the command line: a run directory, a model folder or a name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import CheckpointError, ConfigError, VaezooError


def open_model(target: str, device: str = "cpu") -> tuple[Any, dict | None]:
    """Return ``(model, data_spec)``: ``data_spec`` is the run's data section when ``target`` is a run."""
    from ..config import build
    from ..hub import load

    path = Path(target).expanduser()
    if path.is_dir() and (path / "config.yaml").is_file():  # a run directory written by vaezoo fit
        recipe = _read_recipe(path / "config.yaml")
        if (path / "model" / "config.json").is_file():
            model = load(f"local-dir:{path / 'model'}", device=device)
        else:
            from ..training.checkpoint import list_checkpoints, load_checkpoint

            found = list_checkpoints(path / "checkpoints")
            if not found:
                raise CheckpointError(f"run {path} has neither a saved model nor a checkpoint")
            model = build(recipe["model"])
            model.load_state_dict(load_checkpoint(found[-1][1])["model"])
            model.to(device).eval()
        return model, recipe.get("data")
    if path.is_dir() and (path / "config.json").is_file():
        return load(f"local-dir:{path}", device=device), None
    if path.suffix in (".pt", ".pth", ".ckpt", ".safetensors"):
        raise VaezooError(f"{target}: pass the run directory or the model folder that holds this file")
    return load(target, device=device), None


def _read_recipe(path: Path) -> dict:
    try:
        recipe = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(recipe, dict) or "model" not in recipe:
        raise ConfigError(f"{path} is not a vaezoo recipe (no model section)")
    return recipe


def build_data(spec: Any, override: Any, model: Any = None):
    """The data module from ``--data`` (a spec) or the run's recipe."""
    from ..config import build, namespace_to_dict

    spec = namespace_to_dict(override) if override is not None else spec
    if spec is None:
        shape = "x".join(str(v) for v in model.image_shape) if model is not None else None
        takes = f"this model takes {shape} images: " if shape else ""
        raise VaezooError(
            f"no data: {takes}pass --data with a data module spec that gives them, e.g. "
            "--data '{class_path: NAME, init_args: {...}}' (vaezoo list dataset)"
        )
    if isinstance(spec, str):
        spec = {"class_path": spec}
    return build(spec, kind="dataset")
