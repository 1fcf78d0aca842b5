"""What a run reports while it trains: ``metrics.jsonl``, the loggers (TensorBoard, ...) and the rich progress bar.

Only rank 0 reports; the other ranks get stand-ins that do nothing, so the loop never asks which rank it is on
before writing. ``metrics.jsonl`` is append-only during a run; on resume, and on a rollback to the last checkpoint,
:func:`truncate_metrics` first drops the records of the steps that the run is about to replay, so that every step
appears once.
"""

from __future__ import annotations

import difflib
import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from ..errors import ConfigError
from ..interfaces import Logger
from ..loggers import TensorBoard
from ..plots import KL_GROUP_KEYS
from ..registry import unknown_name_message


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


def scalars_of(record: dict) -> dict[str, float]:
    """The numbers of a metrics.jsonl record, as loggers take them: every numeric field but ``step``, and each list
    of numbers one scalar per latent group (``kl/group_0`` for the KL per group, ``KEY/group_0`` for another list such
    as ``active_units``). Strings (``event``, ``val_unit``) and booleans are left out."""
    scalars: dict[str, float] = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            scalars[key] = float(value)
        elif isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            name = "kl" if key in KL_GROUP_KEYS else key
            scalars.update({f"{name}/group_{i}": float(v) for i, v in enumerate(value)})
    return scalars


class Loggers:
    """The loggers of a run (:class:`vaezoo.interfaces.Logger`), on rank 0; empty on the other ranks, so that the loop
    never asks which rank it is on. A logger that fails is reported once, in one line, and dropped: metrics.jsonl,
    the run's record, goes on."""

    def __init__(self, loggers: list | None = None, console: Any = None) -> None:
        self.loggers = list(loggers or [])
        self._console = console

    @classmethod
    def open(cls, specs: list[LoggerSpec], run_dir: Path, console: Any = None) -> Loggers:
        """The loggers of ``specs`` opened for ``run_dir``; one whose constructor fails (a tracker's server that
        does not answer) is reported in one line and left out, as a logger that fails later is."""
        opened = []
        for spec in specs:
            try:
                opened.append(spec.open(run_dir))
            except Exception as exc:
                _warn(console, spec.cls.__name__, "could not start", exc)
        return cls(opened, console)

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def _each(self, call: str, *args: Any) -> None:
        for logger in list(self.loggers):
            try:
                getattr(logger, call)(*args)
            except Exception as exc:  # a logger's failure (a full disk, a tracker's server) never stops training
                self.loggers.remove(logger)
                _warn(self._console, type(logger).__name__, "stopped", exc)
                if call != "close":
                    _close_quietly(logger)

    def record(self, record: dict) -> None:
        """A metrics.jsonl record's numbers (:func:`scalars_of`) at its step."""
        scalars = scalars_of(record)
        if scalars:
            self._each("log_scalars", int(record["step"]), scalars)

    def images(self, step: int, name: str, grid: Tensor) -> None:
        self._each("log_images", step, name, grid)

    def rewind(self, step: int) -> None:
        self._each("rewind", step)

    def close(self) -> None:
        self._each("close")
        self.loggers = []


def _warn(console: Any, name: str, what: str, exc: Exception) -> None:
    if console is not None:
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        console.print(f"[yellow]warning[/]: logger {name} {what}: {message}")


def _close_quietly(logger: Any) -> None:
    try:
        logger.close()
    except Exception:  # it failed already; its first failure is the one reported
        pass


@dataclass(frozen=True)
class LoggerSpec:
    """A logger a run will open: its class, its ``init_args`` and the setting that asked for it."""

    cls: type
    init_args: dict
    where: str

    def open(self, run_dir: Path) -> Logger:
        return self.cls(run_dir, **self.init_args)


