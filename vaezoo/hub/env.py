"""Keep huggingface_hub's ``HF_*`` settings in step with the environment variables at the time of each call.

huggingface_hub reads its environment variables once, when it is imported; vaezoo re-reads them before every
Hub operation, so that setting e.g. HF_HUB_OFFLINE or HF_HUB_CACHE after import behaves as documented.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading

_env_lock = threading.Lock()
_synced_env: tuple | None = None
_TOKEN_VARS = {"HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"}  # read by huggingface_hub at call time already
_CONSTANT_COPIES = {
    "huggingface_hub.utils.tqdm": ("HF_HUB_DISABLE_PROGRESS_BARS",),
    "huggingface_hub.utils._cache_manager": ("HF_HUB_CACHE",),
}


def _hf_environment() -> tuple:
    names = ("XDG_CACHE_HOME", "TRANSFORMERS_OFFLINE", "DISABLE_TELEMETRY", "DO_NOT_TRACK")
    return tuple(
        sorted(
            (k, v)
            for k, v in os.environ.items()
            if (k.startswith(("HF_", "HUGGINGFACE_")) and k not in _TOKEN_VARS) or k in names
        )
    )


def sync_hf_environment() -> None:
    """Make ``huggingface_hub.constants`` reflect the current ``HF_*`` environment variables.

    huggingface_hub computes them at import; reloading its constants module re-runs exactly its own rules.
    Done only when the environment changed since the last call.
    """
    global _synced_env
    import huggingface_hub.constants as constants

    current = _hf_environment()
    with _env_lock:
        if current != _synced_env:
            importlib.reload(constants)
            for module_name, names in _CONSTANT_COPIES.items():  # modules that copied a constant at import
                module = sys.modules.get(module_name)
                for name in names if module is not None else ():
                    setattr(module, name, getattr(constants, name))
            _synced_env = current
