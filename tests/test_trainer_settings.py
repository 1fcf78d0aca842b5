"""The trainer's setting ranges are checked in one place: a Trainer built from Python refuses what ``vaezoo fit``
refuses, with the same line."""

from __future__ import annotations

import pytest

from vaezoo.cli import main
from vaezoo.errors import ConfigError
from vaezoo.training import Trainer
from vaezoo.training.settings import TRAINER_RANGES

CASES = [
    ("lr", -1.0, "trainer.lr must be finite and >= 0, got -1.0"),
    ("keep_last", -1, "trainer.keep_last must be >= 0, got -1"),
    ("rollback_lr_factor", 0.0, "trainer.rollback_lr_factor must be in (0, 1], got 0.0"),
    ("ema_decay", 1.0, "trainer.ema_decay must be null or in (0, 1), got 1.0"),
    ("max_steps", 0, "trainer.max_steps must be positive, got 0"),
]


@pytest.mark.parametrize(("key", "value", "message"), CASES, ids=[c[0] for c in CASES])
def test_python_and_the_command_line_refuse_the_same_values_with_the_same_line(key, value, message, tmp_path, capsys):
    with pytest.raises(ConfigError) as raised:
        Trainer(**{key: value})
    assert str(raised.value) == message
    run = tmp_path / "run"
    code = main(["fit", "recipes/vae_mnist.yaml", f"--trainer.{key}", str(value), "--run_dir", str(run)])
    assert code == 2 and capsys.readouterr().err.strip() == f"error: {message}" and not run.exists()


def test_every_range_names_a_trainer_argument():
    import inspect

    assert set(TRAINER_RANGES) <= set(inspect.signature(Trainer).parameters)
