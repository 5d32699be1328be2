"""A gate file bound to the scorers: which scorer makes a column, which way each scorer is better.

Below the gate tasks and the run config, which both check a gate file before any image is scored.
"""

from __future__ import annotations

import pyarrow as pa

from iqaflow.schemas.gates import COLLECTION_KINDS, GateFile, bind, load_gate_file


def scorer_hints() -> dict[str, str]:
    from iqaflow.models.registry import all_scorers

    return {out: f"column {out!r} comes from scorer {name!r}, which this run did not use: add it to --models, "
                 "or set `optional: true` on the rule"
            for name, cls in all_scorers().items() for out in cls.info.outputs}


def collection_hints() -> dict[str, str]:
    """Fixes for a gate file that reads collection columns a run does not have."""
    return {col: f"column {col!r} comes from the collection pass (duplicate groups, size outliers), which this "
                 "run did not run: score with `duplicates: true` in the run config (the default), or set "
                 "`optional: true` on the rule"
            for col in COLLECTION_KINDS}


def directions() -> dict[str, bool]:
    """higher_is_better of every scorer's main column (extra outputs have no declared direction)."""
    from iqaflow.models.registry import all_scorers

    return {name: cls.info.higher_is_better for name, cls in all_scorers().items()}


def prepare(gates: str | GateFile, schema: pa.Schema, collection: bool = False) -> GateFile:
    """Load (if a path) and bind the gate file to a results schema.

    ``collection``: the run will add the collection pass's columns after scoring (``schema`` is the shard
    task's); rules reading them are deferred to the final pass (``spec.shard_rules()`` leaves them out).
    Without it they must be in ``schema`` (a finished run's), else a ConfigError says how to get them."""
    spec = load_gate_file(gates) if isinstance(gates, str) else gates
    return bind(spec, schema, {**collection_hints(), **scorer_hints()}, COLLECTION_KINDS if collection else None)