def resolve_loggers(
    tensorboard: bool | None, loggers: tuple, registry: Callable[[], Any]
) -> tuple[list[LoggerSpec], str | None]:
    """The loggers of ``trainer.logging`` (its ``tensorboard`` switch, then ``loggers`` by registry name or
    ``{class_path, init_args}``), checked before a run writes anything: an unknown name (with close matches), a
    component of another kind, an argument its constructor does not take, a logger named twice, or one this
    machine cannot run (its package is not installed) is one line. ``registry`` gives the registry, asked for only
    when loggers are named (a run with TensorBoard alone builds none). Returns the specs and, when the TensorBoard
    default (null) is off because its package is missing, the note that says so."""
    specs: list[LoggerSpec] = []
    note = None
    if loggers:
        registry = registry()
        names = registry.names("logger")
    for index, spec in enumerate(loggers):
        where = f"trainer.logging.loggers[{index}]"
        name = spec if isinstance(spec, str) else spec["class_path"]
        init_args = {} if isinstance(spec, str) else dict(spec.get("init_args") or {})
        entry = registry.get("logger", name) if name in names else registry.find_class(name)
        if entry is None:
            raise ConfigError(f"{where}: {unknown_name_message('logger', name, names)}")
        if entry.kind != "logger":
            raise ConfigError(
                f"{where}: {name} is registered as {entry.kind}, not as a logger (loggers: {', '.join(names)})"
            )
        _check_init_args(entry.target, init_args, f"{where}.init_args")
        if any(s.cls is entry.target for s in specs):
            raise ConfigError(f"{where}: {entry.name} is named twice")
        specs.append(LoggerSpec(entry.target, init_args, where))
    named_tensorboard = any(s.cls is TensorBoard for s in specs)
    if tensorboard is False and named_tensorboard:
        raise ConfigError("trainer.logging.loggers names TensorBoard, but trainer.logging.tensorboard is false")
    if tensorboard and TensorBoard.missing() is not None:  # asked for explicitly: say so rather than write nothing
        raise ConfigError(
            "trainer.logging.tensorboard is true, but the tensorboard package is not installed: pip install "
            "tensorboard, or set it to null (TensorBoard logs when installed) or false"
        )
    if not named_tensorboard and tensorboard is not False:
        if TensorBoard.missing() is None:
            specs.insert(0, LoggerSpec(TensorBoard, {}, "trainer.logging.tensorboard"))
        else:
            note = "no TensorBoard: the package is not installed"
    for spec in specs:
        reason = spec.cls.missing()
        if reason is not None:
            raise ConfigError(f"{spec.where}: {spec.cls.__name__} cannot log here: {reason}")
    return specs, note


def _check_init_args(cls: type, init_args: dict, where: str) -> None:
    """The logger's constructor takes ``(run_dir, **init_args)``: an argument it does not take is one line."""
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        return
    try:
        signature.bind("run_dir", **init_args)
    except TypeError as exc:
        takes = [
            p
            for p in list(signature.parameters)[1:]
            if signature.parameters[p].kind is not inspect.Parameter.VAR_KEYWORD
        ]
        unknown = [k for k in init_args if k not in signature.parameters]
        if unknown:
            close = difflib.get_close_matches(unknown[0], takes, n=2)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(
                f"{where}.{unknown[0]}: unknown argument of {cls.__name__}{hint} (it takes: {', '.join(takes) or 'none'})"
            ) from None
        raise ConfigError(f"{where}: {cls.__name__}: {exc}") from None


def validation_summary(records: list[dict]) -> dict | None:
    """The last and the best validation of a run (records with ``val_elbo_nats``, one per step, in step order): in
    nats (the ELBO, higher is better) for a likelihood reported in nats, else in bits/dim (the negative ELBO, lower
    is better); None when none was measured. The best is the earliest step of the best value."""
    found = [r for r in records if isinstance(r.get("val_elbo_nats"), (int, float))]
    if not found:
        return None
    nats = found[-1].get("val_unit", "nats") == "nats"
    metric = "val_elbo_nats" if nats else "val_nelbo_bpd"
    best = found[0]
    for record in found[1:]:
        if (record[metric] > best[metric]) if nats else (record[metric] < best[metric]):
            best = record
    last = found[-1]
    return {
        "metric": metric,
        "examples": last.get("val_examples"),
        "last": {"step": last["step"], "value": last[metric]},
        "best": {"step": best["step"], "value": best[metric]},
    }


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
