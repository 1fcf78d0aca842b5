"""What a run reports while it trains: ``metrics.jsonl``, TensorBoard scalars and the rich progress bar.

Only rank 0 reports; the other ranks get stand-ins that do nothing, so the loop never asks which rank it is on
before writing. ``metrics.jsonl`` is append-only during a run; on resume, and on a rollback to the last checkpoint,
:func:`truncate_metrics` first drops the records of the steps that the run is about to replay, so that every step
appears once.
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

    def drop_after(self, step: int) -> int:
        return 0

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


class MetricsFile:
    """``metrics.jsonl`` open for appending, which can also forget the steps a rollback is about to replay."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("a")

    def write(self, text: str) -> None:
        self._handle.write(text)

    def flush(self) -> None:
        self._handle.flush()

    def drop_after(self, step: int) -> int:
        """:func:`truncate_metrics` on the file (events kept), reopened after it (the rewrite replaces the file)."""
        self._handle.close()
        try:
            return truncate_metrics(self.path, step, keep_events=True)
        finally:
            self._handle = self.path.open("a")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()


def open_metrics(path: Path, is_main: bool):
    """``metrics.jsonl`` opened for appending on rank 0, a :class:`NullFile` elsewhere."""
    return MetricsFile(path) if is_main else NullFile()


def write_record(metrics_file, record: dict) -> None:
    """One JSON line, flushed at once: a killed run keeps every record written before the kill."""
    metrics_file.write(json.dumps(record) + "\n")
    metrics_file.flush()


def truncate_metrics(path: Path, step: int, keep_events: bool = False) -> int:
    """Drop the records of ``metrics.jsonl`` after ``step`` (those of the steps a resumed run replays), and any line
    cut short by a kill in the middle of a write. Returns how many lines were dropped. ``keep_events`` keeps the
    event records (``{"event": ...}``: rollbacks, failed checkpoint writes) of the dropped steps.

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
        replayed = isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] > step
        if replayed and not (keep_events and "event" in record):
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


def tensorboard_installed() -> bool:
    """Whether the optional tensorboard package is importable (found without importing it)."""
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


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


#: what the progress bar shows for a value not measured yet (before the first logged step)
NOT_YET = "…"


def field_text(template: str, value: float | None, spec: str) -> str:
    """``template`` with ``value`` formatted by ``spec`` in place of ``{}``, or :data:`NOT_YET` while it is None (a
    real NaN loss still shows as nan)."""
    return template.format(NOT_YET if value is None else format(value, spec))


def progress_bar(enabled: bool, console: Any):
    """The ``fit`` progress bar: steps done, loss, KL and speed (disabled on other ranks and with progress=false).
    The task's ``loss``, ``kl`` and ``rate`` fields are None until the first logged step."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class FieldColumn(ProgressColumn):
        def __init__(self, template: str, field: str, spec: str) -> None:
            super().__init__()
            self.template, self.field, self.spec = template, field, spec

        def render(self, task) -> Text:
            return Text(field_text(self.template, task.fields.get(self.field), self.spec))

    columns = [
        TextColumn("[bold]fit"),
        BarColumn(),
        MofNCompleteColumn(),
        FieldColumn("loss {}", "loss", ".2f"),
        FieldColumn("kl {}", "kl", ".2f"),
        FieldColumn("{} steps/s", "rate", ".1f"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    return Progress(*columns, console=console, disable=not enabled, transient=False)
