"""Training curves of a run as one PNG: ``vaezoo plot RUN_DIR`` and, at the end of ``vaezoo fit``, :func:`plot_run`.

The curves come from ``RUN_DIR/metrics.jsonl`` (one JSON record per logged step, see
:mod:`vaezoo.training.reporting`). A panel is drawn only when its metrics are present:

- loss, reconstruction and KL (``loss``, ``recon``, ``kl``, ``nelbo``);
- KL per latent group (``kl_vals`` or ``kl_per_group``: a list per record, one line per group);
- active units per latent group (the records with ``active_units``, written at checkpoints);
- learning rate (``lr``) and the KL coefficient (``kl_coeff``);
- the validation ELBO (records with ``val_elbo_nats``, written every ``trainer.evaluation.val_every`` steps; in
  bits/dim, ``val_nelbo_bpd``, for a likelihood reported in bits/dim).

It works on a run in progress (a half-written last line is skipped) and on a resumed run: the steps a resumed
run replays may appear twice, and the last record of each step wins. matplotlib draws with its Agg backend (no
display needed) and is imported only here.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from .errors import VaezooError

METRICS_NAME = "metrics.jsonl"
PLOT_NAME = "curves.png"
PANEL_SIZE = (6.0, 3.5)  # inches, per panel
DPI = 100

#: the keys of the first panel, and those of the per-group KL panel (the first one present)
LOSS_KEYS = ("loss", "nelbo", "recon", "kl")
KL_GROUP_KEYS = ("kl_vals", "kl_per_group")
#: records that are not a step's training metrics, by the key that marks them (their own kind in :func:`read_metrics`)
RECORD_KINDS = ("event", "active_units", "val_elbo_nats")


@dataclass(frozen=True)
class PlotResult:
    """The PNG written and the titles of its panels, in order."""

    path: Path
    panels: list[str]
    #: how many steps have records (the logged ones, not every step trained), and the last of them
    steps: int
    last_step: int


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a metrics.jsonl in step order, the last record of each step (and kind) kept.

    Step records, ``active_units`` records, validation records and events (e.g. rollbacks) of the same step are
    different kinds.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise VaezooError(f"cannot read {path}: {exc.strerror or exc}") from exc
    latest: dict[tuple[int, str], dict] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # the line a running fit is writing
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            continue
        kind = next((k for k in RECORD_KINDS if k in record), "step")
        latest.pop((record["step"], kind), None)  # re-inserted: a replayed step moves to its new place
        latest[(record["step"], kind)] = record
    return sorted(latest.values(), key=lambda r: r["step"])


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> PlotResult:
    """Write the training curves of ``run_dir`` to ``out`` (default ``RUN_DIR/curves.png``), atomically."""
    run_dir = Path(run_dir)
    metrics = run_dir / METRICS_NAME
    if not metrics.is_file():
        raise VaezooError(f"{run_dir} has no {METRICS_NAME}: not a vaezoo run directory (or nothing logged yet)")
    records = read_metrics(metrics)
    panels = _panels(records)
    if not panels:
        raise VaezooError(f"{metrics} has no step records to plot yet")
    out = Path(out) if out is not None else run_dir / PLOT_NAME
    if out.suffix.lower() != ".png":
        raise VaezooError(f"the plot is a PNG file: {out} does not end in .png")

    # the object API with an Agg canvas: no display needed, and pyplot's global backend is left alone
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = 2 if len(panels) > 1 else 1
    rows = (len(panels) + columns - 1) // columns
    figure = Figure(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).flatten()
    for ax, (title, series) in zip(axes, panels, strict=False):
        # the KL is orders of magnitude below the loss early on: it gets its own axis on the right
        twin = ax.twinx() if "kl" in series and len(series) > 1 else None
        lines = []
        for index, (label, (xs, ys)) in enumerate(series.items()):
            target = twin if twin is not None and label == "kl" else ax
            lines += target.plot(xs, ys, label=label, linewidth=1.2, color=f"C{index % 10}")
        if twin is not None:
            twin.set_ylabel("kl")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if 1 < len(series) <= 12:
            ax.legend(handles=lines, fontsize="small", ncols=2 if len(series) > 6 else 1)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    figure.suptitle(f"{run_dir.name}: {len(records)} records, last step {records[-1]['step']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{uuid.uuid4().hex[:8]}.tmp.png")
    try:
        figure.savefig(tmp, format="png")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return PlotResult(out, [title for title, _ in panels], len({r["step"] for r in records}), records[-1]["step"])


def _panels(records: list[dict]) -> list[tuple[str, dict[str, tuple[list, list]]]]:
    """(title, {label: (steps, values)}) of every panel whose metrics are present."""
    steps = [r for r in records if not any(kind in r for kind in RECORD_KINDS)]
    panels = []
    losses = {key: _scalar_series(steps, key) for key in LOSS_KEYS}
    losses = {key: s for key, s in losses.items() if s[0]}
    if losses:
        panels.append(("Loss, reconstruction and KL", losses))
    for key in KL_GROUP_KEYS:
        groups = _list_series(steps, key, "group")
        if groups:
            panels.append(("KL per latent group", groups))
            break
    units = _list_series([r for r in records if "active_units" in r], "active_units", "group")
    if units:
        panels.append(("Active units per latent group", units))
    for title, key in (("Learning rate", "lr"), ("KL coefficient", "kl_coeff")):
        series = _scalar_series(steps, key)
        if series[0]:
            panels.append((title, {key: series}))
    validations = [r for r in records if "val_elbo_nats" in r]
    if validations:
        # in the unit the run reports: the ELBO in nats, or the negative ELBO in bits/dim
        key = "val_elbo_nats" if validations[-1].get("val_unit", "nats") == "nats" else "val_nelbo_bpd"
        examples = validations[-1].get("val_examples")
        title = "Validation ELBO (nats)" if key == "val_elbo_nats" else "Validation negative ELBO (bits/dim)"
        panels.append(
            (f"{title}, {examples} test examples" if examples else title, {key: _scalar_series(validations, key)})
        )
    return panels


def _scalar_series(records: list[dict], key: str) -> tuple[list, list]:
    xs, ys = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            xs.append(record["step"])
            ys.append(float(value))
    return xs, ys


def _list_series(records: list[dict], key: str, label: str) -> dict[str, tuple[list, list]]:
    series: dict[str, tuple[list, list]] = {}
    for record in records:
        values = record.get(key)
        if not isinstance(values, list):
            continue
        for i, value in enumerate(values):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                xs, ys = series.setdefault(f"{label} {i}", ([], []))
                xs.append(record["step"])
                ys.append(float(value))
    return series
