"""Property-based fuzzing (hypothesis) of the recipe and command-line surface: only invalid inputs are generated, and
every one must end with exit status 2, ONE line on stderr and no traceback, within a bounded time and memory, with
nothing written (no run folder, no output file, nothing in the working directory).

Generated: recipe overlays with wrong types, non-finite and out-of-range numbers, unknown and misplaced keys; whole
recipe and overlay files that are empty, binary, not UTF-8, nested too deeply or alias bombs; argument values of the
wrong type for every typed option of every subcommand (found by introspecting the parsers, so a new option is fuzzed
too) and out-of-range values of the options whose range the commands define.

Two runs:

- The default run (the README's test command) replays a fixed set: every input that ever failed, as an explicit
  ``@example``, and 25 generated examples per strategy from a fixed seed (``derandomize``; hypothesis is pinned in the
  ``test`` extra, so these are the same inputs on every machine). It takes about a minute on 2 cores.
- The deep run searches anew each time (random seeds, ``VAEZOO_FUZZ_EXAMPLES`` examples per strategy)::

      VAEZOO_FUZZ_EXAMPLES=500 python -m pytest -q tests/test_fuzz_cli.py

  Whatever it finds becomes an ``@example`` here, fixed at its class (see vaezoo.spec_check), before it lands.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import resource
import tempfile
import time
import traceback
import typing
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO_ROOT
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import vaezoo
from vaezoo.cli import _OneLineParser, command_modules, main
from vaezoo.training.settings import PREVIOUS_KEYS, place_in_groups

DEEP = "VAEZOO_FUZZ_EXAMPLES" in os.environ
EXAMPLES = int(os.environ.get("VAEZOO_FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=not DEEP,
    database=None,
    deadline=timedelta(seconds=30),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MAX_SECONDS = 20.0  # per case: a bad input is refused before any training or data loading of consequence
MAX_RSS_GROWTH_MB = 512  # per case: an alias bomb must not be expanded

RECIPE = str(REPO_ROOT / "recipes" / "vae_mnist.yaml")
TINY = ["--model.init_args.latent_dim", "4", "--model.init_args.hidden_channels", "4", "--model.init_args.hidden_units", "16",
        "--trainer.logging.progress", "false", "--trainer.evaluation.k", "0", "--trainer.logging.tensorboard", "false", "--trainer.max_steps", "1"]  # fmt: skip


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def assert_refused(argv: list[str], run_dir: Path | None = None) -> str:
    """Run ``vaezoo ARGV`` in an empty working directory; it must be refused as described above. Returns stderr."""
    with tempfile.TemporaryDirectory() as cwd:
        previous = os.getcwd()
        os.chdir(cwd)
        out, err = io.StringIO(), io.StringIO()
        started, rss = time.perf_counter(), _max_rss_mb()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        except BaseException:  # a traceback is the bug being hunted: show it with the input
            pytest.fail(f"vaezoo {argv!r} raised:\n{traceback.format_exc()}")
        finally:
            os.chdir(previous)
        seconds, grown = time.perf_counter() - started, _max_rss_mb() - rss
        left = sorted(str(p.relative_to(cwd)) for p in Path(cwd).rglob("*"))
    message = err.getvalue()
    assert code == 2, f"vaezoo {argv!r}: exit {code}, stderr {message!r}"
    assert message.startswith("error: ") and message.count("\n") == 1, f"vaezoo {argv!r}: stderr {message!r}"
    assert "Traceback" not in message
    assert left == [], f"vaezoo {argv!r} wrote {left}"
    assert run_dir is None or not run_dir.exists(), f"vaezoo {argv!r} created {run_dir}"
    assert seconds < MAX_SECONDS, f"vaezoo {argv!r} took {seconds:.1f} s"
    assert grown < MAX_RSS_GROWTH_MB, f"vaezoo {argv!r} grew the peak memory by {grown:.0f} MB"
    return message


def _fit(tmp: Path, *extra: str) -> tuple[list[str], Path]:
    run_dir = tmp / "run"
    return ["fit", RECIPE, *TINY, *extra, "--run_dir", str(run_dir)], run_dir


def _yaml_value(value) -> str:
    """A value as a command-line argument (YAML flow style, as jsonargparse parses it)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


