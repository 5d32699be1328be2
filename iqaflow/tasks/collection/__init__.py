"""Passes over a whole run: duplicate groups (exact and near), size outliers, incremental hash index.

``group_duplicates`` is the entry point (in memory, or on Dask with a client); ``IndexFile`` and
``join_new`` check a later run's new images against an earlier run's index.
"""

from iqaflow.tasks.collection._types import KeepPolicy, NearRule
from iqaflow.tasks.collection.dedup import group_duplicates
from iqaflow.tasks.collection.index import IndexFile, Joined, join_new
from iqaflow.tasks.collection.lsh import BandPlan, miss_probability, plan_bands

__all__ = ["BandPlan", "IndexFile", "Joined", "KeepPolicy", "NearRule", "group_duplicates", "join_new",
           "miss_probability", "plan_bands"]
