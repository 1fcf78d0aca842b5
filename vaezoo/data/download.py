"""``vaezoo data download NAME ROOT`` and the data modules' ``download: true``: fetch a data set's public archives.

A data module class is *downloadable* when it declares ``archives`` (:class:`Archive`: file name, md5, urls) and the
``archive_folder`` they fill under ``root`` (class data of :class:`vaezoo.interfaces.DataModule`); the command finds
the class in the registry and calls :func:`download`, so a third-party data set becomes downloadable by declaring
them.

The files are fetched and checked with torchvision's own utilities (``download_url``: the md5 of every file;
``extract_archive``), into a temporary folder under ``root``; the complete folder is renamed into place only when
every archive is verified and extracted and the data module reads the result. A failed or interrupted download
(no network, a wrong checksum, Ctrl-C) leaves nothing under ``root`` that a later run would take for data, and an
existing folder is never overwritten.

``VAEZOO_DATA_MIRROR=URL`` fetches every archive from ``URL/FILENAME`` instead of its official addresses (a mirror
inside a network without internet access, or a local server in tests).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import shutil
import socket
import tempfile
import threading
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, VaezooError
from ..progress import progress_bar, tqdm_class
from ..registry import unknown_name_message

MIRROR_ENV = "VAEZOO_DATA_MIRROR"
#: seconds a connection or a read may wait for the server (a silent network fails instead of hanging)
TIMEOUT_S = 60.0
_lock = threading.Lock()  # torchvision's bar and the socket timeout are process-wide while a file downloads


@dataclass(frozen=True)
class Archive:
    """One file of a data set's public distribution."""

    #: the file's name (also its name on a ``VAEZOO_DATA_MIRROR``)
    filename: str
    #: md5 of the file as published (the download is refused when it differs)
    md5: str
    #: official addresses, tried in order
    urls: tuple[str, ...]
    #: folder under ``root`` it is downloaded and extracted into ("" for ``root`` itself); the file stays when this
    #: is inside the data set's ``archive_folder`` (MNIST's .gz files), else it is deleted once extracted (a tarball)
    folder: str = ""


@dataclass(frozen=True)
class Downloaded:
    """What :func:`download` did."""

    folder: Path  # the folder the archives filled (root itself when the data was already there)
    downloaded: bool  # False: the data was already there and nothing was fetched
    files: tuple[str, ...] = ()  # the archives fetched
    size_bytes: int = 0  # their total size


def downloadable_datasets() -> dict[str, type]:
    """Registered data set name -> class, for those that declare archives."""
    from ..plugins import get_registry

    return {e.name: e.target for e in get_registry().entries("dataset") if getattr(e.target, "archives", ())}


def dataset_class(name: str) -> type:
    """The registered data module class named ``name`` (case-insensitive)."""
    from ..plugins import get_registry

    names = get_registry().names("dataset")
    found = name if name in names else next((n for n in names if n.lower() == name.lower()), None)
    if found is None:
        raise ConfigError(unknown_name_message("data set", name, names))
    return get_registry().get("dataset", found).target


