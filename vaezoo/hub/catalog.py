"""The pretrained table as the hub sees it: an entry's card metadata, where a name would load from, and what to
tell a user when it is found nowhere.

A pretrained entry (``register_pretrained`` hook) is a mapping of card metadata (preset, license, source,
dataset, metrics, ...) plus where the weights come from:

- ``repo_id``, ``revision``: the Hub repo of the converted weights;
- ``converter``: the registered converter that imports the official checkpoint (``vaezoo convert``);
- ``checkpoint_url``, ``checkpoint_page``: where that official checkpoint is published (download link, page);
- ``bundled``: ``"package:folder/inside/it"``, a saved-model folder that ships inside an installed package (found with
  :mod:`importlib.resources`, so from a wheel and from an editable install alike): weights that work offline right
  after installation.

:func:`vaezoo.load` looks for a pretrained name in the local store (:mod:`.store`), then among the bundled folders,
then in the Hugging Face cache, then on the Hub; :func:`locate` answers the same question without loading
(``vaezoo list pretrained``).
"""

from __future__ import annotations

import importlib.resources
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import RegistryError, VaezooError
from ..plugins import get_registry
from ..registry import Entry
from .downloading import cached_snapshot, probe
from .env import sync_hf_environment
from .format import CONFIG_NAME, HubError
from .names import resolve_name
from .store import installed_folder, store_path

#: entry keys that say where weights come from; every other key is card metadata
SOURCE_KEYS = ("repo_id", "revision", "converter", "bundled")


def pretrained_entry(name: str) -> Entry:
    """The registered pretrained entry (a RegistryError naming close matches when unknown)."""
    return get_registry().get("pretrained", name)


def pretrained_of_preset(preset: str) -> list[str]:
    """The pretrained entries whose weights have the architecture of ``preset`` (their ``preset`` key)."""
    entries = get_registry().entries("pretrained")
    return sorted(e.name for e in entries if isinstance(e.target, dict) and e.target.get("preset") == preset)


def pretrained_name(name: str) -> str:
    """The pretrained name that ``name`` means: itself when it is one, else the one pretrained entry that uses the
    preset ``name``. A preset with no pretrained entry, or with several, is one line saying what to call instead; an
    unknown name is one line with close matches."""
    registry = get_registry()
    if name in registry.names("pretrained"):
        return name
    if name in registry.names("preset"):
        found = pretrained_of_preset(name)
        if len(found) == 1:
            return found[0]
        if not found:
            raise RegistryError(
                f"{name!r} is a preset without published weights: vaezoo.create({name!r}) builds it untrained "
                "(vaezoo list pretrained shows the names vaezoo.load takes)"
            )
        raise RegistryError(
            f"the preset {name!r} has several pretrained entries ({', '.join(found)}): vaezoo.load one of them by name"
        )
    return pretrained_entry(name).name


def bundled_folder(name: str) -> Path | None:
    """The saved-model folder that ships with an installed package for pretrained ``name`` (its entry's ``bundled``
    key), or None when the entry has none. A declared folder that is missing from the installation is None when the
    entry can come from the Hub instead, else one line saying so."""
    entry = pretrained_entry(name)
    spec = entry.target.get("bundled")
    if spec is None:
        return None
    folder = _bundled_path(spec, f"pretrained {name!r} (plugin {entry.plugin})")
    if (folder / CONFIG_NAME).is_file():
        return folder
    if entry.target.get("repo_id"):
        return None
    raise HubError(
        f"{name} ships with the package in {folder}, but that folder has no {CONFIG_NAME}: the installation is "
        "incomplete (a build without its package data?); reinstall the package that provides it"
    )


def _bundled_path(spec: object, what: str) -> Path:
    """The folder that a ``"package:folder/inside/it"`` spec names, inside the installed package."""
    match = (
        re.fullmatch(r"([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([\w.\-]+(?:/[\w.\-]+)*)", spec)
        if isinstance(spec, str)
        else None
    )
    if match is None or ".." in match.group(2).split("/"):
        raise HubError(f"{what}: bundled must be 'package:folder/inside/it', got {spec!r}")
    package, inside = match.groups()
    try:
        root = importlib.resources.files(package)
    except (ImportError, TypeError) as exc:
        raise HubError(f"{what}: bundled names the package {package!r}, which cannot be imported ({exc})") from exc
    folder = root.joinpath(inside)
    if not isinstance(folder, Path):  # a package inside a zip file: safetensors needs a real file
        raise HubError(f"{what}: the package {package!r} is not installed as files on disk ({folder})")
    return folder


