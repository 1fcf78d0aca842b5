"""Pluggy hook specifications of the "vaezoo" project.

Hooks use the register-callback style: each receives a ``register`` function and calls it once per
thing it adds, so the registry knows which plugin owns what (and can name both owners of a clash).

    from vaezoo import hookimpl

    @hookimpl
    def register_components(register):
        register("prior", MyPrior)                # name defaults to the class name

Plugins are discovered through the ``vaezoo`` entry-point group (built-ins included).
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("vaezoo")
hookimpl = pluggy.HookimplMarker("vaezoo")


@hookspec
def register_components(register):
    """Add components: ``register(kind, target, name=None, **metadata)``.

    ``kind`` is one of :data:`vaezoo.registry.KINDS`; ``target`` is usually a class implementing
    the contract of that kind in :mod:`vaezoo.interfaces`.
    """


@hookspec
def register_presets(register):
    """Add named architectures: ``register(name, spec_factory, description=...)``.

    ``spec_factory(**overrides)`` returns a model spec: a ``{"class_path": ..., "init_args": ...}``
    dict that :func:`vaezoo.build` instantiates.
    """


@hookspec
def register_pretrained(register):
    """Add published weights: ``register(name, repo_id=..., revision=..., preset=..., license=...,
    source=..., metrics=...)`` for :func:`vaezoo.load`."""
