"""Getting a saved model's files from the Hub into the Hugging Face cache, and Hub errors as one-line messages.

:func:`fetch` is what loading uses; :func:`download` is ``vaezoo download`` (fill the cache for offline use);
:func:`cached_snapshot` looks in the cache only, :func:`probe` asks the Hub once, quickly (fail fast without a
network). Downloads draw rich progress bars on a terminal (:mod:`vaezoo.progress`).
:func:`hub_errors` maps huggingface_hub and transfer errors to a :class:`~vaezoo.hub.format.HubError` for both
downloads and pushes.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import VaezooError
from ..progress import progress_bar, tqdm_class
from .env import sync_hf_environment
from .format import (
    CARD_NAME,
    CONFIG_NAME,
    DEFAULT_REVISION,
    HF_HUB_PREFIX,
    LOCAL_DIR_PREFIX,
    WEIGHTS_NAME,
    HubError,
    check_weights_file,
    first_line,
    read_config,
)
from .names import resolve_name


def download(name: str, revision: str | None = None, *, hint: str | None = None) -> Path:
    """Fill the Hugging Face cache with a pretrained name or hf-hub spec (so that HF_HUB_OFFLINE=1 works
    afterwards); returns the snapshot folder. Running it again after an interruption completes it.
    A progress bar shows on a terminal. ``hint`` ends the error message (e.g. how to install the model instead)."""
    if name.startswith(LOCAL_DIR_PREFIX):
        raise HubError(f"{name!r} is a local folder: there is nothing to download")
    repo_id, rev = resolve_name(name, revision)
    folder = fetch(repo_id, rev, label=name, with_card=True, hint=hint)
    config = read_config(folder, f"{HF_HUB_PREFIX}{repo_id}@{rev}")
    check_weights_file(folder / WEIGHTS_NAME, config["weights"], f"{HF_HUB_PREFIX}{repo_id}@{rev}")
    return folder


def fetch(
    repo_id: str,
    revision: str = DEFAULT_REVISION,
    *,
    label: str | None = None,
    with_card: bool = False,
    hint: str | None = None,
    progress=None,
) -> Path:
    """Download (or find in the cache) the files of a saved model; returns the cached snapshot folder.

    All files come from the commit that ``revision`` points to when config.json is resolved. Before downloading,
    one quick request (:func:`probe`, no retries) checks that the Hub answers: without a network this fails in
    seconds instead of huggingface_hub's half a minute of retries, falling back to the cache as it would.
    ``hint`` ends the error message (what else the user can do); ``progress``: a rich Progress for the bars.
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    sync_hf_environment()
    where = label or f"{HF_HUB_PREFIX}{repo_id}@{revision}"
    with hub_errors(where, repo_id, revision, hint=hint), progress_bar(progress, transfer=True) as bars:
        if not constants.is_offline_mode():
            try:
                probe(repo_id, revision)
            except _network_errors():
                cached = cached_snapshot(repo_id, revision)
                if cached is not None:
                    return cached
                raise
        # HF_HUB_DISABLE_PROGRESS_BARS keeps its meaning: huggingface_hub's own (disabled) bars then
        bar_class = None if constants.HF_HUB_DISABLE_PROGRESS_BARS else tqdm_class(bars)
        snapshot = Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision, tqdm_class=bar_class)).parent
        commit = snapshot.name  # .../snapshots/<commit>/config.json
        hf_hub_download(repo_id, WEIGHTS_NAME, revision=commit, tqdm_class=bar_class)
        if with_card:
            try:
                hf_hub_download(repo_id, CARD_NAME, revision=commit, tqdm_class=bar_class)
            except RemoteEntryNotFoundError:
                pass  # the card is documentation, not needed to load
    return snapshot


def cached_snapshot(repo_id: str, revision: str = DEFAULT_REVISION) -> Path | None:
    """The Hugging Face cache's snapshot folder of ``repo_id@revision`` when it holds config.json and the weights,
    else None. Never touches the network."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    sync_hf_environment()
    try:
        snapshot = Path(hf_hub_download(repo_id, CONFIG_NAME, revision=revision, local_files_only=True)).parent
        hf_hub_download(repo_id, WEIGHTS_NAME, revision=snapshot.name, local_files_only=True)
    except (EntryNotFoundError, OSError, ValueError):
        return None
    return snapshot


def probe_timeout() -> float:
    """Seconds to wait for the Hub's first answer: HF_HUB_ETAG_TIMEOUT when set, else 3 (fail fast offline)."""
    from huggingface_hub import constants

    return float(constants.HF_HUB_ETAG_TIMEOUT) if os.environ.get("HF_HUB_ETAG_TIMEOUT") else 3.0


def probe(repo_id: str, revision: str = DEFAULT_REVISION, timeout: float | None = None) -> str | None:
    """One HEAD request for the config.json of ``repo_id@revision``, without retries; returns the commit.

    Raises huggingface_hub's errors (repository not found, gated, no such file or revision) or the transfer's
    (no connection, timeout) as they are: callers map them with :func:`hub_errors`.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    sync_hf_environment()
    url = hf_hub_url(repo_id, CONFIG_NAME, revision=revision)
    metadata = get_hf_file_metadata(url, timeout=timeout or probe_timeout(), retry_on_errors=False)
    return metadata.commit_hash


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx2

    return (httpx2.ConnectError, httpx2.TimeoutException, httpx2.NetworkError)


@contextlib.contextmanager
def hub_errors(
    where: str,
    repo_id: str,
    revision: str | None,
    *,
    action: str = "download",
    token: str | None = None,
    hint: str | None = None,
):
    """Turn huggingface_hub and transfer errors into one-line :class:`HubError` messages (tokens redacted);
    ``hint`` (what else to do) ends the message of a failed download."""
    try:
        yield
    except VaezooError:
        raise
    except Exception as exc:
        message = _hub_error_message(exc, where, repo_id, revision or DEFAULT_REVISION, action)
        if hint and action == "download":
            message = f"{message}; {hint}"
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
        return f"{where}: the Hub at {endpoint} answered HTTP {status} to the {action}: {first_line(exc)}"
    if isinstance(exc, httpx2.TimeoutException):
        return (
            f"{where}: the Hub at {endpoint} did not answer within {probe_timeout():g} s and the files are not in "
            f"the cache {cache} (set HF_HUB_ETAG_TIMEOUT to wait longer, or HF_HUB_OFFLINE=1 to use the cache only)"
        )
    if isinstance(exc, (httpx2.ConnectError, httpx2.NetworkError)):
        return f"{where}: cannot reach the Hub at {endpoint} ({first_line(exc)}) and the files are not in the cache {cache}"
    if isinstance(exc, (OSError, httpx2.HTTPError)) and action == "download":
        return f"{where}: the download was interrupted ({first_line(exc)}); run the same command again to resume"
    return f"{where}: {action} failed: {type(exc).__name__}: {first_line(exc)}"


def _entry_name(exc: Exception) -> str:
    url = str(getattr(getattr(exc, "response", None), "url", "") or "")
    return url.rsplit("/", 1)[-1] or "required file"
