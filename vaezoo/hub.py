"""Saved models and the Hugging Face Hub: save_pretrained / from_pretrained / push_to_hub / load(name).

A saved model is a folder of three files:

- ``config.json``: ``{"format": "vaezoo", "format_version", "vaezoo_version", "model": <spec>, "weights":
  {"sha256", "size"}, "metadata": {...}}``. ``model`` is the component spec of ``model.config``, rebuilt with
  :func:`vaezoo.config.build`, which only accepts registered class paths (a config never imports code).
  ``metadata`` holds the optional card metadata: preset, license, dataset, metrics (with their protocol), source.
- ``model.safetensors``: the state dict (tensors only: never pickle). Loading is strict.
- ``README.md``: a model card written with huggingface_hub's :class:`~huggingface_hub.ModelCard` from config.json.

Names accepted by :func:`load`: a registered pretrained name (``vaezoo list pretrained``),
``hf-hub:org/repo[@revision]`` or ``local-dir:PATH``.

huggingface_hub reads its ``HF_*`` environment variables (HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_HUB_OFFLINE,
HF_HUB_DISABLE_XET, HF_TOKEN_PATH, ...) once, when it is imported. Every function here re-reads them first
(:func:`sync_hf_environment`), so they behave as huggingface_hub defines them at the time of the call.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .errors import CheckpointError, ConfigError, RegistryError, VaezooError

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
_METRIC_COLUMNS = ("name", "value", "unit", "split", "protocol", "source")


class HubError(VaezooError):
    """The Hub or the Hugging Face cache cannot give or take a model (network, permissions, missing files)."""


# ---------------------------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------------------------
_env_lock = threading.Lock()
_synced_env: tuple | None = None
_TOKEN_VARS = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}  # read by huggingface_hub at call time already
_CONSTANT_COPIES = {
    "huggingface_hub.utils.tqdm": ("HF_HUB_DISABLE_PROGRESS_BARS",),
    "huggingface_hub.utils._cache_manager": ("HF_HUB_CACHE",),
}


def _hf_environment() -> tuple:
    names = ("XDG_CACHE_HOME", "TRANSFORMERS_OFFLINE", "DISABLE_TELEMETRY", "DO_NOT_TRACK")
    return tuple(
        sorted(
            (k, v)
            for k, v in os.environ.items()
            if (k.startswith(("HF_", "HUGGINGFACE_")) and k not in _TOKEN_VARS) or k in names
        )
    )


def sync_hf_environment() -> None:
    """Make ``huggingface_hub.constants`` reflect the current ``HF_*`` environment variables.

    huggingface_hub computes them at import; reloading its constants module re-runs exactly its own rules.
    Done only when the environment changed since the last call.
    """
    global _synced_env
    import huggingface_hub.constants as constants

    current = _hf_environment()
    with _env_lock:
        if current != _synced_env:
            importlib.reload(constants)
            for module_name, names in _CONSTANT_COPIES.items():  # modules that copied a constant at import
                module = sys.modules.get(module_name)
                for name in names if module is not None else ():
                    setattr(module, name, getattr(constants, name))
            _synced_env = current


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------
def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, **card_metadata: Any) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``save_directory``.

    ``card_metadata``: optional ``preset``, ``description``, ``license``, ``license_link``, ``dataset``,
    ``metrics`` (a list of ``{"name", "value", "protocol", "unit"?, "split"?, "source"?}``), ``source``, and any
    other JSON values. The folder is written atomically: files go to a temporary folder next to it, which
    replaces it only once complete. An existing folder is replaced only if it is a saved vaezoo model.
    """
    from safetensors.torch import save_model

    spec = _model_spec(model)
    metadata = _check_metadata({"preset": getattr(model, "preset", None), **card_metadata})
    target = Path(save_directory).expanduser().absolute()
    _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.mkdir()  # not mkdtemp: the folder gets mkdir's mode under the user's umask
    try:
        weights = tmp / WEIGHTS_NAME
        save_model(model, str(weights), metadata={"format": "pt"})
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "vaezoo_version": __version__,
            "model": spec,
            "weights": {"sha256": _sha256(weights), "size": weights.stat().st_size},
            "metadata": metadata,
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        model_card(config).save(tmp / CARD_NAME)
        shutil.copymode(tmp / CONFIG_NAME, weights)  # safetensors writes a private file; use open()'s mode
        _replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _model_spec(model: nn.Module) -> dict:
    spec = getattr(model, "config", None)
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ConfigError(
            f"cannot save a {type(model).__name__}: it has no model.config spec (build models with vaezoo.create or vaezoo.build)"
        )
    try:
        return json.loads(json.dumps(spec))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model.config of {type(model).__name__} is not JSON data: {exc}") from exc