# -- values that no field of a given type accepts ------------------------------------------------------------------
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "none", "nan", "inf", "y", "n"}
words = st.from_regex(r"[a-z][a-z_]{1,10}", fullmatch=True).filter(lambda s: s.lower() not in _YAML_WORDS)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
not_a_number = st.one_of(words, st.lists(st.integers(), min_size=1, max_size=3), st.dictionaries(words, st.integers(), min_size=1, max_size=2))  # fmt: skip
fractional = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).filter(lambda v: v != int(v))


def ints_below(minimum: int):
    return st.one_of(st.integers(min_value=-(10**9), max_value=minimum - 1), fractional, not_a_number)


def floats_outside(low: float | None, high: float | None, low_open: bool, high_open: bool):
    """Non-finite numbers, wrong types, and numbers outside the interval."""
    outside = []
    if low is not None:
        outside.append(st.floats(max_value=low, allow_nan=False, allow_infinity=False, exclude_max=not low_open))
    if high is not None:
        outside.append(st.floats(min_value=high, allow_nan=False, allow_infinity=False, exclude_min=not high_open))
    return st.one_of(non_finite, words, st.lists(st.floats(allow_nan=False), min_size=2, max_size=3), *outside)


#: trainer field -> invalid values (the range is the documented meaning of the field; see vaezoo.training.settings),
#: each field named as in the flat layout (placed in its group by PREVIOUS_KEYS)
TRAINER_INVALID = {
    "max_steps": ints_below(1),
    "accumulate_grad_batches": ints_below(1),
    "log_every": ints_below(1),
    "num_samples": ints_below(1),
    "eval_batch_size": ints_below(1),
    "max_consecutive_bad_steps": ints_below(1),
    "warmup_steps": ints_below(0),
    "checkpoint_every": ints_below(0),
    "keep_last": ints_below(0),
    "sample_every": ints_below(0),
    "eval_k": ints_below(0),
    "max_rollbacks": ints_below(0),
    "num_workers": ints_below(0),
    "lr": floats_outside(0.0, None, True, False),
    "lr_min": floats_outside(0.0, None, True, False),
    "weight_decay": floats_outside(0.0, None, True, False),
    "adamax_eps": floats_outside(0.0, None, False, False),
    "sample_temperature": floats_outside(0.0, None, False, False),
    "rollback_lr_factor": floats_outside(0.0, 1.0, False, True),
    "ema_decay": floats_outside(0.0, 1.0, False, False),
    "grad_clip": floats_outside(0.0, None, False, False),
    "precision": words.filter(lambda s: s not in ("fp32", "bf16", "fp16", "auto")),
    "lr_schedule": words.filter(lambda s: s not in ("cosine_step", "cosine_epoch", "constant")),
    "depthwise_weight_grad": words.filter(lambda s: s not in ("native", "compiled")),
    "tensorboard": st.one_of(words, st.lists(st.booleans(), min_size=1, max_size=2)),
    "channels_last": st.one_of(words, st.dictionaries(words, st.booleans(), min_size=1, max_size=1)),
    "device": words.filter(lambda s: s != "auto"),
    # settings that never had a flat name: named by their group
    "evaluation.val_every": ints_below(0),
    "evaluation.val_examples": ints_below(1),
    "logging.image_every": ints_below(0),
    "logging.loggers": st.one_of(
        words,
        st.lists(st.from_regex(r"Zz[a-z]{1,8}", fullmatch=True), min_size=1, max_size=2),
        st.lists(st.dictionaries(words, words, min_size=1, max_size=1), min_size=1, max_size=1),
    ),
}


def _is_device(name: str) -> bool:
    try:
        torch.device(name)
    except (RuntimeError, TypeError):
        return False
    return True


trainer_cases = (
    st.sampled_from(sorted(TRAINER_INVALID))
    .flatmap(lambda key: st.tuples(st.just(key), TRAINER_INVALID[key]))
    .filter(lambda kv: kv[0] != "device" or not _is_device(kv[1]))
)


@FUZZ
@given(case=trainer_cases, as_overlay=st.booleans())
def test_invalid_trainer_values_are_refused_before_a_run_folder_exists(case, as_overlay):
    key, value = case
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if as_overlay:
            overlay = tmp / "overlay.yaml"
            group, _, name = key.partition(".")
            settings = {group: {name: value}} if name else place_in_groups({key: value})
            overlay.write_text(yaml.safe_dump({"trainer": settings}))
            argv, run_dir = _fit(tmp, "--config", str(overlay))
        else:
            argv, run_dir = _fit(tmp, f"--trainer.{PREVIOUS_KEYS.get(key, key)}", _yaml_value(value))
        assert_refused(argv, run_dir)


