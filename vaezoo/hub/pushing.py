"""Uploading a model, or a saved-model folder, to a Hub repo: :func:`push_to_hub`."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from torch import nn

from .._version import __version__
from .card import model_card
from .downloading import hub_errors
from .env import sync_hf_environment
from .format import (
    CARD_NAME,
    CONFIG_NAME,
    DEFAULT_REVISION,
    HF_HUB_PREFIX,
    WEIGHTS_NAME,
    HubError,
    check_metadata,
    read_config,
)
from .loading import load_folder
from .names import check_repo_id
from .saving import save_pretrained


def push_to_hub(
    model_or_dir: nn.Module | str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    **card_metadata: Any,
) -> Any:
    """Upload a model (saved first) or a saved-model folder to ``repo_id``; returns the huggingface_hub CommitInfo.

    ``revision``: the branch to commit to (created from main when missing; default main). ``token``: a
    Hub token (default: HF_TOKEN or the token saved by ``hf auth login``); it is never printed or logged.
    ``private``: visibility of a newly created repo. ``card_metadata`` (preset, license, dataset,
    metrics, ...) is added to the folder's metadata. The uploaded README.md is rendered from config.json.
    A folder is loaded strictly before anything is uploaded, so a broken model is never pushed.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, constants

    check_repo_id(repo_id, "push")
    if revision is not None and not revision.strip():
        raise HubError("push: empty revision")
    with tempfile.TemporaryDirectory(prefix="vaezoo-push-") as tmp:
        if isinstance(model_or_dir, nn.Module):
            folder = save_pretrained(model_or_dir, Path(tmp) / "model", **card_metadata)
            config = read_config(folder, str(folder))
        else:
            folder = Path(model_or_dir).expanduser()
            load_folder(folder, "cpu", where=str(folder))  # strict: refuse to push what would not load
            config = read_config(folder, str(folder))
            if card_metadata:
                config["metadata"] = check_metadata({**config["metadata"], **card_metadata})
        operations = [
            CommitOperationAdd(CONFIG_NAME, (json.dumps(config, indent=2) + "\n").encode("utf-8")),
            CommitOperationAdd(WEIGHTS_NAME, str(folder / WEIGHTS_NAME)),
            CommitOperationAdd(CARD_NAME, str(model_card(config, repo_id=repo_id)).encode("utf-8")),
        ]
        title = config["metadata"].get("preset") or config["model"]["class_path"]
        message = commit_message or f"Upload {title} (vaezoo {__version__})"
        sync_hf_environment()
        label = f"{HF_HUB_PREFIX}{repo_id}@{revision or DEFAULT_REVISION}"
        if constants.is_offline_mode():
            raise HubError(f"{label}: HF_HUB_OFFLINE is set; pushing needs network access to {constants.ENDPOINT}")
        with hub_errors(label, repo_id, revision, action="push", token=token):
            api = HfApi(token=token)
            api.create_repo(repo_id, private=private, exist_ok=True)
            if revision and revision != DEFAULT_REVISION:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            return api.create_commit(repo_id, operations, commit_message=message, revision=revision)