def entry_card(entry: Entry) -> dict:
    """The card metadata of a pretrained entry (what an installed or pushed model records)."""
    return {k: v for k, v in entry.target.items() if k not in SOURCE_KEYS and v is not None}


def install_hint(name: str) -> str | None:
    """How to install pretrained ``name`` from its official checkpoint, as the end of an error message."""
    meta = pretrained_entry(name).target
    converter = meta.get("converter")
    if not converter:
        return None
    where = ""
    if meta.get("checkpoint_url"):
        page = f" (see {meta['checkpoint_page']})" if meta.get("checkpoint_page") else ""
        where = f"the official checkpoint is published at {meta['checkpoint_url']}{page}: download it and run "
    elif meta.get("checkpoint_page"):
        where = f"the official checkpoint is published on {meta['checkpoint_page']}: download it and run "
    else:
        where = "install the official checkpoint with "
    return (
        f"{name} is not installed in {store_path(name)} either; "
        f"{where}`vaezoo convert {converter} CHECKPOINT.pt --pretrained {name}`"
    )


@dataclass(frozen=True)
class Location:
    """Where a pretrained name would load from: ``installed``, ``bundled``, ``cached``, ``Hub`` or ``nowhere``, with
    details."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} ({self.detail})" if self.detail else self.kind


def locate(name: str, *, check_hub: bool = True, timeout: float | None = None) -> Location:
    """Where :func:`vaezoo.load` would take pretrained ``name`` from, in its order: store, bundled, cache, Hub.

    The Hub is asked with one quick request (no download); with HF_HUB_OFFLINE set it is not asked.
    """
    from huggingface_hub import constants, errors

    folder = installed_folder(name)
    if folder is not None:
        return Location("installed", str(folder))
    try:
        folder = bundled_folder(name)
    except HubError as exc:  # declared, missing, and nowhere else to come from
        return Location("nowhere", str(exc))
    if folder is not None:
        return Location("bundled", str(folder))
    try:
        repo_id, revision = resolve_name(name)
    except VaezooError as exc:  # an entry without a usable repo id: it can only be installed
        return Location("nowhere", str(exc))
    snapshot = cached_snapshot(repo_id, revision)
    if snapshot is not None:
        return Location("cached", f"{repo_id}@{snapshot.name[:12]}")
    sync_hf_environment()
    if not check_hub:
        return Location("nowhere", "not checked on the Hub")
    if constants.is_offline_mode():
        return Location("nowhere", "HF_HUB_OFFLINE is set")
    try:
        probe(repo_id, revision, timeout)
    except errors.GatedRepoError:
        return Location("Hub", f"{repo_id}, gated: accept its terms and set HF_TOKEN")
    except errors.RepositoryNotFoundError:
        return Location("nowhere", f"no repo {repo_id} on the Hub")
    except errors.RevisionNotFoundError:
        return Location("nowhere", f"no revision {revision} in {repo_id}")
    except errors.RemoteEntryNotFoundError:
        return Location("nowhere", f"{repo_id} is not a saved vaezoo model")
    except Exception as exc:  # no network, timeouts, HTTP errors: the Hub cannot give it now
        return Location("nowhere", f"Hub unreachable ({type(exc).__name__})")
    return Location("Hub", f"{repo_id}@{revision}")


def locate_all(names: list[str], *, check_hub: bool = True) -> dict[str, Location]:
    """:func:`locate` for many names, the Hub requests in parallel (the wait is one timeout, not one per name)."""
    with ThreadPoolExecutor(max_workers=max(1, min(8, len(names)))) as pool:
        found = pool.map(lambda n: locate(n, check_hub=check_hub), names)
        return dict(zip(names, found, strict=True))
