"""How an evaluation was made, in words, and its numbers as card metrics that carry that protocol.

``vaezoo evaluate`` prints :func:`protocol_text` beside its numbers; ``vaezoo fit`` records it in ``results.json`` and
puts :func:`card_metrics` (each number with that protocol) into the saved model's card.
"""

from __future__ import annotations

import math
from typing import Any

from .metrics import EvaluationResult, default_max_batch


def protocol_text(model: Any, data: Any, k: int, max_batch: int | None = None) -> str:
    """The data set and split, the bit depth, k and the batching of an evaluation, and how the model computes log p
    when it says (e.g. an ODE)."""
    bits = getattr(model.likelihood, "num_bits", None)
    depth = f"{bits}-bit data; " if bits else ""
    rows = max_batch or default_max_batch(model.device)
    protocol = f"{data.describe()}; {depth}k={k} importance samples, batched ({rows} rows per forward pass)"
    notes = model.evaluation_protocol()
    if notes.get("log_p"):
        protocol += f"; {notes['log_p']}"
    return protocol


def card_metrics(result: EvaluationResult, protocol: str, source: str, split: str = "test") -> list[dict]:
    """The numbers of ``result`` as card metrics (``{"name", "value", "unit", "split", "protocol", "source"}``), in
    the unit the result reports (nats for binarised data, bits/dim otherwise); a value that is not finite is left
    out (a card holds JSON numbers only)."""
    if result.unit == "nats":
        values = [("ELBO", result.elbo_nats), (f"IW-NLL (k={result.k})", result.iw_nll_nats)]
    else:
        values = [("NELBO", result.nelbo_bpd), (f"IW-NLL (k={result.k})", result.iw_nll_bpd)]
    return [
        {
            "name": name,
            "value": float(value),
            "unit": result.unit,
            "split": split,
            "protocol": protocol,
            "source": source,
        }
        for name, value in values
        if value is not None and math.isfinite(value)
    ]
