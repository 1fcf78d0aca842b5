"""``vaezoo push DIR ORG/REPO``: upload a saved model folder to the Hugging Face Hub."""

from __future__ import annotations

NAME = "push"
HELP = "Upload a saved model folder (config.json, model.safetensors) to a Hugging Face Hub repo."


def add_arguments(parser) -> None:
    parser.add_argument("folder", help="a folder written by save_pretrained or `vaezoo convert`")
    parser.add_argument("repo_id", help="the Hub repo, org/name (created when missing)")
    parser.add_argument("--revision", default=None, help="branch to commit to (created from main when missing)")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--commit_message", default=None, help="the commit summary")
    parser.add_argument(
        "--pretrained",
        default=None,
        help="fill the card metadata (license, dataset, metrics, source) from this registered pretrained entry",
    )


def run(cfg) -> int:
    from ..hub import push_to_hub
    from ..plugins import get_registry

    card = {}
    if cfg.pretrained:
        entry = get_registry().get("pretrained", cfg.pretrained)
        card = {k: v for k, v in entry.target.items() if k not in ("repo_id", "revision")}
    info = push_to_hub(
        cfg.folder,
        cfg.repo_id,
        revision=cfg.revision,
        private=True if cfg.private else None,
        commit_message=cfg.commit_message,
        **card,
    )
    print(f"pushed {cfg.folder} to {cfg.repo_id}@{cfg.revision or 'main'}: commit {info.oid} ({info.commit_url})")
    return 0
