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

mutmut mutates only code inside functions and derives a module's name from its path, so the modules are core modules
(``vaezoo/...``); the plugins' modules (``plugins/vaezoo_nvae/...``) import as ``vaezoo_nvae``, which mutmut cannot
map, and are left to the tests that replay the official fixtures. A module's run takes minutes (one test process per
mutant, on the tests listed here only); not part of the test suite.
"""

from __future__ import annotations

import argparse
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
    "vaezoo/components/objectives.py": [
        "tests/test_trainer_replay.py",
        "tests/test_training_numerics.py",
        "tests/test_zoo_components.py",
    ],
    "vaezoo/distributions.py": [
        "tests/test_estimators.py",
        "tests/test_zoo_components.py",
        "tests/nvae/test_components.py",
    ],
    "vaezoo/training/optimizers.py": ["tests/test_trainer_replay.py", "tests/test_training.py"],
    "vaezoo/training/schedules.py": ["tests/test_training.py", "tests/test_trainer_replay.py"],
    # tests that train in a child process (tests/test_faults.py) are left out: mutmut sees only its own processes
    "vaezoo/training/checkpoint.py": ["tests/test_training.py", "tests/test_bad_inputs.py"],
    "vaezoo/training/trainer.py": [
        "tests/test_trainer_replay.py",
        "tests/test_training.py",
        "tests/test_training_numerics.py",
    ],
    "vaezoo/config.py": ["tests/test_class_path_imports.py", "tests/test_recipes.py"],
    "vaezoo/hub/loading.py": ["tests/test_hub.py", "tests/test_hub_mixin.py", "tests/test_saved_before_layout.py"],
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


def _configure(folder: Path, module: str, tests: list[str]) -> None:
    """The repository's [tool.mutmut] settings, plus this module (``only_mutate``) and its tests."""
    pyproject = folder / "pyproject.toml"
    text = pyproject.read_text()
    table = dict(tomllib.loads(text).get("tool", {}).get("mutmut", {}))
    table.update(only_mutate=[module], pytest_add_cli_args_test_selection=tests)
    lines = ["[tool.mutmut]"] + [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    pyproject.write_text(_TABLE.sub("", text).rstrip() + "\n\n" + "\n".join(lines) + "\n")


def _summary(folder: Path) -> dict:
    out = subprocess.run(["mutmut", "results", "--all", "true"], cwd=folder, capture_output=True, text=True).stdout
    status: dict[str, str] = {}
    for line in out.splitlines():
        name, _, verdict = line.strip().rpartition(": ")
        if name:
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
            print(f"{module}\n    " + "\n    ".join(tests))
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
        command = ["mutmut", "run", "--max-children", str(args.max_children)]
        print(f"== {module}: {' '.join(command)} (in {folder})", flush=True)
        subprocess.run(command, cwd=folder, env=env, check=False)
        report[module] = _summary(folder)
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
