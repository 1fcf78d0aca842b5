"""The on-disk format of a saved model: file names, name prefixes, config.json checks and weights checks.

Everything that knows what a saved-model folder must hold lives here, so that saving, loading, downloading and
pushing agree on it. :class:`HubError` is here too: every other hub module raises it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .._version import __version__
from ..errors import CheckpointError, ConfigError, VaezooError

FORMAT = "vaezoo"
FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
DEFAULT_REVISION = "main"

#: card metadata keys with a meaning (others are kept in config.json as they are)
CARD_KEYS = ("preset", "description", "license", "license_link", "dataset", "metrics", "source")
_METRIC_REQUIRED = ("name", "value", "protocol")


class HubError(VaezooError):
    """The Hub or the Hugging Face cache cannot give or take a model (network, permissions, missing files)."""


def read_config(folder: Path, where: str) -> dict:
    """The checked config.json of a saved-model folder; ``where`` names the model in error messages."""
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{where}: missing {CONFIG_NAME} (not a saved vaezoo model)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{where}: {CONFIG_NAME} is not valid JSON ({first_line(exc)})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f'{where}: {CONFIG_NAME} is not a vaezoo model config (no "format": "{FORMAT}")')
    version = config.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{where}: {CONFIG_NAME} has no valid format_version")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: saved with format version {version} by vaezoo {config.get('vaezoo_version')}; "
            f"this vaezoo {__version__} reads up to version {FORMAT_VERSION}: upgrade vaezoo"
        )
    for key, kind in (("model", dict), ("weights", dict), ("metadata", dict)):
        if not isinstance(config.get(key), kind):
            raise CheckpointError(f"{where}: {CONFIG_NAME} lacks the {key!r} mapping")
    return config


def check_weights_file(path: Path, expected: dict, where: str) -> None:
    """Refuse a missing, truncated or altered weights file (size and sha256 as recorded in config.json)."""
    if not path.is_file():
        raise CheckpointError(f"{where}: missing {WEIGHTS_NAME}")
    size = path.stat().st_size
    if isinstance(expected.get("size"), int) and size != expected["size"]:
        raise CheckpointError(
            f"{where}: {WEIGHTS_NAME} has {size} bytes, {CONFIG_NAME} says {expected['size']} (truncated or replaced)"
        )
    if isinstance(expected.get("sha256"), str) and sha256(path) != expected["sha256"]:
        raise CheckpointError(f"{where}: {WEIGHTS_NAME} is corrupted (its sha256 differs from {CONFIG_NAME})")


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in blocks (weights files can be larger than memory allows twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def check_metadata(metadata: dict) -> dict:
    """Drop None values, check that the rest is JSON and that metrics carry their protocol."""
    out = {k: v for k, v in metadata.items() if v is not None}
    try:
        out = json.loads(json.dumps(out, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"card metadata must be JSON data: {exc}") from exc
    for key in ("preset", "description", "license", "license_link", "dataset", "source"):
        if key in out and not isinstance(out[key], str):
            raise ConfigError(f"card metadata {key!r} must be a string, got {type(out[key]).__name__}")
    metrics = out.get("metrics", [])
    if not isinstance(metrics, list):
        raise ConfigError("card metadata 'metrics' must be a list of {name, value, protocol, ...} mappings")
    for i, metric in enumerate(metrics):
        missing = [k for k in _METRIC_REQUIRED if not isinstance(metric, dict) or k not in metric]
        if missing:
            raise ConfigError(f"card metadata metrics[{i}] lacks {', '.join(missing)} (a metric states its protocol)")
        if not isinstance(metric["value"], (int, float)) or isinstance(metric["value"], bool):
            raise ConfigError(f"card metadata metrics[{i}].value must be a number, got {metric['value']!r}")
    return out


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its type name): error messages here stay one line."""
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
