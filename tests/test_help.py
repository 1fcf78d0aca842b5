"""``--help`` describes every option: each trainer setting (from the Args section of ``Trainer.__init__``'s docstring,
which jsonargparse reads) and each option of every command, read back from the printed help text."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest

from vaezoo.cli import command_modules, main
from vaezoo.training import Trainer
from vaezoo.training.settings import GROUPS


def _descriptions(text: str) -> dict[str, str]:
    """Each entry of an argparse help text (``  --opt ARG  description``, the description possibly on the following
    indented lines), mapped from its option name to its description without jsonargparse's ``(type: ..., default:
    ...)`` suffix."""
    entries: list[list[str]] = []
    for line in text.splitlines():
        if re.match(r"^  \S", line):
            entries.append([line[2:]])
        elif entries and entries[-1] is not None and re.match(r"^ {4,}\S", line):
            entries[-1].append(line.strip())
        else:
            entries.append(None)  # a heading or a blank line ends an entry
    found = {}
    for entry in filter(None, entries):
        invocation, *rest = re.split(r"\s{2,}", entry[0], maxsplit=1)
        description = " ".join(rest + entry[1:])
        found[invocation.split()[0].rstrip(",")] = re.sub(r"\((required, )?type: .*\)$", "", description).strip()
    return found


def _help(capsys, monkeypatch, *argv: str) -> dict[str, str]:
    monkeypatch.setenv("COLUMNS", "200")
    assert main([*argv, "--help"]) == 0
    return _descriptions(capsys.readouterr().out)


def test_every_trainer_option_has_a_description(capsys, monkeypatch):
    found = _help(capsys, monkeypatch, "fit")
    trainer = {k.removeprefix("--trainer."): v for k, v in found.items() if k.startswith("--trainer.")}
    # the top-level settings, and each group's: ``--trainer.optimizer`` (a file of them) and ``--trainer.optimizer.lr``
    parameters = [p for p in inspect.signature(Trainer.__init__).parameters if p != "self"]
    expected = [*parameters]
    for name, cls in GROUPS.items():
        expected += [f"{name}.{f.name}" for f in dataclasses.fields(cls)]
    assert sorted(trainer) == sorted(expected)
    assert [name for name, text in trainer.items() if not text] == []
    assert trainer["evaluation.k"] == "Importance samples of the test IW-NLL at the end (0: the test ELBO only)."
    assert trainer["optimizer"] == "Path to a configuration file."  # jsonargparse's line for a group given as a file
    for option in ("--seed", "--run_dir", "--resume", "--model", "--config"):
        assert found[option], option


def _commands() -> list[tuple[str, ...]]:
    data = [("data", "verify"), ("data", "download")]
    return [("data", "prepare") if name == "data" else (name,) for name in command_modules()] + data


@pytest.mark.parametrize("argv", _commands(), ids=" ".join)
def test_every_command_option_has_a_description(argv, capsys, monkeypatch):
    found = _help(capsys, monkeypatch, *argv)
    assert "-h" in found  # the parsing found the entries
    assert [option for option, text in found.items() if not text] == []
