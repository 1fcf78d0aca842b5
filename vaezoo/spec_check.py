"""The shape of a recipe and of component specs, checked before jsonargparse reads them.

jsonargparse reports a misspelt argument three levels down as a repr of its internals (``NestedArg(key=...``), blames
a correct class name for a wrong argument ("unknown posterior 'GaussianPosterior'; did you mean GaussianPosterior"),
and takes a section of the wrong type (``trainer: 0``, or every line of ``trainer:`` commented out, which YAML reads as
null) as a reset to the defaults. These checks walk the same data with the registry and the constructors' signatures
in hand and report the first problem as one line naming its full key path, with close matches:

    model.init_args.prior.init_args.foo: unknown argument of LaplacePrior (did you mean loc?; it takes: loc, scale)
    trainer: expected a mapping of trainer settings, got null (every line commented out?)

They check structure only (where a mapping, a list, a component or a known key is expected, and where null is not
allowed); the types of plain values are jsonargparse's to check, and it reports those in one line already.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .errors import ConfigError
from .interfaces import INTERFACES
from .registry import Registry

#: keys of a component mapping that are not constructor arguments
_SPEC_KEYS = ("class_path", "init_args", "dict_kwargs")


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"a list {value!r}" if len(repr(value)) <= 40 else "a list"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _close(name: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _allows_none(hint: Any) -> bool:
    if hint is None or hint is type(None) or hint is Any:
        return True
    origin = typing.get_origin(hint)
    return origin in (typing.Union, types.UnionType) and any(a is type(None) for a in typing.get_args(hint))


def component_kinds(hint: Any) -> tuple[str, ...]:
    """The component kinds a type hint admits (a class of the kind, an Optional of one, a factory returning one)."""
    if isinstance(hint, type):
        return tuple(k for k, cls in INTERFACES.items() if issubclass(hint, cls))
    found: list[str] = []
    for arg in typing.get_args(hint):
        if isinstance(arg, list):  # Callable[[args], R]: the argument list
            continue
        for kind in component_kinds(arg):
            if kind not in found:
                found.append(kind)
    return tuple(found)


def slot_classes(hint: Any) -> tuple[type, ...]:
    """The interface classes a type hint admits (``ConditionalPrior`` for ``Callable[[int, int], ConditionalPrior]``):
    narrower than its kinds when a kind has several slots."""
    if isinstance(hint, type):
        return (hint,) if any(issubclass(hint, cls) for cls in INTERFACES.values()) else ()
    found: list[type] = []
    for arg in typing.get_args(hint):
        if not isinstance(arg, list):
            found += [cls for cls in slot_classes(arg) if cls not in found]
    return tuple(found)


def _is_list_hint(hint: Any) -> bool:
    args = [a for a in typing.get_args(hint) if a is not type(None)] if _allows_none(hint) else [hint]
    return any(typing.get_origin(a) in (list, collections.abc.Sequence, tuple) for a in args)


def _is_mapping_hint(hint: Any) -> bool:
    args = [a for a in typing.get_args(hint) if a is not type(None)] if _allows_none(hint) else [hint]
    return bool(args) and all(a is dict or typing.get_origin(a) in (dict, collections.abc.Mapping) for a in args)


@dataclass
class _Signature:
    name: str
    hints: dict[str, Any]
    params: list[str]
    open_ended: bool  # takes **kwargs: any argument may be meant for a parent


def _signature(cls: type) -> _Signature:
    init = cls.__init__
    if init in (object.__init__, nn.Module.__init__):  # no constructor of its own: it takes no arguments
        return _Signature(cls.__name__, {}, [], False)
    try:
        params = inspect.signature(init).parameters
    except (TypeError, ValueError):
        return _Signature(cls.__name__, {}, [], True)
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # an annotation that does not resolve: structural checks only where it does
        hints = {}
    names = [n for n, p in params.items() if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    open_ended = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return _Signature(cls.__name__, hints, names, open_ended)


@dataclass
class SpecChecker:
    """Checks component specs against the registry. ``classes`` remembers the class chosen at each key path, so that
    an overlay or a command-line value that changes only ``init_args`` is checked against the class chosen earlier."""

    registry: Registry
    classes: dict[str, type] = field(default_factory=dict)

    def check(
        self,
        value: Any,
        kinds: tuple[str, ...],
        where: str,
        *,
        optional: bool = False,
        owner: str | None = None,
        bases: tuple[type, ...] = (),
    ) -> None:
        """``value`` must be a component of one of ``kinds`` (and subclass one of ``bases``, the slot's classes, when
        given); ``owner`` names the class whose constructor argument it is (None for a recipe section)."""
        if value is None:
            if not optional:
                raise ConfigError(
                    f"{where}: expected a {' or '.join(kinds)}, got null (an empty or commented-out entry?)"
                )
            self.classes.pop(where, None)
            return
        if isinstance(value, str):
            self.classes[where] = self._resolve(value, kinds, where, bases)
            return
        if not isinstance(value, dict):
            raise ConfigError(
                f"{where}: expected a {' or '.join(kinds)} (a registered name, or a mapping with class_path and "
                f"init_args), got {_describe(value)}"
            )
        class_path = value.get("class_path")
        if class_path is not None:
            if not isinstance(class_path, str):
                raise ConfigError(f"{where}.class_path: expected a class name, got {_describe(class_path)}")
            self.classes[where] = self._resolve(class_path, kinds, where, bases)
        cls = self.classes.get(where)  # None: the class is a default of the parser's; jsonargparse checks it
        init_args = value.get("init_args", {})
        if not isinstance(init_args, dict):
            raise ConfigError(f"{where}.init_args: expected a mapping of arguments, got {_describe(init_args)}")
        dict_kwargs = value.get("dict_kwargs", {})
        if not isinstance(dict_kwargs, dict):
            raise ConfigError(f"{where}.dict_kwargs: expected a mapping, got {_describe(dict_kwargs)}")
        beside = {k: v for k, v in value.items() if k not in _SPEC_KEYS}  # arguments given beside class_path
        if cls is None:
            if owner is not None and (init_args or beside):  # jsonargparse would fail with a repr of its internals
                first = next(iter({**beside, **init_args}))
                raise ConfigError(
                    f"{where}.init_args.{first}: {where} names no {' or '.join(kinds)} to take arguments ({owner} "
                    f"builds its default itself); choose one first: {where}.class_path NAME"
                )
            return
        for name, arg in {**beside, **init_args}.items():
            self.check_argument(cls, name, arg, f"{where}.init_args.{name}")

    def check_argument(self, cls: type, name: Any, value: Any, where: str) -> None:
        sig = _signature(cls)
        if not isinstance(name, str):
            raise ConfigError(f"{where}: argument names are words, got {_describe(name)}")
        if name not in sig.params:
            if sig.open_ended:
                return
            listing = ", ".join(sig.params[:12]) + (" ..." if len(sig.params) > 12 else "")
            raise ConfigError(
                f"{where}: unknown argument of {sig.name}{_close(name, sig.params)} (it takes: {listing or 'nothing'})"
            )
        hint = sig.hints.get(name)
        if hint is None:
            return
        kinds = component_kinds(hint)
        if value is None:
            if not _allows_none(hint):
                raise ConfigError(f"{where}: null is not a valid {sig.name} argument (expected {_hint_name(hint)})")
            self.classes.pop(where, None)
            return
        if kinds and _is_list_hint(hint):
            if not isinstance(value, list):
                raise ConfigError(f"{where}: expected a list of {' or '.join(kinds)} specs, got {_describe(value)}")
            for i, item in enumerate(value):
                self.check(item, kinds, f"{where}[{i}]", owner=sig.name, bases=slot_classes(hint))
        elif kinds:
            self.check(value, kinds, where, optional=_allows_none(hint), owner=sig.name, bases=slot_classes(hint))
        elif _is_mapping_hint(hint) and not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {_describe(value)}")
        else:
            check_plain_value(hint, value, where)

    def _resolve(self, name: str, kinds: tuple[str, ...], where: str, bases: tuple[type, ...] = ()) -> type:
        entry = self.registry.find_class(name)
        choices = sorted({n for kind in kinds for n in self.registry.names(kind)})
        if entry is None:
            raise ConfigError(f"{where}: " + self.registry.unknown_message(" or ".join(kinds), name, choices))
        if entry.kind not in kinds and not any(issubclass(entry.target, INTERFACES[k]) for k in kinds):
            raise ConfigError(
                f"{where}: {entry.name} is a {entry.kind}, not a {' or '.join(kinds)} (choices: {', '.join(choices)})"
            )
        if bases and isinstance(entry.target, type) and not issubclass(entry.target, bases):
            fitting = sorted(
                n
                for kind in kinds
                for n in self.registry.names(kind)
                if isinstance(self.registry.get(kind, n).target, type)
                and issubclass(self.registry.get(kind, n).target, bases)
            )
            wanted = " or ".join(b.__name__ for b in bases)
            doc = (bases[0].__doc__ or "").strip().split(":")[0].splitlines()[0] if len(bases) == 1 else ""
            raise ConfigError(
                f"{where}: {entry.name} is not {'an' if wanted[0] in 'AEIOU' else 'a'} {wanted}"
                f"{f' ({doc})' if doc else ''}; this slot takes "
                f"{', '.join(fitting) or 'none registered'}"
            )
        return entry.target


def _fits(hint: Any, value: Any) -> bool | None:
    """Whether a plain value fits a plain type hint: True, False, or None when the hint is not a plain one (left to
    jsonargparse). Strings that read as the number are accepted, as jsonargparse accepts them."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        answers = [_fits(arg, value) for arg in typing.get_args(hint)]
        return True if True in answers else None if None in answers else False
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint in (int, float):
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            return False
        if isinstance(value, int) or hint is float and isinstance(value, float):
            return True
        if isinstance(value, str):
            try:
                hint(value)
            except ValueError:
                return False
            return True
        return False
    if hint is str:
        return not isinstance(value, (dict, list))
    return None