def _check_metadata(metadata: dict) -> dict:
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


def _check_replaceable(target: Path) -> None:
    if not target.exists():
        return
    if not target.is_dir():
        raise CheckpointError(f"cannot save a model to {target}: it is a file")
    if any(target.iterdir()) and _read_format(target / CONFIG_NAME) != FORMAT:
        raise CheckpointError(f"refusing to replace {target}: it exists and is not a saved vaezoo model")


def _read_format(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the complete ``tmp`` folder to ``target``; an old ``target`` is removed only after that succeeded."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
        os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        if old is not None:
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------
def model_card(config: dict, repo_id: str | None = None) -> Any:
    """The README.md of a saved model, a :class:`huggingface_hub.ModelCard` built from its config.json."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = config.get("metadata", {})
    spec = config["model"]
    title = meta.get("preset") or (repo_id.split("/")[-1] if repo_id else spec["class_path"])
    license_fields = _license_fields(meta.get("license"), meta.get("license_link"))
    dataset = meta.get("dataset")
    data = ModelCardData(
        library_name="vaezoo",
        tags=["vaezoo", "vae", "generative-model", spec["class_path"]],
        datasets=[dataset] if dataset and re.fullmatch(r"[\w.\-/]+", dataset) else None,
        **license_fields,
    )
    name = f"hf-hub:{repo_id}" if repo_id else "local-dir:PATH/TO/THIS/FOLDER"
    lines = [f"# {title}", ""]
    if meta.get("description"):
        lines += [meta["description"], ""]
    lines += [f"A `{spec['class_path']}` model for [vaezoo](https://github.com/vaezoo/vaezoo).", ""]
    facts = [
        ("Preset", meta.get("preset")),
        ("Source", meta.get("source")),
        ("License", meta.get("license")),
        ("Dataset", dataset),
    ]
    lines += [f"- **{k}:** {v}" for k, v in facts if v]
    lines += ["", "## Usage", "", "```python", "import vaezoo", "", f'model = vaezoo.load("{name}")']
    lines += ["images = model.sample(16, temperature=0.7)", "```", ""]
    if meta.get("metrics"):
        lines += ["## Metrics", "", "| " + " | ".join(_METRIC_COLUMNS) + " |"]
        lines += ["|" + "---|" * len(_METRIC_COLUMNS)]
        for metric in meta["metrics"]:
            lines += ["| " + " | ".join(_cell(metric.get(c, "")) for c in _METRIC_COLUMNS) + " |"]
        lines += [""]
    lines += ["## Model spec", "", "The component spec this model rebuilds from (`config.json`, key `model`):", ""]
    lines += ["```json", json.dumps(spec, indent=2), "```", ""]
    lines += [
        "## Files",
        "",
        f"- `{CONFIG_NAME}`: vaezoo {config.get('vaezoo_version')}, format version {config.get('format_version')}",
        f"- `{WEIGHTS_NAME}`: {config['weights']['size']} bytes, sha256 `{config['weights']['sha256']}`",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _license_fields(license_text: str | None, link: str | None) -> dict:
    """A Hub license id when the text is one (e.g. ``apache-2.0``), else ``other`` with a name and link."""
    if not license_text:
        return {}
    if re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", license_text):
        return {"license": license_text}
    name = re.sub(r"[^a-z0-9]+", "-", license_text.split(";")[0].lower()).strip("-")
    return {"license": "other", "license_name": name, "license_link": link}


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def load(name: str, device: Any = "cpu", revision: str | None = None) -> nn.Module:
    """A ready model in eval mode on ``device``.

    ``name``: a registered pretrained name, ``hf-hub:org/repo[@revision]`` or ``local-dir:PATH``.
    ``revision`` overrides the revision of a pretrained name or of an hf-hub spec.
    """
    if not isinstance(name, str):
        raise VaezooError(f"vaezoo.load expects a name string, got {type(name).__name__}")
    if name.startswith(LOCAL_DIR_PREFIX):
        path = name[len(LOCAL_DIR_PREFIX) :]
        if not path:
            raise CheckpointError("local-dir: needs a path, e.g. local-dir:./my-model")
        return _load_folder(Path(path).expanduser(), device, where=name)
    repo_id, rev = resolve_name(name, revision)
    return _load_folder(fetch(repo_id, rev, label=name), device, where=f"{HF_HUB_PREFIX}{repo_id}@{rev}")


def from_pretrained(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    device: Any = "cpu",
    *,
    expected_class: type | None = None,
) -> nn.Module:
    """Load a saved model from a folder or a Hub repo id ``org/name`` (or any name :func:`load` accepts).

    ``expected_class``: refuse a model of another class (``ConvVAE.from_pretrained`` passes itself).
    """
    text = os.fspath(name_or_path)
    if Path(text).expanduser().is_dir():
        model = _load_folder(Path(text).expanduser(), device, where=text)
    elif text.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX)) or text in _pretrained_names():
        model = load(text, device=device, revision=revision)
    elif re.fullmatch(r"[\w.\-]+/[\w.\-]+", text):
        model = load(f"{HF_HUB_PREFIX}{text}", device=device, revision=revision)
    else:
        raise CheckpointError(f"{text!r} is neither a model folder, a Hub repo id (org/name) nor a pretrained name")
    if expected_class is not None and not isinstance(model, expected_class):
        raise CheckpointError(f"{text} holds a {type(model).__name__}, not a {expected_class.__name__}")
    return model


def _pretrained_names() -> list[str]:
    from .plugins import get_registry

    return get_registry().names("pretrained")


def resolve_name(name: str, revision: str | None = None) -> tuple[str, str]:
    """(repo_id, revision) of a pretrained name or an ``hf-hub:org/repo[@revision]`` spec."""
    if name.startswith(HF_HUB_PREFIX):
        repo_id, rev = parse_hf_hub_spec(name)
        return repo_id, revision or rev
    from .plugins import get_registry

    entry = get_registry().get("pretrained", name)  # RegistryError with close matches when unknown
    repo_id = entry.target.get("repo_id")
    if not isinstance(repo_id, str):
        raise RegistryError(f"pretrained {name!r} (plugin {entry.plugin}) has no repo_id")
    _check_repo_id(repo_id, f"pretrained {name!r}")
    return repo_id, revision or entry.target.get("revision") or DEFAULT_REVISION


def parse_hf_hub_spec(spec: str) -> tuple[str, str]:
    """``hf-hub:org/repo[@revision]`` -> (repo_id, revision)."""
    body = spec[len(HF_HUB_PREFIX) :] if spec.startswith(HF_HUB_PREFIX) else spec
    repo_id, sep, revision = body.partition("@")
    if sep and not revision:
        raise HubError(f"bad hf-hub spec {spec!r}: empty revision after '@' (expected hf-hub:org/repo[@revision])")
    _check_repo_id(repo_id, f"bad hf-hub spec {spec!r}")
    return repo_id, revision or DEFAULT_REVISION


def _check_repo_id(repo_id: str, what: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if repo_id.count("/") != 1:
        raise HubError(f"{what}: the repo id must be 'org/name', got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise HubError(f"{what}: {_first_line(exc)}") from exc


def _read_config(folder: Path, where: str) -> dict:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{where}: missing {CONFIG_NAME} (not a saved vaezoo model)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{where}: {CONFIG_NAME} is not valid JSON ({_first_line(exc)})") from exc
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


def _load_folder(folder: Path, device: Any, where: str) -> nn.Module:
    from .config import build

    device = _device(device)
    if not folder.is_dir():
        raise CheckpointError(f"{where}: no such model folder")
    config = _read_config(folder, where)
    weights = folder / WEIGHTS_NAME
    _check_weights_file(weights, config["weights"], where)
    try:
        model = build(config["model"])
    except ConfigError as exc:
        raise ConfigError(f"{where}/{CONFIG_NAME}: {exc}") from exc
    model.to(device)
    _load_weights(model, weights, device, where)
    model.eval()
    metadata = config["metadata"]
    model.card_metadata = metadata
    if metadata.get("preset"):
        model.preset = metadata["preset"]
    return model


def _device(device: Any) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise VaezooError(f"invalid device {device!r}: {_first_line(exc)}") from exc


def _check_weights_file(path: Path, expected: dict, where: str) -> None:
    if not path.is_file():
        raise CheckpointError(f"{where}: missing {WEIGHTS_NAME}")
    size = path.stat().st_size
    if isinstance(expected.get("size"), int) and size != expected["size"]:
        raise CheckpointError(
            f"{where}: {WEIGHTS_NAME} has {size} bytes, {CONFIG_NAME} says {expected['size']} (truncated or replaced)"
        )
    if isinstance(expected.get("sha256"), str) and _sha256(path) != expected["sha256"]:
        raise CheckpointError(f"{where}: {WEIGHTS_NAME} is corrupted (its sha256 differs from {CONFIG_NAME})")


def _load_weights(model: nn.Module, path: Path, device: torch.device, where: str) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    try:
        missing, unexpected = load_model(model, str(path), strict=False, device=str(device))
    except SafetensorError as exc:
        raise CheckpointError(f"{where}: {WEIGHTS_NAME} is not a valid safetensors file ({_first_line(exc)})") from exc
    except RuntimeError as exc:  # shape mismatches from load_state_dict
        text = str(exc)
        found = re.findall(r"size mismatch for [^\n]*", text)
        detail = found[0].rstrip(".") if found else _first_line(exc)
        if len(found) > 1:
            detail += f" (and {len(found) - 1} more)"
        raise CheckpointError(f"{where}: {WEIGHTS_NAME} does not fit the model: {detail}") from exc
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_key_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_key_list(unexpected)}")
        raise CheckpointError(f"{where}: {WEIGHTS_NAME} does not match {CONFIG_NAME}: {'; '.join(parts)}")


def _key_list(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# Downloading
# ---------------------------------------------------------------------------------------------
def download(name: str, revision: str | None = None) -> Path:
    """Fill the Hugging Face cache with a pretrained name or hf-hub spec (so that HF_HUB_OFFLINE=1 works
    afterwards); returns the snapshot folder. Running it again after an interruption completes it."""
    if name.startswith(LOCAL_DIR_PREFIX):
        raise HubError(f"{name!r} is a local folder: there is nothing to download")
    repo_id, rev = resolve_name(name, revision)
    folder = fetch(repo_id, rev, label=name, with_card=True)
    config = _read_config(folder, f"{HF_HUB_PREFIX}{repo_id}@{rev}")
    _check_weights_file(folder / WEIGHTS_NAME, config["weights"], f"{HF_HUB_PREFIX}{repo_id}@{rev}")
    return folder


def fetch(repo_id: str, revision: str = DEFAULT_REVISION, *, label: str | None = None, with_card: bool = False) -> Path:
    """Download (or find in the cache) the files of a saved model; returns the cached snapshot folder.

    All files come from the commit that ``revision`` points to when config.json is resolved.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    sync_hf_environment()
    with _hub_errors(label or f"{HF_HUB_PREFIX}{repo_id}@{revision}", repo_id, revision):
        snapshot = Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision)).parent
        commit = snapshot.name  # .../snapshots/<commit>/config.json
        hf_hub_download(repo_id, WEIGHTS_NAME, revision=commit)
        if with_card:
            try:
                hf_hub_download(repo_id, CARD_NAME, revision=commit)
            except RemoteEntryNotFoundError:
                pass  # the card is documentation, not needed to load
    return snapshot


