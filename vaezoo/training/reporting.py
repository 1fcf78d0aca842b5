"""What a run reports while it trains: ``metrics.jsonl``, TensorBoard scalars and the rich progress bar.

Only rank 0 reports; the other ranks get stand-ins that do nothing, so the loop never asks which rank it is on
before writing. ``metrics.jsonl`` is append-only during a run; on resume, :func:`truncate_metrics` first drops the
records of the steps that the run is about to replay, so that every step appears once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import Tensor


class NullFile:
    """Stands in for metrics.jsonl on ranks other than 0."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def open_metrics(path: Path, is_main: bool):
    """``metrics.jsonl`` opened for appending on rank 0, a :class:`NullFile` elsewhere."""
    return path.open("a") if is_main else NullFile()


def write_record(metrics_file, record: dict) -> None:
    """One JSON line, flushed at once: a killed run keeps every record written before the kill."""
    metrics_file.write(json.dumps(record) + "\n")
    metrics_file.flush()


def truncate_metrics(path: Path, step: int) -> int:
    """Drop the records of ``metrics.jsonl`` after ``step`` (those of the steps a resumed run replays), and any line
    cut short by a kill in the middle of a write. Returns how many lines were dropped.

    The file is rewritten atomically (temporary file, then ``os.replace``), so a kill during the rewrite leaves
    either the old file or the new one; when nothing needs dropping the file is left untouched.
    """
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # the torn last line of a killed run
            dropped += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step:
            dropped += 1
        else:
            kept.append(line + "\n")
    if dropped:
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w") as handle:
            handle.writelines(kept)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    return dropped


def step_record(metrics: dict, loss: Tensor, grad_norm: Tensor, lr: float, state: dict, images_per_s: float) -> dict:
    """The record of one logged step: the objective's metrics as plain numbers, then the loop's own."""
    record: dict[str, Any] = {"step": state["step"], "loss": float(loss)}
    for key, value in metrics.items():
        if isinstance(value, Tensor):
            value = value.detach().float().cpu()
            record[key] = value.tolist() if value.ndim else float(value)
        else:
            record[key] = value
    record.update(
        grad_norm=float(grad_norm),
        lr=lr,
        skipped_steps=state["skipped_steps"],
        rollbacks=state["rollbacks"],
        images_per_s=images_per_s,
    )
    return record


def tensorboard_writer(directory: Path):
    """A TensorBoard ``SummaryWriter``, or None when tensorboard is not installed (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(directory))


def write_scalars(writer, record: dict, step: int) -> None:
    """The numeric fields of a step record as TensorBoard scalars (a no-op without a writer)."""
    if writer is None:
        return
    for key, value in record.items():
        if isinstance(value, (int, float)) and key != "step":
            writer.add_scalar(key, value, step)


def progress_bar(enabled: bool, console: Any):
    """The ``fit`` progress bar: steps done, loss, KL and speed (disabled on other ranks and with progress=false)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]fit"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.2f}"),
        TextColumn("kl {task.fields[kl]:.2f}"),
        TextColumn("{task.fields[rate]:.1f} steps/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    return Progress(*columns, console=console, disable=not enabled, transient=False)
