"""Mutation testing of the modules that compute or persist, one module at a time, with mutmut.

    python benchmarks/mutation.py                      # every module in MODULES
    python benchmarks/mutation.py vaezoo/evaluation/metrics.py --max-children 2
    python benchmarks/mutation.py --list               # the modules and the tests run against each

For each module the repository's files (tracked and untracked, ignored ones left out) are copied to a scratch folder
(``--workdir``, default ``.mutation/`` here, ignored by git), the ``[tool.mutmut]`` table of ``pyproject.toml`` is
given the module (``only_mutate``) and its tests (``pytest_add_cli_args_test_selection``), and ``mutmut run`` runs
there, so the working tree is never touched and several modules can run one after another. At the end each module's
score (killed / all mutants) and its surviving mutants are printed; ``--json PATH`` writes them too. Read a survivor
with ``cd .mutation/<slug> && mutmut show NAME``.

mutmut mutates only code inside functions and derives a module's name from its path. A plugin's module
(``plugins/vaezoo_nvae/objective.py``, imported as ``vaezoo_nvae.objective``) is mutated from a copy of its package
at the top of the scratch folder (``vaezoo_nvae/``), where that path gives that name; the tests import the mutated
copy first. A large module can be restricted to the functions that compute or persist (``FUNCTIONS``: mutant-name
patterns); its score then counts those functions' mutants only. A module's run takes minutes (one test process per
mutant, on the tests listed here only, fastest first, stopping at the first failure); not part of the test suite.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: module -> the tests that state its behaviour (fast ones: each mutant runs them until one fails)
MODULES: dict[str, list[str]] = {
    "vaezoo/evaluation/metrics.py": [
        "tests/test_estimators.py",
        "tests/test_evaluate_sample.py::test_batched_iw_equals_sequential",
        "tests/nvae/test_model_api.py::test_active_units_per_group",
    ],
    "vaezoo/components/objectives.py": ["tests/test_trainer_replay.py", "tests/test_zoo_components.py"],
    "plugins/vaezoo_nvae/objective.py": [
        "tests/nvae/test_objective.py",
        "tests/test_trainer_replay.py::test_nvae_kl_warmup_coefficient_at_each_step_of_a_run",
    ],
    "vaezoo/distributions.py": [
        "tests/test_distributions.py",
        "tests/test_estimators.py",
        "tests/test_zoo_components.py",
        "tests/nvae/test_components.py",
    ],
    "vaezoo/components/likelihoods.py": [
        "tests/test_distributions.py",
        "tests/nvae/test_components.py",
        "tests/test_estimators.py",
    ],
    "vaezoo/training/optimizers.py": [
        "tests/test_param_groups.py",
        "tests/test_trainer_replay.py",
        "tests/test_training.py",
    ],
    "vaezoo/training/schedules.py": [
        "tests/test_training.py::test_learning_rate_values_by_the_formula",
        "tests/test_training.py::test_lr_schedule_warms_up_then_ends_at_lr_min",
        "tests/test_training.py::test_epochs_are_converted_to_steps_of_the_global_batch",
        "tests/test_trainer_replay.py",
    ],
    # tests that train in a child process (tests/test_faults.py) are left out: mutmut sees only its own processes
    "vaezoo/training/checkpoint.py": [
        "tests/test_checkpoint_files.py",
        "tests/test_training.py::test_failed_checkpoint_write_keeps_the_previous_one",
        "tests/test_bad_inputs.py::test_damaged_checkpoint_on_resume",
    ],
    "vaezoo/training/trainer.py": [
        "tests/test_trainer_replay.py",
        "tests/test_training_numerics.py::test_accumulated_micro_batches_match_one_large_batch",
        "tests/test_training_numerics.py::test_grad_clip_applies_the_update_of_the_clipped_gradient",
        "tests/test_training_numerics.py::test_a_finite_loss_with_a_non_finite_gradient_is_skipped",
        "tests/test_training_numerics.py::test_fp16_gradient_scaler_state_is_checkpointed_and_restored",
        "tests/test_fit.py::test_resume_is_bitwise_exact",
        "tests/test_training.py::test_bad_steps_are_skipped_and_counted",
        "tests/test_training.py::test_resume_after_a_rollback_keeps_the_reduced_learning_rate",
        "tests/test_training.py::test_a_checkpoint_of_another_world_size_or_an_older_layout_resumes",
        "tests/test_training.py::test_failed_checkpoint_write_keeps_the_previous_one",
        "tests/test_training.py::test_a_failed_first_checkpoint_write_says_there_is_none",
        "tests/test_user_mistakes.py::test_resume_with_a_changed_schedule_says_what_changed_and_refuses",
        "tests/nvae/test_model_api.py::test_cpu_speed_switches_change_nothing_but_speed",
    ],
    "vaezoo/config.py": ["tests/test_class_path_imports.py", "tests/test_recipes.py"],
    "vaezoo/hub/loading.py": [
        "tests/test_hub.py",
        "tests/test_hub_mixin.py",
        "tests/test_saved_before_layout.py::test_old_folder_loads_and_matches",
    ],
}

#: module -> the only mutants to run (fnmatch patterns of mutmut's names: ``<module>.x_<function>__mutmut_*``,
#: ``<module>.xǁ<Class>ǁ<method>__mutmut_*``); modules not listed are mutated whole
FUNCTIONS: dict[str, list[str]] = {
    "vaezoo/training/trainer.py": [
        "vaezoo.training.trainer.xǁTrainerǁtrain_step__mutmut_*",
        "vaezoo.training.trainer.xǁTrainerǁ_save__mutmut_*",
        "vaezoo.training.trainer.xǁTrainerǁ_restore__mutmut_*",
    ],
    "vaezoo/components/likelihoods.py": [  # not example(): the contract test's scaffolding
        f"vaezoo.components.likelihoods.xǁBernoulliLikelihoodǁ{name}__mutmut_*"
        for name in (
            "__init__",
            "param_channels",
            "_cropped",
            "log_prob_map",
            "log_prob",
            "sample",
            "mean",
            "num_scored_dims",
        )
    ],  # fmt: skip
    "plugins/vaezoo_nvae/objective.py": [  # its functions and the objective's methods, not example()
        "vaezoo_nvae.objective.x_*",
        *(
            f"vaezoo_nvae.objective.xǁNVAEObjectiveǁ{name}__mutmut_*"
            for name in (
                "__init__",
                "balancing_alpha",
                "kl_coefficient",
                "regularization_coefficient",
                "forward",
                "loss_from_output",
            )
        ),
    ],  # fmt: skip
    "vaezoo/components/objectives.py": [  # not the contract test's examples
        *(
            f"vaezoo.components.objectives.xǁELBOǁ{name}__mutmut_*"
            for name in ("__init__", "warmup_steps", "kl_coefficient", "forward")
        ),
        *(
            f"vaezoo.components.objectives.xǁGradientSkippingǁ{name}__mutmut_*"
            for name in ("__init__", "set_total_steps", "forward", "_on_backward")
        ),
    ],  # fmt: skip
    "vaezoo/config.py": [
        "vaezoo.config.x_resolve_class_paths__mutmut_*",
        "vaezoo.config.x_restrict_value_imports__mutmut_*",
        "vaezoo.config.x_build__mutmut_*",
    ],
    "vaezoo/hub/loading.py": [
        "vaezoo.hub.loading.x_load_folder__mutmut_*",
        "vaezoo.hub.loading.x__check_plugins__mutmut_*",
        "vaezoo.hub.loading.x__load_weights__mutmut_*",
        "vaezoo.hub.loading.x_model_folder__mutmut_*",
        "vaezoo.hub.loading.x_from_pretrained__mutmut_*",
    ],
}

#: the [tool.mutmut] table of pyproject.toml (rewritten in the scratch copy)
_TABLE = re.compile(r"^\[tool\.mutmut\]\n(?:(?!\[).*\n?)*", re.MULTILINE)


def _copy_tree(destination: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    if destination.exists():
        shutil.rmtree(destination)
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def _mutated_path(module: str) -> str:
    """The path mutmut mutates: a core module as it is, a plugin's module from its package's top-level copy."""
    return module.removeprefix("plugins/")


def _configure(folder: Path, module: str, tests: list[str]) -> None:
    """The repository's [tool.mutmut] settings, plus this module (``only_mutate``) and its tests."""
    pyproject = folder / "pyproject.toml"
    text = pyproject.read_text()
    table = dict(tomllib.loads(text).get("tool", {}).get("mutmut", {}))
    path = _mutated_path(module)
    if path != module:  # a plugin's package, copied to the top where its path gives its import name
        package = path.split("/")[0]
        shutil.copytree(folder / "plugins" / package, folder / package)
        table["source_paths"] = [*table.get("source_paths", []), package]
    table.update(only_mutate=[path], pytest_add_cli_args_test_selection=tests)
    lines = ["[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    pyproject.write_text(_TABLE.sub("", text).rstrip() + "\n\n" + "\n".join(lines) + "\n")


def _summary(folder: Path, patterns: list[str]) -> dict:
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=folder, capture_output=True, text=True).stdout
    status: dict[str, str] = {}
    for line in out.splitlines():
        name, _, verdict = line.strip().rpartition(": ")
        if name and (not patterns or any(fnmatch.fnmatchcase(name, p) for p in patterns)):
            status[name] = verdict
    counts: dict[str, int] = {}
    for verdict in status.values():
        counts[verdict] = counts.get(verdict, 0) + 1
    # a mutant no listed test reaches ("no tests") counts as surviving; a timeout (an endless loop) as killed
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    return {
        "counts": counts,
        "score": killed / len(status) if status else None,
        "survived": sorted(n for n, v in status.items() if v in ("survived", "no tests")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: all of MODULES)")
    parser.add_argument("--list", action="store_true", help="print the modules and their tests, then exit")
    parser.add_argument("--workdir", default=str(REPO / ".mutation"), help="scratch folder (default .mutation/)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count(), help="mutants run in parallel")
    parser.add_argument("--json", default=None, help="also write the scores and survivors to this file")
    args = parser.parse_args(argv)
    if args.list:
        for module, tests in MODULES.items():
            only = f" (only {', '.join(FUNCTIONS[module])})" if module in FUNCTIONS else ""
            print(f"{module}{only}\n    " + "\n    ".join(tests))
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"not in MODULES: {unknown}; choose from {list(MODULES)}")
    report = {}
    for module in args.modules or list(MODULES):
        folder = Path(args.workdir) / module.replace("/", "_").removesuffix(".py")
        _copy_tree(folder)
        tests = [t for t in MODULES[module] if (folder / t.split("::")[0]).exists()]  # older trees lack newer tests
        _configure(folder, module, tests)
        # the tests import the mutated core from mutants/ and the plugins from the copy; one thread per test process
        env = {**os.environ, "PYTHONPATH": str(folder / "plugins"), "VAEZOO_TEST_THREADS": "1", "OMP_NUM_THREADS": "1"}
        patterns = FUNCTIONS.get(module, [])
        command = ["mutmut", "run", "--max-children", str(args.max_children), *patterns]
        print(f"== {module}: {' '.join(command)} (in {folder})", flush=True)
        subprocess.run(command, cwd=folder, env=env, check=False)
        report[module] = _summary(folder, patterns)
        result = report[module]
        score = "n/a" if result["score"] is None else f"{result['score']:.1%}"
        print(f"== {module}: score {score} {result['counts']}", flush=True)
        for name in result["survived"]:
            print(f"   survived: {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