# -- unknown, misplaced and mistyped recipe keys -------------------------------------------------------------------
unknown_keys = st.from_regex(r"zz_[a-z_]{1,10}", fullmatch=True)
scalars = st.one_of(st.integers(), st.floats(allow_nan=False), words, st.booleans())


def _nest(path: tuple[str, ...], value):
    for key in reversed(path):
        value = {key: value}
    return value


#: where a recipe expects a mapping of settings or of arguments (null is no mapping)
MAPPING_PATHS = [("trainer",), ("trainer", "optimizer"), ("trainer", "speed"), ("model", "init_args"), ("data", "init_args"), ("objective", "init_args"),
                 ("model", "init_args", "prior", "init_args"), ("model", "init_args", "posterior", "init_args")]  # fmt: skip
#: where it expects a component (the model's prior, posterior and likelihood may be null: the model's own default)
COMPONENT_PATHS = [("model",), ("data",), ("objective",), ("model", "init_args", "prior"),
                   ("model", "init_args", "posterior"), ("model", "init_args", "likelihood")]  # fmt: skip
not_a_mapping = st.one_of(st.integers(), st.floats(allow_nan=False), st.lists(st.integers(), min_size=1, max_size=2))

overlays = st.one_of(
    # the wrong shape where a mapping or a component is expected, at any depth
    st.builds(_nest, st.sampled_from(MAPPING_PATHS), st.one_of(st.none(), not_a_mapping, words)),
    st.builds(
        _nest,
        st.sampled_from(COMPONENT_PATHS),
        st.one_of(not_a_mapping, st.from_regex(r"Zz[a-z]{1,8}", fullmatch=True)),
    ),
    st.builds(lambda k, v: {k: v}, unknown_keys, scalars),  # unknown top-level key
    st.builds(lambda k, v: {"trainer": {k: v}}, unknown_keys, scalars),
    st.builds(lambda k, v: {"model": {"init_args": {k: v}}}, unknown_keys, scalars),
    st.builds(lambda k, v: {"data": {"init_args": {k: v}}}, unknown_keys, scalars),
    st.builds(lambda k, v: {"objective": {"init_args": {k: v}}}, unknown_keys, scalars),
    # misplaced: a trainer key at the top, model and data keys in the wrong section
    st.builds(lambda k: {k: 1}, st.sampled_from(["max_steps", "lr", "batch_size", "latent_dim", "precision"])),
    st.builds(lambda k: {"trainer": {k: 4}}, st.sampled_from(["latent_dim", "batch_size", "hidden_units", "seed"])),
    st.builds(lambda k: {"model": {"init_args": {k: 4}}}, st.sampled_from(["batch_size", "max_steps", "lr"])),
    st.builds(lambda k: {"data": {"init_args": {k: 4}}}, st.sampled_from(["latent_dim", "max_steps"])),
    # wrong types and out-of-range values of model and data arguments
    st.builds(lambda v: {"data": {"init_args": {"batch_size": v}}}, ints_below(1)),
    st.builds(lambda v: {"model": {"init_args": {"latent_dim": v}}}, ints_below(1)),
    st.builds(lambda v: {"model": {"init_args": {"hidden_channels": v}}}, ints_below(1)),
    st.builds(lambda v: {"seed": v}, st.one_of(fractional, not_a_number)),
    # a section of the wrong shape, unknown components
    st.builds(
        lambda s, v: {s: v},
        st.sampled_from(["trainer", "model", "data", "objective"]),
        st.one_of(st.integers(), st.lists(st.integers(), min_size=1, max_size=2)),
    ),  # fmt: skip
    st.builds(
        lambda s, name: {s: {"class_path": name}},
        st.sampled_from(["model", "data", "objective"]),
        st.from_regex(r"Zz[A-Za-z]{1,10}", fullmatch=True),
    ),  # fmt: skip
)