@contextlib.contextmanager
def _hub_errors(where: str, repo_id: str, revision: str | None, *, action: str = "download", token: str | None = None):
    """Turn huggingface_hub and transfer errors into one-line :class:`HubError` messages (tokens redacted)."""
    try:
        yield
    except VaezooError:
        raise
    except Exception as exc:
        message = _hub_error_message(exc, where, repo_id, revision or DEFAULT_REVISION, action)
        for secret in (token, os.environ.get("HF_TOKEN"), os.environ.get("HUGGING_FACE_HUB_TOKEN")):
            message = message.replace(secret, "***") if secret else message
        raise HubError(message) from exc


def _hub_error_message(exc: Exception, where: str, repo: str, revision: str, action: str) -> str:
    import httpx2
    from huggingface_hub import constants, errors

    endpoint, cache = constants.ENDPOINT, constants.HF_HUB_CACHE
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled)):
        if constants.is_offline_mode():
            return (
                f"{where} is not (completely) in the Hugging Face cache {cache} and HF_HUB_OFFLINE is set: "
                f"run `vaezoo download {where}` with network access first"
            )
        return f"{where}: cannot reach the Hub at {endpoint} and the files are not in the cache {cache}"
    if isinstance(exc, errors.GatedRepoError):
        return f"{where}: {repo} is gated on {endpoint}: accept its terms and set HF_TOKEN"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"{where}: repository {repo} not found on {endpoint} (or private: set HF_TOKEN)"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{where}: revision {revision!r} not found in {repo}"
    if isinstance(exc, errors.RemoteEntryNotFoundError):
        return f"{where}: {repo}@{revision} has no {_entry_name(exc)}; it is not a saved vaezoo model"
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        if status in (401, 403) and action == "push":
            return (
                f"not allowed to push to {repo} on {endpoint} (HTTP {status}): set HF_TOKEN or run "
                "`hf auth login` with a token that has write access"
            )
        return f"{where}: the Hub at {endpoint} answered HTTP {status} to the {action}: {_first_line(exc)}"
    if isinstance(exc, (httpx2.ConnectError, httpx2.TimeoutException)):
        return f"{where}: cannot reach the Hub at {endpoint} ({_first_line(exc)})"
    if isinstance(exc, (OSError, httpx2.HTTPError)) and action == "download":
        return f"{where}: the download was interrupted ({_first_line(exc)}); run the same command again to resume"
    return f"{where}: {action} failed: {type(exc).__name__}: {_first_line(exc)}"


