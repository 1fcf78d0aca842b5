"""Honest evaluation: the ELBO and the importance-weighted NLL, labelled with their protocol."""

from .metrics import EvaluationResult, evaluate

__all__ = ["EvaluationResult", "evaluate"]
