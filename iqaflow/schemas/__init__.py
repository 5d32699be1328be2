"""The single source of column names and table schemas (style principle 7)."""

from iqaflow.schemas.results import (
    MANIFEST_SCHEMA,
    SCHEMA_VERSION,
    Col,
    ErrorCode,
    Status,
    results_schema,
    scorer_columns,
)

__all__ = [
    "MANIFEST_SCHEMA",
    "SCHEMA_VERSION",
    "Col",
    "ErrorCode",
    "Status",
    "results_schema",
    "scorer_columns",
]
