"""``vaezoo download NAME``: fill the Hugging Face cache so that the model loads offline afterwards."""

from __future__ import annotations

NAME = "download"
HELP = "Download a pretrained model (a registered name or hf-hub:org/repo[@rev]) into the Hugging Face cache."


def add_arguments(parser) -> None:
    parser.add_argument("name", help="a pretrained name (`vaezoo list pretrained`) or hf-hub:org/repo[@revision]")
    parser.add_argument("--revision", default=None, help="override the revision (branch, tag or commit)")


def run(cfg) -> int:
    from ..hub import HF_HUB_PREFIX, LOCAL_DIR_PREFIX, download, install_hint

    pretrained = not cfg.name.startswith((HF_HUB_PREFIX, LOCAL_DIR_PREFIX))
    folder = download(cfg.name, revision=cfg.revision, hint=install_hint(cfg.name) if pretrained else None)
    print(f"{cfg.name}: cached in {folder} (loads offline with HF_HUB_OFFLINE=1)")
    return 0
