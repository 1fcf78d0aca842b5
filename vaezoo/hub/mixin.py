"""``ModelHubMixin``: save_pretrained / push_to_hub / from_pretrained as methods of a concrete model class.

The abstract contracts of :mod:`vaezoo.interfaces` know nothing of files or the Hub; a concrete model class opts
in by inheriting this mixin before its contract, as diffusers' ``ModelMixin``::

    class ConvVAE(ModelHubMixin, GenerativeModel): ...

The methods only delegate to the functions of :mod:`vaezoo.hub`, which work on any model built from a spec.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Self

from .loading import from_pretrained as _from_pretrained
from .pushing import push_to_hub as _push_to_hub
from .saving import save_pretrained as _save_pretrained


class ModelHubMixin:
    """Saved-model and Hub methods for a model class (an ``nn.Module`` with a ``config`` spec)."""

    def save_pretrained(self, save_directory: str | os.PathLike, **card_metadata: Any) -> Path:
        """Write config.json, model.safetensors and a README.md model card (see :func:`vaezoo.hub.save_pretrained`)."""
        return _save_pretrained(self, save_directory, **card_metadata)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Upload this model to a Hub repo (see :func:`vaezoo.hub.push_to_hub`)."""
        return _push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, revision: str | None = None, device: Any = "cpu") -> Self:
        """Load a saved model (folder, ``org/repo``, pretrained name); refuses a model of another class."""
        return _from_pretrained(name_or_path, revision=revision, device=device, expected_class=cls)
