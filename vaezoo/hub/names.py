"""Model names: which Hub repo and revision a pretrained name or an ``hf-hub:org/repo[@revision]`` spec means.

Its own module (below both loading and downloading, which both resolve names) so that neither imports the other.
"""

from __future__ import annotations

from ..errors import RegistryError
from ..plugins import get_registry
from .format import DEFAULT_REVISION, HF_HUB_PREFIX, HubError, first_line


def pretrained_names() -> list[str]:
    """The registered pretrained names (``vaezoo list pretrained``)."""
    return get_registry().names("pretrained")


def resolve_name(name: str, revision: str | None = None) -> tuple[str, str]:
    """(repo_id, revision) of a pretrained name or an ``hf-hub:org/repo[@revision]`` spec."""
    if name.startswith(HF_HUB_PREFIX):
        repo_id, rev = parse_hf_hub_spec(name)
        return repo_id, revision or rev
    entry = get_registry().get("pretrained", name)  # RegistryError with close matches when unknown
    repo_id = entry.target.get("repo_id")
    if not isinstance(repo_id, str):
        if entry.target.get("bundled") is not None:  # e.g. vaezoo download of a model that needs no download
            raise RegistryError(
                f"pretrained {name!r} ships with its package (plugin {entry.plugin}) and has no Hub repo: "
                f"vaezoo.load({name!r}) loads it offline"
            )
        raise RegistryError(f"pretrained {name!r} (plugin {entry.plugin}) has no repo_id")
    check_repo_id(repo_id, f"pretrained {name!r}")
    return repo_id, revision or entry.target.get("revision") or DEFAULT_REVISION


def parse_hf_hub_spec(spec: str) -> tuple[str, str]:
    """``hf-hub:org/repo[@revision]`` -> (repo_id, revision)."""
    body = spec[len(HF_HUB_PREFIX) :] if spec.startswith(HF_HUB_PREFIX) else spec
    repo_id, sep, revision = body.partition("@")
    if sep and not revision:
        raise HubError(f"bad hf-hub spec {spec!r}: empty revision after '@' (expected hf-hub:org/repo[@revision])")
    check_repo_id(repo_id, f"bad hf-hub spec {spec!r}")
    return repo_id, revision or DEFAULT_REVISION


def check_repo_id(repo_id: str, what: str) -> None:
    """Refuse a repo id that is not ``org/name`` or that the Hub would reject; ``what`` starts the message."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if repo_id.count("/") != 1:
        raise HubError(f"{what}: the repo id must be 'org/name', got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise HubError(f"{what}: {first_line(exc)}") from exc
