"""The model card: the README.md of a saved model, rendered from its config.json, and :class:`ModelCardInfo`,
the provenance a loaded model carries as ``model.card``.

The card is derived data (config.json is the source of truth), so it is re-rendered on push with the repo id.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .format import CONFIG_NAME, WEIGHTS_NAME

_METRIC_COLUMNS = ("name", "value", "unit", "split", "protocol", "source")

#: where a loaded model came from (:attr:`ModelCardInfo.origin`)
ORIGINS = ("store", "bundled", "hf-cache", "hub", "local-dir")


@dataclass(frozen=True)
class ModelCardInfo:
    """What a loaded model says about itself (``model.card``): its card metadata and where it was loaded from.

    ``origin``: ``store`` (installed with ``vaezoo convert ... --pretrained``), ``bundled`` (shipped inside an
    installed package), ``hf-cache`` (the Hugging Face cache, no request made), ``hub`` (resolved on the Hub) or
    ``local-dir``; ``location``: the folder, or ``repo@commit``. ``metadata`` is the whole card metadata of
    config.json (``model.card_metadata``).
    """

    name: str | None
    preset: str | None
    license: str | None
    source: str | None
    metrics: list[dict]
    origin: str
    location: str
    license_link: str | None = None
    dataset: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def provenance(self) -> dict | None:
        """The provenance record of the run that produced the model (:mod:`vaezoo.provenance`; written by
        ``vaezoo fit``), or None."""
        record = self.metadata.get("provenance")
        return record if isinstance(record, dict) else None

    @property
    def loaded_from(self) -> str:
        """``origin:location``, e.g. ``store:/home/me/.cache/vaezoo/models/nvae-celebahq``."""
        return f"{self.origin}:{self.location}"

    @classmethod
    def from_metadata(cls, metadata: dict, *, origin: str, location: str, name: str | None = None) -> ModelCardInfo:
        return cls(
            name=name or metadata.get("pretrained"),
            preset=metadata.get("preset"),
            license=metadata.get("license"),
            source=metadata.get("source"),
            metrics=list(metadata.get("metrics", [])),
            origin=origin,
            location=location,
            license_link=metadata.get("license_link"),
            dataset=metadata.get("dataset"),
            metadata=metadata,
        )


def model_card(config: dict, repo_id: str | None = None) -> Any:
    """The README.md of a saved model, a :class:`huggingface_hub.ModelCard` built from its config.json."""
    from huggingface_hub import ModelCard, ModelCardData

    meta = config.get("metadata", {})
    spec = config["model"]
    title = meta.get("preset") or (repo_id.split("/")[-1] if repo_id else spec["class_path"])
    license_fields = _license_fields(meta.get("license"), meta.get("license_link"))
    dataset = meta.get("dataset")
    data = ModelCardData(
        library_name="vaezoo",
        tags=["vaezoo", "vae", "generative-model", spec["class_path"]],
        datasets=[dataset] if dataset and re.fullmatch(r"[\w.\-/]+", dataset) else None,
        **license_fields,
    )
    name = f"hf-hub:{repo_id}" if repo_id else "local-dir:PATH/TO/THIS/FOLDER"
    lines = [f"# {title}", ""]
    if meta.get("description"):
        lines += [meta["description"], ""]
    lines += [f"A `{spec['class_path']}` model for [vaezoo](https://github.com/vaezoo/vaezoo).", ""]
    facts = [
        ("Preset", meta.get("preset")),
        ("Source", meta.get("source")),
        ("License", meta.get("license")),
        ("Dataset", dataset),
    ]
    lines += [f"- **{k}:** {v}" for k, v in facts if v]
    lines += ["", "## Usage", "", "```python", "import vaezoo", "", f'model = vaezoo.load("{name}")']
    lines += ["images = model.sample(16, temperature=0.7)", "```", ""]
    if meta.get("metrics"):
        lines += ["## Metrics", "", "| " + " | ".join(_METRIC_COLUMNS) + " |"]
        lines += ["|" + "---|" * len(_METRIC_COLUMNS)]
        for metric in meta["metrics"]:
            lines += ["| " + " | ".join(_cell(metric.get(c, "")) for c in _METRIC_COLUMNS) + " |"]
        lines += [""]
    lines += _provenance_lines(meta.get("provenance"))
    lines += ["## Model spec", "", "The component spec this model rebuilds from (`config.json`, key `model`):", ""]
    lines += ["```json", json.dumps(spec, indent=2), "```", ""]
    lines += [
        "## Files",
        "",
        f"- `{CONFIG_NAME}`: vaezoo {config.get('vaezoo_version')}, format version {config.get('format_version')}",
        f"- `{WEIGHTS_NAME}`: {config['weights']['size']} bytes, sha256 `{config['weights']['sha256']}`",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _provenance_lines(record: Any) -> list[str]:
    """The run that produced the model, from its provenance record (``config.json``, ``metadata.provenance``)."""
    if not isinstance(record, dict):
        return []
    torch_info = record.get("torch") if isinstance(record.get("torch"), dict) else {}
    git = record.get("git") if isinstance(record.get("git"), dict) else None
    commit = f"{git.get('commit')}{' (with uncommitted changes)' if git.get('dirty') else ''}" if git else None
    command = record.get("command")
    facts = [
        ("vaezoo", record.get("vaezoo_version")),
        ("torch", f"{torch_info.get('version')} ({torch_info.get('build')})" if torch_info else None),
        ("Machine", record.get("machine")),
        ("Command", f"`{' '.join(map(str, command))}`" if isinstance(command, list) else None),
        ("Recipe sha256", f"`{record['recipe_sha256']}`" if record.get("recipe_sha256") else None),
        ("Recipe commit", commit),
        ("Trained", f"{record.get('started')} to {record.get('ended')} (UTC)" if record.get("started") else None),
    ]
    return ["## Provenance", "", *(f"- **{k}:** {_cell(v)}" for k, v in facts if v), ""]


def _license_fields(license_text: str | None, link: str | None) -> dict:
    """A Hub license id when the text is one (e.g. ``apache-2.0``), else ``other`` with a name and link."""
    if not license_text:
        return {}
    if re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", license_text):
        return {"license": license_text}
    name = re.sub(r"[^a-z0-9]+", "-", license_text.split(";")[0].lower()).strip("-")
    return {"license": "other", "license_name": name, "license_link": link}


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")
