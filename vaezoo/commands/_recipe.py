"""The recipe arguments shared by the commands that take one (fit, benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile

from ..config import (
    expand_recipe_presets,
    namespace_to_dict,
    one_line,
    resolve_class_paths,
    restrict_value_imports,
    short_spec,
)
from ..errors import ConfigError, VaezooError
from ..hardware import check_device
from ..interfaces import DataModule, GenerativeModel, Objective
from ..plugins import get_registry
from ..spec_check import RecipeChecker, RecipeShape
from ..training import Trainer
from ..training.settings import GROUPS, PREVIOUS_KEYS, TrainerGroups, check_top_level


def add_recipe_arguments(parser) -> None:
    restrict_value_imports(get_registry())  # imports every plugin, so that short class names resolve
    parser.add_argument("--config", action=ActionConfigFile, help="recipe or overlay (repeatable, left to right)")
    parser.add_argument("--model", type=GenerativeModel, required=True, help="the model spec")
    parser.add_argument("--objective", type=Objective, required=True, help="the training objective spec")
    parser.add_argument("--data", type=DataModule, required=True, help="the data module spec")
    parser.add_class_arguments(Trainer, "trainer")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weight initialisation, data order and noise")


def check_registered(cfg, sections=("model", "objective", "data")) -> None:
    """Every class_path in these recipe sections must be a registered component."""
    registry = get_registry()
    for section in sections:
        value = namespace_to_dict(cfg.get(section))
        if value is not None:
            resolve_class_paths(value, registry, section)


def check_trainer_values(trainer_args: dict) -> None:
    """Out-of-range trainer values (and a device this machine does not have) are one line, before anything is
    written."""
    check_top_level(trainer_args)
    TrainerGroups.coerce(**{name: trainer_args.get(name) for name in GROUPS})  # each group checks its ranges
    check_device(trainer_args.get("device", "auto"), "trainer.device")


def instantiate_recipe(parser, cfg):
    """(model, objective, data) of a parsed recipe; ``model.config`` is its resolved spec."""
    check_registered(cfg)
    try:
        init = parser.instantiate(cfg)
    except VaezooError:
        raise
    except Exception as exc:
        raise ConfigError(one_line(exc)) from exc
    init.model.config = short_spec(namespace_to_dict(cfg.model), get_registry())
    return init.model, init.objective, init.data


def check_recipe_argv(argv: list[str], parser) -> None:
    """The recipe files, overlays and dotted values of a command line, in the order jsonargparse applies them, checked
    for their structure (:mod:`vaezoo.spec_check`): the first problem is one line naming its key path."""
    registry = get_registry()
    checker = RecipeChecker(RecipeShape.of_parser(parser), registry, moved={"trainer": PREVIOUS_KEYS})
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        if not token.startswith("--"):
            continue
        option, eq, text = token[2:].partition("=")
        if not eq:
            if i >= len(argv) or argv[i].startswith("--"):
                continue
            text = argv[i]
            i += 1
        if option == "config":
            path = Path(text)
            if path.is_file():
                document = _load_yaml(path.read_text(encoding="utf-8", errors="replace"))
                checker.check_document(expand_recipe_presets(document, registry), text)
        elif option == "model":
            checker.check_entry("model", expand_recipe_presets(_load_yaml(text, fallback=text), registry))
        elif "." in option:
            checker.check_dotted(option, _load_yaml(text, fallback=text))


def _load_yaml(text: str, fallback: Any = None) -> Any:
    """YAML as jsonargparse reads it; text that is not YAML is left for jsonargparse to report (``fallback``)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return fallback
