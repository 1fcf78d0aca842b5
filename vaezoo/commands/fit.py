"""``vaezoo fit RECIPE.yaml [--config OVERLAY.yaml ...] [--dotted.key value ...]``.

A recipe describes a whole run: ``model``, ``objective``, ``data`` (component specs), ``trainer``
(the :class:`vaezoo.training.Trainer` arguments), ``seed`` and ``run_dir``. Overlays compose left
to right; ``--print_config`` prints the resolved recipe and exits.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from ..config import namespace_to_dict, short_spec
from ..errors import VaezooError
from ..evaluation.paired import paired_differences
from ..evaluation.protocol import card_metrics, protocol_text
from ..plots import plot_run
from ..plugins import get_registry
from ..provenance import finished, now, provenance
from ..training import Trainer
from ..training.checkpoint import list_checkpoints, load_checkpoint
from ._recipe import add_recipe_arguments, check_registered, check_trainer_values, instantiate_recipe

NAME = "fit"
HELP = "Train a model from a recipe."
RECIPE_POSITIONAL = True
#: the run's provenance record (vaezoo.provenance), beside config.yaml
PROVENANCE_NAME = "provenance.json"
_parser = None


def add_arguments(parser) -> None:
    global _parser
    add_recipe_arguments(parser)
    parser.add_argument("--run_dir", type=str | None, default=None, help="default: runs/<recipe name>")
    parser.add_argument(
        "--resume", type=bool, default=False, help="continue the run in run_dir from its last checkpoint"
    )
    parser.add_argument(
        "--allow_changed_schedule",
        type=bool,
        default=False,
        help="resume even though values that define the schedules (steps, learning rates, warm-ups, batch size, "
        "objective) differ from the run's: the schedules are then recomputed from the new values",
    )
    _parser = parser


def run(cfg) -> int:
    import torch
    from rich.console import Console

    from ..training.distributed import init_from_environment, shutdown

    started = now()
    check_registered(cfg)
    run_dir = Path(cfg.run_dir or Path("runs") / _recipe_name(cfg))
    if not cfg.resume and list_checkpoints(run_dir / "checkpoints"):
        raise VaezooError(f"run directory {run_dir} already has checkpoints; pass --resume true or another --run_dir")
    trainer_args = namespace_to_dict(cfg.trainer)
    check_trainer_values(trainer_args)
    ctx, device = init_from_environment(trainer_args.get("device", "auto"))
    try:
        torch.manual_seed(cfg.seed)  # weight initialisation is part of the run's seeded randomness
        model, objective, data = instantiate_recipe(_parser, cfg)
        trainer = Trainer(**{**trainer_args, "device": str(device)})
        trainer.ctx = ctx
        console = Console(soft_wrap=True, quiet=not ctx.is_main)

        trainer.check(model, data)
        recipe_text = _parser.dump(cfg)
        record = provenance(recipe_text=recipe_text, recipe_file=_recipe_file(cfg), started=started)
        if cfg.resume:  # a missing or damaged checkpoint is refused before config.yaml is rewritten
            checkpoint = _check_resumable(run_dir)
            if not cfg.allow_changed_schedule:
                schedule = trainer.resolved_schedule(data.batch_size, len(data.train_dataset()), ctx.world_size)
                recipe_now = yaml.safe_load(recipe_text)
                _check_schedule_unchanged(checkpoint.get("schedule"), schedule, run_dir / "config.yaml", recipe_now)
            record["resumed_from_step"] = int(checkpoint["step"])
            record["earlier"] = _earlier_records(run_dir / PROVENANCE_NAME)
        if ctx.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            _write_text(run_dir / "config.yaml", recipe_text)
            # beside config.yaml, which stays a recipe that fit reads back; rewritten with the end time at the end
            _write_text(run_dir / PROVENANCE_NAME, json.dumps(record, indent=2) + "\n")
        n_params = sum(p.numel() for p in model.parameters())
        global_batch = data.batch_size * ctx.world_size * trainer.accumulate
        console.print(
            f"[bold]vaezoo fit[/]: {type(model).__name__} ({n_params:,} parameters) on {data.describe()}, "
            f"global batch {global_batch} ({data.batch_size} x {ctx.world_size} processes x {trainer.accumulate} accumulated) -> {run_dir}"
        )
        logs = ["metrics.jsonl", *(spec.cls.describe(run_dir) for spec in trainer.logger_specs)]
        note = f" ({trainer.logging_note})" if trainer.logging_note else ""
        console.print(f"logs: {', '.join(logs[:-1]) + ' and ' if len(logs) > 1 else ''}{logs[-1]}{note}")
        started = time.perf_counter()
        summary = trainer.fit(
            model,
            objective,
            data,
            run_dir,
            seed=cfg.seed,
            resume=cfg.resume,
            console=console,
            provenance=record,
        )
        minutes = (time.perf_counter() - started) / 60
        shutdown(together=True)  # every rank leaves the process group at once; what follows is rank 0's alone
        if not ctx.is_main:
            return 0
        result = trainer.test(model, data, seed=cfg.seed)
        protocol = protocol_text(model, data, trainer.settings.evaluation.k)
        report = {
            **summary,
            "minutes": minutes,
            "parameters": n_params,
            "global_batch": global_batch,
            **result.as_dict(),
            "protocol": protocol,
        }
        reference = model.reference_priors()  # e.g. a joint prior's model: also the bound with the priors it replaces
        if reference is not None:
            with reference:
                own = trainer.test(model, data, seed=cfg.seed)
            report["reference_priors"] = own.as_dict()
            # the same seed, so the same posterior noise: the difference is the priors', with its standard error
            paired = paired_differences(result, own)
            report["paired_difference"] = {name: value.as_dict() for name, value in paired.items()}
        report["provenance"] = record = finished(record)
        _write_text(run_dir / "results.json", json.dumps(report, indent=2) + "\n")
        _write_text(run_dir / PROVENANCE_NAME, json.dumps(record, indent=2) + "\n")
        _save_model(
            model,
            run_dir / "model",
            dataset=data.describe(),
            metrics=card_metrics(result, protocol, source=f"vaezoo fit, after {summary['step']} steps"),
            provenance=record,
        )
        curves = plot_run(run_dir)  # the training curves, to look at as well as to read
        console.print(
            f"{result.describe()} after {summary['step']} steps ({minutes:.1f} min, {summary['skipped_steps']} skipped)"
        )
        if reference is not None:
            console.print(f"with the priors it replaces: {own.describe()}")
            for name, value in paired.items():
                console.print(
                    f"paired difference of the {name.replace('_', ' ')}, model - replaced: {value.describe()}"
                )
        validation = summary.get("validation")
        if validation is not None:
            unit = "nats" if validation["metric"] == "val_elbo_nats" else "bits/dim"
            best, last = validation["best"], validation["last"]
            console.print(
                f"validation ({validation['examples']} test examples, {validation['metric']}): best "
                f"{best['value']:.4f} {unit} at step {best['step']}, last {last['value']:.4f} at step {last['step']}"
            )
        console.print(f"training curves: {curves.path} ({', '.join(curves.panels)})")
        return 0
    finally:
        shutdown()


def _check_resumable(run_dir: Path) -> dict:
    """The last checkpoint of ``run_dir``, read (the trainer restores it later; this validates it)."""
    found = list_checkpoints(run_dir / "checkpoints")
    if not found:
        raise VaezooError(f"--resume: no checkpoint in {run_dir / 'checkpoints'}")
    return load_checkpoint(found[-1][1])


def _check_schedule_unchanged(saved: dict | None, now: dict, saved_config: Path, recipe_now: dict) -> None:
    """Refuse to resume when the values the schedules are computed from differ from the run's: the trainer's resolved
    schedule (:meth:`Trainer.schedule`, saved in every checkpoint: steps, warm-up, learning rates, global batch) and
    the objective's spec (its KL warm-up runs over the total steps; read from the run's ``config.yaml``). Otherwise a
    longer ``max_steps`` re-stretches the cosine decay mid-run and the learning rate jumps back up, without a word.
    The world size may change as long as the global batch does not."""
    changed = []
    if saved is not None:
        changed += [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in now.items() if saved.get(key) != value]
    try:
        old_recipe = yaml.safe_load(saved_config.read_text())
    except (OSError, yaml.YAMLError):
        old_recipe = None
    if isinstance(old_recipe, dict) and "objective" in old_recipe:
        registry = get_registry()  # class paths by name: a component that moved is not a change
        before, after = short_spec(old_recipe["objective"], registry), short_spec(recipe_now.get("objective"), registry)
        changed += _differences(before, after, "objective")
    if changed:
        raise VaezooError(
            f"--resume: the run's schedules would change ({'; '.join(changed)}): the learning-rate and KL schedules "
            "would be recomputed mid-run. Pass --allow_changed_schedule true to resume anyway, or use another run_dir"
        )


def _differences(before, after, where: str) -> list[str]:
    """``key.path old -> new`` for each leaf that differs between two specs."""
    if isinstance(before, dict) and isinstance(after, dict) and before.get("class_path") == after.get("class_path"):
        found = []
        for key in sorted(set(before) | set(after), key=str):
            found += _differences(before.get(key), after.get(key), f"{where}.{key}")
        return found
    return [] if before == after else [f"{where} {before!r} -> {after!r}"]


def _recipe_file(cfg) -> str | None:
    """The recipe file the run started from (the first --config), or None."""
    configs = cfg.get("config") or []
    if not configs:
        return None
    first = configs[0]
    return str(getattr(first, "absolute", None) or getattr(first, "relative", None) or first)


def _earlier_records(path: Path) -> list[dict]:
    """The provenance records of the earlier invocations of a resumed run, oldest first (none when unreadable)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(record, dict):
        return []
    earlier = record.pop("earlier", [])
    return [*(earlier if isinstance(earlier, list) else []), record]


def _recipe_name(cfg) -> str:
    configs = cfg.get("config") or []
    if configs:
        first = configs[0]
        path = getattr(first, "relative", None) or getattr(first, "absolute", None) or str(first)
        return Path(str(path)).stem
    return "run"


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _save_model(model, directory: Path, **card) -> None:
    try:
        from ..hub import save_pretrained
    except ImportError:  # the hub module is optional for training
        return
    save_pretrained(model, directory, **card)