def check_plain_value(hint: Any, value: Any, where: str) -> None:
    """A value of the wrong type for a plain hint (int, float, bool, str, Literal and unions of them)."""
    if _fits(hint, value) is False:
        raise ConfigError(f"{where}: expected {_hint_name(hint)}, got {_describe(value)}")


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


#: the type of a key that holds a group of settings of its own (``trainer.optimizer``)
_SUBGROUP = object()


def _is_config_load(action) -> bool:
    """jsonargparse's action for a group of settings (a nested dataclass): ``--trainer.optimizer CONFIG``."""
    return type(action).__name__ == "_ActionConfigLoad"


@dataclass
class RecipeShape:
    """What a recipe command's parser takes at the top level of a recipe: component sections (``model``: a model),
    groups of settings (``trainer``: its keys and their type hints) and plain values (``seed``)."""

    components: dict[str, tuple[str, ...]]
    groups: dict[str, dict[str, Any]]
    values: dict[str, Any]

    @classmethod
    def of_parser(cls, parser) -> RecipeShape:
        components: dict[str, tuple[str, ...]] = {}
        groups: dict[str, dict[str, Any]] = {}
        values: dict[str, Any] = {}
        for action in parser._actions:
            dest = action.dest
            if not action.option_strings or dest in ("help", "config", "print_config") or dest.endswith(".help"):
                continue
            hint = getattr(action, "_typehint", None)
            if "." in dest:
                group, key = dest.split(".", 1)
                # a group within the group (a dataclass of settings) is a mapping of its own keys
                groups.setdefault(group, {})[key] = _SUBGROUP if _is_config_load(action) else hint
            elif hint is not None and component_kinds(hint):
                components[dest] = component_kinds(hint)
            elif hint is not None:
                values[dest] = hint
        for name in groups:
            values.pop(name, None)
        return cls(components, groups, values)

    def keys(self) -> list[str]:
        return [*self.components, *self.groups, *self.values]


