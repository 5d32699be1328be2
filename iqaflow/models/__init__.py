"""Scorers: interface, registry and implementations. Imports neither prefect, mlflow nor GX."""

from iqaflow.models.base import PerImageScorer, Scorer, ScorerInfo, WeightSpec
from iqaflow.models.registry import all_scorers, create_scorer, get_scorer_class, register, scorer_info

__all__ = [
    "PerImageScorer",
    "Scorer",
    "ScorerInfo",
    "WeightSpec",
    "all_scorers",
    "create_scorer",
    "get_scorer_class",
    "register",
    "scorer_info",
]
