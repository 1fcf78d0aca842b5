"""Honest evaluation: the ELBO and the importance-weighted NLL, labelled with their protocol, and paired
comparisons of two evaluations on the same random draws."""

from .metrics import EvaluationResult, evaluate
from .paired import PairedDifference, evaluation_generator, owned_randomness, paired_difference, paired_differences

__all__ = [
    "EvaluationResult",
    "PairedDifference",
    "evaluate",
    "evaluation_generator",
    "owned_randomness",
    "paired_difference",
    "paired_differences",
]
