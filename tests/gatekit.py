"""Helpers for gate and routing tests: small results folders written directly, without scoring."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from iqaflow.schemas.results import Col, Status, results_schema

OUTPUTS = ["sharpness", "noise"]


def row(uri: str, sharpness: float | None = None, noise: float | None = None, error: str | None = None,
        data: bytes | None = None, **extra: Any) -> dict[str, Any]:
    return {
        Col.IMAGE_ID: hashlib.blake2b(uri.encode(), digest_size=8).hexdigest(), Col.URI: uri,
        Col.WIDTH: None if error else 128, Col.HEIGHT: None if error else 96,
        Col.STATUS: Status.ERROR.value if error else Status.OK.value, Col.ERROR_CODE: error,
        Col.CONTENT_HASH: hashlib.sha256(data).hexdigest() if data is not None else None,
        Col.BYTES: len(data) if data is not None else None, Col.SHARD_ID: "s",
        "sharpness": None if error else sharpness, "noise": None if error else noise, **extra,
    }


def table(rows: list[dict[str, Any]], outputs: list[str] = OUTPUTS) -> pa.Table:
    schema = results_schema(outputs)
    return pa.table({f.name: [r.get(f.name) for r in rows] for f in schema}, schema=schema)


def write_run(root: Path, rows: list[dict[str, Any]], shards: int = 2, source: str | None = None,
              outputs: list[str] = OUTPUTS) -> Path:
    """``root/runs/<name>`` with ``shards`` part files (and config.json when ``source`` is given)."""
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    size = -(-len(rows) // shards)
    for i in range(shards):
        chunk = rows[i * size:(i + 1) * size]
        if chunk:
            pq.write_table(table(chunk, outputs), results / f"part-{i:04d}.parquet")
    if source is not None:
        (root / "config.json").write_text(json.dumps({"source": source}))
    return root


def gate_text(body: str, name: str = "t") -> str:
    return f"version: 1\nname: {name}\n{body}"
