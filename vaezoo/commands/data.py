"""``vaezoo data prepare NAME SOURCE DEST``, ``vaezoo data verify DEST`` and ``vaezoo data download NAME ROOT``.

``prepare`` builds the LMDB pair (``train.lmdb``, ``validation.lmdb``, the official NVAE layout), the
split lists and ``manifest.json`` (counts, sha256 of every file) of a preparable data set, atomically, with a
progress bar per split on a terminal (:mod:`vaezoo.progress`); ``verify`` checks a prepared folder against its
manifest; ``download`` fetches the public archives of a data set that has them into ROOT, md5-checked and
atomically (:mod:`vaezoo.data.download`), with a byte-count bar on a terminal.
"""

from __future__ import annotations

import time

NAME = "data"
HELP = (
    "Download the data sets that have a public archive (download NAME ROOT), prepare data sets as LMDBs with "
    "checksums (prepare NAME SOURCE DEST) and verify them (verify DEST)."
)


def add_arguments(parser) -> None:
    from ..data.download import MIRROR_ENV, downloadable_datasets
    from ..data.prepare import preparable_datasets

    names = ", ".join(preparable_datasets()) or "none registered"
    downloadable = ", ".join(downloadable_datasets()) or "none registered"
    # one level of subcommands: the CLI adds each command's arguments before attaching it, which jsonargparse
    # forbids for nested subcommands, so the action is a positional choice and its operands follow it
    parser.add_argument(
        "action",
        choices=["prepare", "verify", "download"],
        help="prepare NAME SOURCE DEST | verify DEST | download NAME ROOT",
    )
    parser.add_argument(
        "operands",
        type=str,
        nargs="+",
        help=f"prepare: NAME ({names}), SOURCE (the data set's files), DEST (a new folder); verify: DEST; "
        f"download: NAME ({downloadable}), ROOT (the data module's root; ${MIRROR_ENV}=URL fetches from a mirror)",
    )
    parser.add_argument(
        "--image_size",
        type=int | None,
        default=None,
        help="prepare: stored image side, for data sets stored resized (default: the data set's, e.g. 256)",
    )
    parser.add_argument(
        "--test_size",
        type=int | float | None,
        default=None,
        help="prepare: test images, a count or a fraction in (0, 1) (default: the official split, adapted)",
    )
    parser.add_argument(
        "--seed", type=int | None, default=None, help="prepare: seed of the train/test split (default 0)"
    )
    parser.add_argument("--workers", type=int, default=1, help="prepare: processes decoding images")


def run(cfg) -> int:
    from ..errors import VaezooError

    expected = {"prepare": ("NAME", "SOURCE", "DEST"), "verify": ("DEST",), "download": ("NAME", "ROOT")}[cfg.action]
    if len(cfg.operands) != len(expected):
        raise VaezooError(
            f"usage: vaezoo data {cfg.action} {' '.join(expected)} (got {len(cfg.operands)} operands: {' '.join(cfg.operands)})"
        )
    if cfg.action == "verify":
        return _verify(cfg.operands[0])
    if cfg.action == "download":
        return _download(*cfg.operands)
    return _prepare(cfg, *cfg.operands)


def _download(name: str, root: str) -> int:
    from ..data.download import dataset_class, download
    from ..progress import new_progress

    cls = dataset_class(name)
    started = time.perf_counter()
    with new_progress(transfer=True) as progress:
        result = download(cls, root, progress=progress)
    data = cls(root=root).describe()
    if not result.downloaded:
        print(f"{cls.__name__}: already in {root}, nothing downloaded: {data}")
        return 0
    print(
        f"{cls.__name__}: {len(result.files)} files ({result.size_bytes / 1e6:.1f} MB, md5 verified) -> {result.folder} in "
        f"{time.perf_counter() - started:.1f} s: {data}"
    )
    return 0


def _prepare(cfg, name: str, source: str, dest: str) -> int:
    from ..data.prepare import PrepareOptions, prepare
    from ..progress import new_progress

    options = PrepareOptions(image_size=cfg.image_size, test_size=cfg.test_size, seed=cfg.seed, workers=cfg.workers)
    started = time.perf_counter()
    with new_progress() as progress:
        manifest = prepare(name, source, dest, options, progress=_progress_reporter(progress))
    splits = manifest["splits"]
    size = f"{manifest['image_size']}x{manifest['image_size']} " if manifest["image_size"] else ""
    print(
        f"{name}: {splits['train']['count']} train / {splits['test']['count']} test images "
        f"({size}{manifest['encoding']}) -> {dest} in {time.perf_counter() - started:.1f} s; "
        f"checksums in {dest}/manifest.json"
    )
    return 0


def _verify(dest: str) -> int:
    from ..data.lmdb_images import verify_prepared

    manifest = verify_prepared(dest)
    counts = ", ".join(f"{split} {info['count']}" for split, info in manifest["splits"].items())
    print(f"{dest}: {manifest['dataset']} ok ({counts} images; {len(manifest['files'])} files match their sha256)")
    return 0


def _progress_reporter(progress):
    """``prepare``'s ``progress(label, done, total)`` callback drawing one bar per split (nothing off a terminal)."""
    if progress.disable:
        return None
    tasks: dict[str, int] = {}

    def report(label: str, done: int, total: int) -> None:
        if label not in tasks:
            tasks[label] = progress.add_task(label, total=total)
        progress.update(tasks[label], completed=done)

    return report
