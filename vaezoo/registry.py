"""One registry of components, keyed by kind and name.

Components are registered by plugins (see :mod:`vaezoo.hookspecs`), never imported by the core.
A component's *name* is what users write in recipes and what ``vaezoo list`` shows; for classes it
defaults to the class name, which is also the short ``class_path`` that jsonargparse accepts, so one
name works everywhere.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import RegistryError

#: The component kinds and what each one is for (shown by ``vaezoo list``).
KINDS: dict[str, str] = {
    "cell": "residual building blocks of encoders and decoders",
    "combiner": "merges of a second input into a feature map (the decoder state into an encoder feature, a latent "
    "into the decoder state)",
    "posterior": "parameterisations of q(z|x) for one latent group",
    "prior": "parameterisations of p(z) for one latent group",
    "joint_prior": "priors over the standardised noise of several latent groups at once (e.g. score-based)",
    "denoiser": "time-conditioned networks on latents for diffusion and score-based priors",
    "flow": "invertible transforms applied to posterior samples",
    "likelihood": "output distributions p(x|z)",
    "regularizer": "extra training losses computed from the model",
    "objective": "training objectives (ELBO with warm-up and balancing, IWAE, ...)",
    "model": "generative model assemblers",
    "dataset": "data modules",
    "feature_extractor": "frozen image networks whose features sample-quality metrics compare (Fréchet distance, KID)",
    "logger": "destinations of a run's metrics and preview images besides metrics.jsonl (TensorBoard, ...)",
    "converter": "importers of checkpoints from other implementations (vaezoo convert)",
    "preset": "named model architectures for vaezoo.create",
    "pretrained": "published weights for vaezoo.load",
}


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    target: Any
    plugin: str
    metadata: dict = field(default_factory=dict)
    #: earlier full class paths of the target (it moved): they still resolve to this entry
    aliases: tuple[str, ...] = ()

    @property
    def class_path(self) -> str | None:
        """Full import path of a registered class (None for non-class entries such as presets)."""
        if isinstance(self.target, type):
            return f"{self.target.__module__}.{self.target.__qualname__}"
        return None

    @property
    def summary(self) -> str:
        doc = self.metadata.get("description") or getattr(self.target, "__doc__", None) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry:
    """Components by kind and name. Build one with :func:`vaezoo.plugins.get_registry`.

    ``interfaces`` maps a kind to the class its components must subclass (``vaezoo.interfaces.INTERFACES``; given
    by the caller, so that this foundation module imports nothing of the layers above it)."""

    def __init__(self, interfaces: dict[str, type] | None = None, absent_note: str = "") -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        self._interfaces: dict[str, type] = dict(interfaces or {})
        #: said after every "unknown ..." line: why a name may be missing (e.g. the plugins blocked by the user)
        self.absent_note = absent_note

    def unknown_message(self, what: str, name: str, choices: Iterable[str]) -> str:
        """:func:`unknown_name_message` with the registry's :attr:`absent_note`."""
        message = unknown_name_message(what, name, choices)
        return f"{message}; {self.absent_note}" if self.absent_note else message

    # -- writing -------------------------------------------------------------------------------
    def register(
        self,
        kind: str,
        target: Any,
        name: str | None = None,
        *,
        plugin: str = "?",
        aliases: Iterable[str] = (),
        **metadata: Any,
    ) -> Any:
        if kind not in self._entries:
            raise RegistryError(f"unknown component kind {kind!r}; kinds are: {', '.join(KINDS)}")
        name = name or getattr(target, "__name__", None)
        if not name:
            raise RegistryError(f"a {kind} registered by plugin {plugin!r} needs a name")
        check_implements(self._interfaces.get(kind), kind, target, name, plugin)
        existing = self._entries[kind].get(name)
        if existing is not None:
            raise RegistryError(
                f"{kind} {name!r} is registered twice: by plugin {existing.plugin!r} and by plugin {plugin!r}"
            )
        self._entries[kind][name] = Entry(kind, name, target, plugin, dict(metadata), tuple(aliases))
        return target

    def copy(self) -> Registry:
        """A registry with the same entries (entries are immutable; the tables are new)."""
        other = Registry(self._interfaces, self.absent_note)
        other._entries = {kind: dict(entries) for kind, entries in self._entries.items()}
        return other

    # -- reading -------------------------------------------------------------------------------
    def kinds(self) -> list[str]:
        return list(self._entries)

    def names(self, kind: str) -> list[str]:
        self._check_kind(kind)
        return sorted(self._entries[kind])

    def entries(self, kind: str | None = None, pattern: str = "*") -> list[Entry]:
        kinds = [kind] if kind else list(self._entries)
        out: list[Entry] = []
        for k in kinds:
            self._check_kind(k)
            out += [e for n, e in sorted(self._entries[k].items()) if fnmatch.fnmatchcase(n.lower(), pattern.lower())]
        return out

    def get(self, kind: str, name: str) -> Entry:
        self._check_kind(kind)
        entry = self._entries[kind].get(name)
        if entry is None:
            raise RegistryError(self.unknown_message(kind, name, self.names(kind)))
        return entry

    def find_class(self, class_path: str) -> Entry | None:
        """The entry of a registered class given its short name or full class path."""
        for kind_entries in self._entries.values():
            for entry in kind_entries.values():
                if entry.class_path is None:
                    continue
                if class_path in (entry.class_path, entry.name, entry.target.__name__, *entry.aliases):
                    return entry
                if _reexported(class_path, entry.target.__module__, entry.target.__qualname__) or any(
                    _reexported(class_path, *alias.rsplit(".", 1)) for alias in entry.aliases
                ):
                    return entry
        return None

    def plugin_summary(self) -> dict[str, dict[str, list[str]]]:
        """plugin -> kind -> names, for ``vaezoo plugins``."""
        out: dict[str, dict[str, list[str]]] = {}
        for kind, kind_entries in self._entries.items():
            for name, entry in sorted(kind_entries.items()):
                out.setdefault(entry.plugin, {}).setdefault(kind, []).append(name)
        return out

    def _check_kind(self, kind: str) -> None:
        if kind not in self._entries:
            raise RegistryError(unknown_name_message("component kind", kind, list(self._entries)))