@FUZZ
@given(overlay=overlays)
@example(overlay={"trainer": 0})  # found on a fresh machine: a traceback in the trainer checks
@example(overlay={"trainer": [0]})
@example(overlay={"trainer": None})  # every trainer line commented out: was a silent reset to the defaults
@example(overlay={"model": None})
@example(overlay={"model": {"init_args": 5}})
@example(overlay={"model": {"init_args": {"prior": 3}}})
@example(overlay={"model": {"init_args": {"prior": {"init_args": {"zz_x": 1}}}}})
@example(overlay={"data": {"init_args": None}})
@example(overlay={"seed": None})
@example(overlay={"trainer": {"optimizer": {"param_groups": 3}}})
def test_unknown_misplaced_and_mistyped_keys_are_refused(overlay):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "overlay.yaml"
        path.write_text(yaml.safe_dump(overlay))
        argv, run_dir = _fit(tmp, "--config", str(path))
        assert_refused(argv, run_dir)


# -- files that are not recipes at all -----------------------------------------------------------------------------
def _nested(depth: int, flow: bool) -> bytes:
    if flow:
        return ("trainer: " + "[" * depth + "]" * depth + "\n").encode()
    return ("trainer:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(depth)) + "  " * (depth + 1) + "v\n").encode()  # fmt: skip


def _alias_bomb(levels: int, fanout: int, key: str) -> bytes:
    lines = ["l0: &l0 [" + ", ".join(["x"] * fanout) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * fanout) + "]")
    lines.append(f"{key}: *l{levels - 1}")
    return ("\n".join(lines) + "\n").encode()


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


bad_files = st.one_of(
    st.just(b""),
    st.sampled_from([b"\n", b"   \n", b"# only a comment\n", b"---\n...\n"]),
    st.binary(min_size=1, max_size=200).filter(_not_utf8),
    st.builds(
        lambda t: t.encode("latin-1"),
        st.text(alphabet="éàüß©±µ", min_size=1, max_size=20).map(lambda s: f"trainer: {{optimizer: {{lr: '{s}'}}}}\n"),
    ),  # fmt: skip
    st.builds(lambda b: b"trainer:\x00" + b, st.binary(max_size=20)),
    st.builds(_nested, st.one_of(st.just(65), st.integers(min_value=1500, max_value=5000)), st.booleans()),
    st.builds(
        _alias_bomb,
        st.integers(min_value=6, max_value=9),
        st.integers(min_value=8, max_value=12),
        st.sampled_from(["trainer", "zz_bomb", "model"]),
    ),  # fmt: skip
    st.builds(
        lambda v: yaml.safe_dump(v).encode(), st.one_of(st.lists(st.integers(), min_size=1), st.integers(), words)
    ),  # fmt: skip
)


@FUZZ
@given(content=bad_files, as_overlay=st.booleans())
@example(content=_nested(3000, flow=True), as_overlay=False)  # past Python's recursion limit in a YAML composer
@example(content=_nested(3000, flow=False), as_overlay=True)
@example(content=_alias_bomb(9, 10, "trainer"), as_overlay=True)  # 10^9 values once expanded
@example(content=bytes(range(256)), as_overlay=False)
@example(content=b"", as_overlay=True)
def test_files_that_are_not_recipes_are_refused(content, as_overlay):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = tmp / "bad.yaml"
        path.write_bytes(content)
        run_dir = tmp / "run"
        if as_overlay:
            argv, run_dir = _fit(tmp, "--config", str(path))
        else:
            argv = ["fit", str(path), "--run_dir", str(run_dir)]
        assert_refused(argv, run_dir)


# -- every typed option of every subcommand ------------------------------------------------------------------------
def _typed_options() -> list[tuple[str, str]]:
    """``(command, option)`` for every option whose type is built from int, float and bool only (a word is a value
    of none of them)."""
    found = []
    for name, module in command_modules().items():
        parser = _OneLineParser(prog=f"vaezoo {name}", exit_on_error=False)
        module.add_arguments(parser)
        for action in parser._actions:
            hint = getattr(action, "_typehint", action.type)
            parts = set(typing.get_args(hint)) or {hint}
            parts.discard(type(None))
            leaves = {typing.get_args(p)[0] if typing.get_origin(p) is list else p for p in parts}
            if action.option_strings and leaves and leaves <= {int, float, bool}:
                found.append((name, action.option_strings[0]))  # not '--temperature+' (list append)
    return found


TYPED_OPTIONS = _typed_options()


