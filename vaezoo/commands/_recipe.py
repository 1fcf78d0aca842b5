"""The recipe arguments shared by the commands that take one (fit, benchmark)."""

from __future__ import annotations

from jsonargparse import ActionConfigFile

from ..config import namespace_to_dict, one_line, resolve_class_paths, restrict_value_imports, short_spec
from ..errors import ConfigError, VaezooError
from ..interfaces import DataModule, GenerativeModel, Objective
from ..plugins import get_registry
from ..training import Trainer


def add_recipe_arguments(parser) -> None:
    restrict_value_imports(get_registry())  # imports every plugin, so that short class names resolve
    parser.add_argument("--config", action=ActionConfigFile, help="recipe or overlay (repeatable, left to right)")
    parser.add_argument("--model", type=GenerativeModel, required=True, help="the model spec")
    parser.add_argument("--objective", type=Objective, required=True, help="the training objective spec")
    parser.add_argument("--data", type=DataModule, required=True, help="the data module spec")
    parser.add_class_arguments(Trainer, "trainer")
    parser.add_argument("--seed", type=int, default=0)


def check_registered(cfg, sections=("model", "objective", "data")) -> None:
    """Every class_path in these recipe sections must be a registered component."""
    registry = get_registry()
    for section in sections:
        value = namespace_to_dict(cfg.get(section))
        if value is not None:
            resolve_class_paths(value, registry, section)


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