def _entry_name(exc: Exception) -> str:
    url = str(getattr(getattr(exc, "response", None), "url", "") or "")
    return url.rsplit("/", 1)[-1] or "required file"


# ---------------------------------------------------------------------------------------------
# Pushing
# ---------------------------------------------------------------------------------------------
def push_to_hub(
    model_or_dir: nn.Module | str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    **card_metadata: Any,
) -> Any:
    """Upload a model (saved first) or a saved-model folder to ``repo_id``; returns the huggingface_hub CommitInfo.

    ``revision``: the branch to commit to (created from main when missing; default main). ``token``: a
    Hub token (default: HF_TOKEN or the token saved by ``hf auth login``); it is never printed or logged.
    ``private``: visibility of a newly created repo. ``card_metadata`` (preset, license, dataset,
    metrics, ...) is added to the folder's metadata. The uploaded README.md is rendered from config.json.
    A folder is loaded strictly before anything is uploaded, so a broken model is never pushed.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    _check_repo_id(repo_id, "push")
    if revision is not None and not revision.strip():
        raise HubError("push: empty revision")
    with tempfile.TemporaryDirectory(prefix="vaezoo-push-") as tmp:
        if isinstance(model_or_dir, nn.Module):
            folder = save_pretrained(model_or_dir, Path(tmp) / "model", **card_metadata)
            config = _read_config(folder, str(folder))
        else:
            folder = Path(model_or_dir).expanduser()
            _load_folder(folder, "cpu", where=str(folder))  # strict: refuse to push what would not load
            config = _read_config(folder, str(folder))
            if card_metadata:
                config["metadata"] = _check_metadata({**config["metadata"], **card_metadata})
        operations = [
            CommitOperationAdd(CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode("utf-8")),
            CommitOperationAdd(WEIGHTS_NAME, str(folder / WEIGHTS_NAME)),
            CommitOperationAdd(CARD_NAME, str(model_card(config, repo_id=repo_id)).encode("utf-8")),
        ]
        title = config["metadata"].get("preset") or config["model"]["class_path"]
        message = commit_message or f"Upload {title} (vaezoo {__version__})"
        sync_hf_environment()
        label = f"{HF_HUB_PREFIX}{repo_id}@{revision or DEFAULT_REVISION}"
        if constants.is_offline_mode():
            raise HubError(f"{label}: HF_HUB_OFFLINE is set; pushing needs network access to {constants.ENDPOINT}")
        with _hub_errors(label, repo_id, revision, action="push", token=token):
            api = HfApi(token=token)
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision and revision != DEFAULT_REVISION:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            return api.create_commit(repo_id, operations, commit_message=message, revision=revision)
