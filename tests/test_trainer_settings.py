"""The trainer's settings come in groups (optimizer, schedule, checkpoints, recovery, logging, evaluation, speed),
each range checked beside its field: a Trainer built from Python refuses what ``vaezoo fit`` refuses, with the same
line, and a recipe in the flat layout of earlier versions is told where each setting went."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import yaml

from vaezoo.cli import main
from vaezoo.errors import ConfigError
from vaezoo.training import Trainer
from vaezoo.training.settings import GROUPS, PREVIOUS_KEYS, TOP_LEVEL_RANGES

CASES = [
    ("optimizer", "lr", -1.0, "trainer.optimizer.lr must be finite and >= 0, got -1.0"),
    ("optimizer", "lr", math.nan, "trainer.optimizer.lr must be finite and >= 0, got nan"),
    ("optimizer", "eps", 0.0, "trainer.optimizer.eps must be finite and positive, got 0.0"),
    ("optimizer", "betas", [0.9, 1.0], "trainer.optimizer.betas must be two values in [0, 1), got [0.9, 1.0]"),
    ("optimizer", "ema_decay", 1.0, "trainer.optimizer.ema_decay must be null or in (0, 1), got 1.0"),
    ("schedule", "warmup_steps", -1, "trainer.schedule.warmup_steps must be >= 0, got -1"),
    ("checkpoints", "keep_last", -1, "trainer.checkpoints.keep_last must be >= 0, got -1"),
    ("recovery", "rollback_lr_factor", 0.0, "trainer.recovery.rollback_lr_factor must be in (0, 1], got 0.0"),
    ("logging", "log_every", 0, "trainer.logging.log_every must be positive, got 0"),
    ("evaluation", "batch_size", 0, "trainer.evaluation.batch_size must be positive, got 0"),
    ("speed", "num_workers", -2, "trainer.speed.num_workers must be >= 0, got -2"),
    (None, "max_steps", 0, "trainer.max_steps must be positive, got 0"),
]


@pytest.mark.parametrize(("group", "key", "value", "message"), CASES, ids=[f"{c[0]}.{c[1]}={c[2]}" for c in CASES])
def test_python_and_the_command_line_refuse_the_same_values_with_the_same_line(
    group, key, value, message, tmp_path, capsys
):
    with pytest.raises(ConfigError) as raised:
        Trainer(**({group: {key: value}} if group else {key: value}))
    assert str(raised.value) == message
    run = tmp_path / "run"
    option = f"--trainer.{group}.{key}" if group else f"--trainer.{key}"
    text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
    code = main(["fit", "recipes/vae_mnist.yaml", option, text, "--run_dir", str(run)])
    assert code == 2 and capsys.readouterr().err.strip() == f"error: {message}" and not run.exists()


def test_the_groups_are_the_trainers_arguments_and_every_range_is_beside_a_field():
    parameters = inspect.signature(Trainer).parameters
    assert set(GROUPS) <= set(parameters) and set(TOP_LEVEL_RANGES) <= set(parameters)
    for name, cls in GROUPS.items():
        assert cls.group == name and parameters[name].annotation in (cls, cls.__name__)
        ranged = [f.name for f in dataclasses.fields(cls) if "range" in f.metadata]
        assert ranged or name == "speed", name
        for f in dataclasses.fields(cls):  # every field of a group is documented in its docstring (--help reads it)
            assert f"        {f.name}: " in cls.__doc__, (name, f.name)


def test_a_group_given_as_a_mapping_or_as_its_dataclass_builds_the_same_trainer():
    from vaezoo.training.settings import OptimizerSettings

    by_mapping = Trainer(optimizer={"lr": 0.5, "betas": [0.8, 0.9]}).settings.optimizer
    by_class = Trainer(optimizer=OptimizerSettings(lr=0.5, betas=(0.8, 0.9))).settings.optimizer
    assert by_mapping == by_class and by_mapping.betas == (0.8, 0.9) and by_mapping.weight_decay == 3e-4
    with pytest.raises(dataclasses.FrozenInstanceError):  # the default instance is shared: it cannot change
        Trainer().settings.optimizer.lr = 1.0


def test_an_unknown_setting_of_a_group_from_python_is_one_line():
    with pytest.raises(ConfigError) as raised:
        Trainer(schedule={"warmup_step": 3})
    assert (
        str(raised.value)
        == "trainer.schedule.warmup_step: unknown schedule setting (did you mean warmup_steps, warmup_epochs?)"
    )
    with pytest.raises(ConfigError, match=r"^trainer.logging: expected a mapping of logging settings, got 3$"):
        Trainer(logging=3)


@pytest.mark.parametrize("old", ["lr", "adamax_eps", "lr_schedule", "checkpoint_every", "eval_k", "channels_last"])
def test_a_flat_setting_of_earlier_recipes_names_its_new_key(old, tmp_path, capsys):
    new = PREVIOUS_KEYS[old]
    recipe = yaml.safe_load(open("recipes/vae_mnist.yaml"))
    recipe["trainer"] = {"max_steps": 2, old: 1}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(recipe))
    line = f"error: trainer.{old}: this setting is trainer.{new} now (the settings are grouped)"
    assert main(["fit", str(path), "--run_dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == line and not (tmp_path / "run").exists()
    assert main(["fit", "recipes/vae_mnist.yaml", f"--trainer.{old}", "1", "--run_dir", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip() == line


def test_every_earlier_key_points_at_a_field_of_its_group():
    fields = {f"{name}.{f.name}" for name, cls in GROUPS.items() for f in dataclasses.fields(cls)}
    assert set(PREVIOUS_KEYS.values()) <= fields
    assert len(set(PREVIOUS_KEYS.values())) == len(PREVIOUS_KEYS)  # no two earlier keys land on one field


def test_settings_named_by_field_are_placed_in_their_groups_and_layers_merge_group_by_group():
    from vaezoo.training.settings import merge_settings, place_in_groups

    flat = {"lr": 1e-3, "max_steps": 3, "keep_last": 2, "adamax_eps": 0.1, "speed": {"channels_last": True}}
    assert place_in_groups(flat) == {
        "optimizer": {"lr": 1e-3, "eps": 0.1},
        "max_steps": 3,
        "checkpoints": {"keep_last": 2},
        "speed": {"channels_last": True},
    }
    base = {"optimizer": {"lr": 1.0, "eps": 2.0}, "max_steps": 1, "logging": {"progress": True}}
    over = {"optimizer": {"lr": 5.0}, "max_steps": 2, "speed": {"bn_swish": "fused"}}
    merged = merge_settings(base, over)
    assert merged == {"optimizer": {"lr": 5.0, "eps": 2.0}, "max_steps": 2, "logging": {"progress": True},
                      "speed": {"bn_swish": "fused"}}  # fmt: skip
    assert base["optimizer"] == {"lr": 1.0, "eps": 2.0}  # the layers are left as they were