def archive_urls(archive: Archive) -> tuple[str, ...]:
    """Where ``archive`` is fetched from: ``$VAEZOO_DATA_MIRROR/FILENAME`` when the mirror is set, else its urls."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return (f"{mirror.rstrip('/')}/{archive.filename}",) if mirror else tuple(archive.urls)


def reads(cls: type, root: Path) -> str | None:
    """None when ``cls(root=root)`` finds its data there, else why not (its one-line error)."""
    try:
        cls(root=str(root))
    except VaezooError as exc:
        return str(exc)
    return None


def download(cls: type, root: str | Path, progress=None) -> Downloaded:
    """Fetch the archives of data module class ``cls`` into ``root`` unless its data is already there.

    ``progress``: a :class:`rich.progress.Progress` to draw the byte counts in (default: a bar of its own on a
    terminal, nothing otherwise). Raises a one-line :class:`ConfigError` for a data set without archives, a folder
    in the way, an unreachable server or a wrong checksum; nothing is left under ``root`` then.
    """
    name = cls.__name__
    if not cls.archives:
        hint = f". {cls.source_hint}" if cls.source_hint else ""
        raise ConfigError(f"{name} has no public archive that vaezoo can download{hint}")
    root = Path(root).expanduser()
    target = root / cls.archive_folder
    if reads(cls, root) is None:
        return Downloaded(root, downloaded=False)
    if target.exists() or target.is_symlink():
        raise ConfigError(
            f"{target} exists but {name} cannot read it ({reads(cls, root)}); vaezoo never overwrites: remove it and "
            "download again"
        )
    created = _missing_ancestors(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.download-", dir=root))
    except OSError as exc:
        raise ConfigError(f"cannot write to {root} ({exc.strerror or exc})") from exc
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make the data private
        total = 0
        with progress_bar(progress, transfer=True) as bars:
            for archive in cls.archives:
                total += _fetch(name, archive, staging / archive.folder, root, cls.source_hint, bars)
        problem = reads(cls, staging)
        if problem is not None:
            raise ConfigError(f"the archives of {name} do not hold what it reads ({problem})")
        _move_into_place(cls, staging / cls.archive_folder, target, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # the folders this call made, deepest first, when nothing else went there
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    shutil.rmtree(staging, ignore_errors=True)  # what is left: archives outside the archive folder
    return Downloaded(target, downloaded=True, files=tuple(a.filename for a in cls.archives), size_bytes=total)


def _fetch(name: str, archive: Archive, folder: Path, root: Path, hint: str, bars) -> int:
    """Download ``archive`` into ``folder``, check its md5 and extract it; returns its size in bytes."""
    from torchvision.datasets.utils import calculate_md5, download_url, extract_archive

    path = folder / archive.filename
    problems = []
    for url in archive_urls(archive):
        try:
            with _torchvision_bar(bars, archive.filename):
                download_url(url, str(folder), filename=archive.filename, md5=archive.md5)
        except Exception as exc:  # noqa: BLE001 - every failure of one address is reported, the next one is tried
            if type(exc) is RuntimeError and path.is_file():  # torchvision's "File not found or corrupted."
                problems.append(
                    f"{url}: md5 {calculate_md5(str(path))}, expected {archive.md5} (a corrupt or changed file)"
                )
            else:
                problems.append(f"{url}: {_describe(exc)}")
            path.unlink(missing_ok=True)
            continue
        size = path.stat().st_size
        try:
            if _is_archive(archive.filename):
                extract_archive(str(path), str(folder))
        except Exception as exc:  # noqa: BLE001 - a verified file that does not unpack: say which
            raise ConfigError(f"cannot extract {archive.filename} of {name} ({_describe(exc)})") from exc
        return size
    mirror = "" if os.environ.get(MIRROR_ENV, "").strip() else f"set {MIRROR_ENV}=URL to use a mirror holding it, or "
    raise ConfigError(
        f"cannot download {archive.filename} of {name}: {'; '.join(problems)}. Nothing was written to {root}; "
        f"{mirror}get the data yourself. {hint}"
    )


def _is_archive(filename: str) -> bool:
    return filename.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".zip", ".gz", ".bz2", ".xz"))


def _move_into_place(cls: type, built: Path, target: Path, root: Path) -> None:
    """Rename the complete folder ``built`` to ``target`` (one rename on the same file system)."""
    created = _missing_ancestors(target.parent)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        built.rename(target)
    except OSError as exc:
        if reads(cls, root) is None:  # another process (a rank of the same run) put the same data there meanwhile
            return
        for folder in created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise ConfigError(f"cannot move the downloaded {cls.__name__} into {target} ({exc.strerror or exc})") from exc


def _describe(exc: BaseException) -> str:
    """One short phrase for a failed request."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if not isinstance(exc.reason, BaseException):
            return str(exc.reason)
        exc = exc.reason
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer within {TIMEOUT_S:g} s"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror or exc})"
    if isinstance(exc, http.client.HTTPException):
        return f"the connection broke ({type(exc).__name__})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _torchvision_bar(bars, label: str) -> Iterator[None]:
    """torchvision draws its download bar with the ``tqdm`` its utilities imported (always, on stderr); while a
    file downloads that name is lent a stand-in drawing a task of ``bars`` (nothing off a terminal), and sockets
    wait at most :data:`TIMEOUT_S`."""
    import torchvision.datasets.utils as tv_utils

    with _lock:
        previous_bar, previous_timeout = tv_utils.tqdm, socket.getdefaulttimeout()
        tv_utils.tqdm = functools.partial(tqdm_class(bars), desc=label)
        socket.setdefaulttimeout(TIMEOUT_S)
        try:
            yield
        finally:
            tv_utils.tqdm = previous_bar
            socket.setdefaulttimeout(previous_timeout)


def _missing_ancestors(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    return missing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