def test_the_introspection_finds_the_options_of_every_command():
    commands = {command for command, _ in TYPED_OPTIONS}
    assert {"fit", "evaluate", "sample", "benchmark", "data"} <= commands, commands
    assert ("sample", "--n") in TYPED_OPTIONS and ("fit", "--trainer.max_steps") in TYPED_OPTIONS
    assert ("sample", "--temperature") in TYPED_OPTIONS and ("evaluate", "--max_batch") in TYPED_OPTIONS


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "test-nvae"
    torch.manual_seed(0)
    vaezoo.create("test-nvae").save_pretrained(folder)
    return str(folder)


#: data the saved test-nvae can be evaluated on (so that a value refused late is still reached)
EVAL_DATA = "{class_path: RandomImages, init_args: {image_shape: [1, 8, 8], num_examples: 4, binary: true}}"


def _positionals(command: str, model: str) -> list[str]:
    """Valid positional arguments, so that the fuzzed option is what gets refused."""
    return {
        "fit": [RECIPE, *TINY],
        "benchmark": [RECIPE, *TINY],
        "evaluate": [model, "--k", "0", "--data", EVAL_DATA],
        "sample": [model],
        "data": ["verify", "zz_missing_folder"],
        "list": ["preset"],
    }.get(command, [])


@FUZZ
@given(option=st.sampled_from(TYPED_OPTIONS), value=st.one_of(words, st.sampled_from(["[1, 'a'", "{x: 1", "1.2.3", "--", "0x1g"])))  # fmt: skip
def test_every_typed_option_of_every_command_refuses_a_value_of_the_wrong_type(option, value, saved_model):
    command, flag = option
    assert_refused([command, *_positionals(command, saved_model), flag, value])


@FUZZ
@given(command=st.sampled_from(sorted(command_modules())), flag=unknown_keys, value=words)
def test_every_command_refuses_an_unknown_option(command, flag, value):
    assert_refused([command, *_positionals(command, "zz-model"), f"--{flag}", value])


#: (command, option) -> values outside the option's range, as the command documents it
OUT_OF_RANGE = {
    ("sample", "--n"): ints_below(1),
    ("sample", "--temperature"): st.one_of(
        st.floats(max_value=0.0),
        st.just([]),
        st.lists(st.floats(min_value=0.1, max_value=2), min_size=1, max_size=6).filter(
            lambda v: len(v) != 3
        ),  # fmt: skip
    ),
    ("sample", "--readjust_bn"): st.integers(max_value=-1),
    ("sample", "--out"): st.from_regex(r"[a-z]{1,8}\.(txt|gif|pt|yaml)", fullmatch=True),
    ("evaluate", "--k"): st.integers(max_value=-1),
    ("evaluate", "--max_batch"): st.integers(max_value=0),
    ("evaluate", "--batch_size"): st.integers(max_value=0),
    ("fit", "--seed"): fractional,
}


def _with_boundary_examples(test):
    """The value just outside each range, whatever the generator draws."""
    boundaries = [
        (("sample", "--n"), 0), (("sample", "--temperature"), 0.0), (("sample", "--temperature"), []),
        (("sample", "--temperature"), [1.0, 1.0]), (("sample", "--readjust_bn"), -1), (("sample", "--out"), "x.txt"),
        (("evaluate", "--k"), -1), (("evaluate", "--max_batch"), 0), (("evaluate", "--batch_size"), 0),
        (("fit", "--seed"), 1.5),
    ]  # fmt: skip
    assert {key for key, _ in boundaries} == set(OUT_OF_RANGE)
    for case in boundaries:
        test = example(case=case)(test)
    return test


@FUZZ
@given(case=st.sampled_from(sorted(OUT_OF_RANGE)).flatmap(lambda o: st.tuples(st.just(o), OUT_OF_RANGE[o])))
@_with_boundary_examples
def test_out_of_range_values_are_refused(case, saved_model):
    (command, flag), value = case
    extra = ["--readjust_batch", "0", "--readjust_bn", "1"] if flag == "--readjust_batch" else []
    text = value if isinstance(value, str) else _yaml_value(value)
    assert_refused([command, *_positionals(command, saved_model), *extra, flag, text])


@FUZZ
@given(batch=st.integers(max_value=0))
def test_a_readjustment_batch_below_one_is_refused(batch, saved_model):
    assert_refused(["sample", saved_model, "--readjust_bn", "2", "--readjust_batch", str(batch)])