class RecipeChecker:
    """Checks the recipe files, overlays and dotted command-line values of one command line, in order."""

    def __init__(self, shape: RecipeShape, registry: Registry, moved: dict[str, dict[str, str]] | None = None) -> None:
        self.shape = shape
        self.specs = SpecChecker(registry)
        #: per group, where its settings of an earlier layout live now (``{"trainer": {"lr": "optimizer.lr"}}``)
        self.moved = moved or {}

    def check_document(self, doc: Any, label: str) -> None:
        """A recipe or overlay file's content (``label`` names the file in errors about the whole document)."""
        if doc is None:
            return  # an empty file: jsonargparse reports what is missing
        if not isinstance(doc, dict):
            raise ConfigError(
                f"{label}: a recipe is a mapping of sections ({', '.join(self.shape.keys())}), got {_describe(doc)}"
            )
        for key, value in doc.items():
            self.check_entry(key, value)

    def check_entry(self, key: Any, value: Any) -> None:
        shape = self.shape
        if key == "config":  # jsonargparse's nested --config: the file is checked where it is read
            return
        if not isinstance(key, str):
            raise ConfigError(f"{key!r}: recipe keys are words, got {_describe(key)}")
        if key in shape.components:
            self.specs.check(value, shape.components[key], key)
        elif key in shape.groups:
            self._check_group(key, value)
        elif key in shape.values:
            if value is None and not _allows_none(shape.values[key]):
                raise ConfigError(f"{key}: expected {_hint_name(shape.values[key])}, got null")
        else:
            owners = [f"{g}.{key}" for g, keys in shape.groups.items() if key in keys]
            hint = f" (did you mean {', '.join(owners)}?)" if owners else _close(key, shape.keys())
            raise ConfigError(f"{key}: unknown recipe key{hint} (keys: {', '.join(shape.keys())})")

    def _check_group(self, group: str, value: Any, prefix: str = "") -> None:
        """A group of settings (``trainer``) or a group within it (``trainer.optimizer``, ``prefix`` ``optimizer.``)."""
        settings = self.shape.groups[group]
        where_group = f"{group}.{prefix[:-1]}" if prefix else group
        name = prefix[:-1].rsplit(".", 1)[-1] if prefix else group
        if not isinstance(value, dict):
            extra = " (every line commented out?)" if value is None else ""
            raise ConfigError(f"{where_group}: expected a mapping of {name} settings, got {_describe(value)}{extra}")
        for key, setting in value.items():
            path, where = f"{prefix}{key}", f"{where_group}.{key}"
            if path in settings and settings[path] is _SUBGROUP:
                if not isinstance(setting, str):  # a string is a file of these settings, for jsonargparse to read
                    self._check_group(group, setting, f"{path}.")
                continue
            if path not in settings:
                moved = self.moved.get(group, {}).get(path)
                if moved is not None:
                    raise ConfigError(f"{where}: this setting is {group}.{moved} now (the settings are grouped)")
                elsewhere = [k for k in self.shape.keys() if k == key]
                choices = [k[len(prefix) :] for k in settings if k.startswith(prefix) and "." not in k[len(prefix) :]]
                hint = f" (did you mean the top-level {key}?)" if elsewhere else _close(str(key), choices)
                raise ConfigError(f"{where}: unknown {name} setting{hint}")
            hint = settings[path]
            if setting is None and hint is not None and not _allows_none(hint):
                raise ConfigError(f"{where}: expected {_hint_name(hint)}, got null")
            if setting is not None and hint is not None and _is_mapping_hint(hint) and not isinstance(setting, dict):
                raise ConfigError(f"{where}: expected a mapping, got {_describe(setting)}")

    def check_dotted(self, option: str, value: Any) -> None:
        """A command-line value ``--a.b.c VALUE``: checked as the nested mapping it stands for."""
        parts = option.split(".")
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        if parts[0] in self.shape.groups:
            self._check_group(parts[0], nested)
        elif parts[0] in self.shape.components and parts[-1] != "help":
            self.specs.check(nested, self.shape.components[parts[0]], parts[0], optional=True)