def check_implements(interface: type | None, kind: str, target: Any, name: str, plugin: str) -> None:
    """A class registered under a kind with an interface (:data:`vaezoo.interfaces.INTERFACES`) must subclass it,
    implement its abstract methods (``forward``, ``example``, ...) and have none of the interface's
    ``contract_problems`` (a constructor that takes its slot's arguments, ...): refused at registration, in one
    line, rather than at the first forward pass."""
    if interface is None or not isinstance(target, type):
        return
    where = f"{kind} {name!r} (plugin {plugin!r})"
    if not issubclass(target, interface):
        raise RegistryError(
            f"{where}: {target.__qualname__} is not a subclass of vaezoo.interfaces.{interface.__name__}"
        )
    missing = [
        attr
        for attr in dir(interface)
        if getattr(getattr(interface, attr, None), "__isabstractmethod__", False)
        and getattr(getattr(target, attr, None), "__isabstractmethod__", False)
    ]
    if missing:
        raise RegistryError(
            f"{where}: {target.__qualname__} does not implement {', '.join(missing)} (abstract in {interface.__name__})"
        )
    # the interface's own checks (the constructor's slot arguments, which of a kind's slots it fills)
    problems = list(getattr(target, "contract_problems", lambda: [])())
    if problems:
        raise RegistryError(f"{where}: {target.__qualname__}: {'; '.join(problems)}")


def _reexported(class_path: str, defining_module: str, qualname: str) -> bool:
    """``pkg.Name`` where ``pkg`` is a parent package of the module defining ``Name`` (a re-export,
    which is how jsonargparse spells class paths). Decided from the string alone: nothing is imported."""
    module, _, attr = class_path.rpartition(".")
    return bool(module) and attr == qualname and defining_module.startswith(module + ".")


def unknown_name_message(what: str, name: str, choices: Iterable[str]) -> str:
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    listing = ", ".join(choices[:30]) + (" ..." if len(choices) > 30 else "")
    return f"unknown {what} {name!r}{hint} (choices: {listing or 'none registered'})"
