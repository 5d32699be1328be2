"""Specific exceptions. Each message says what was expected, what was got and how to fix it."""

from __future__ import annotations


class IqaflowError(Exception):
    """Base of every error iqaflow raises on purpose; the CLI prints its message as one line."""


class ConfigError(IqaflowError):
    """A run config, flag or gate file is invalid."""


class UnknownScorerError(IqaflowError, KeyError):
    """A scorer name is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsError(IqaflowError):
    """A weight file is missing or does not match its expected sha256."""


class SourceError(IqaflowError):
    """The source collection cannot be listed or is empty."""


class OutputError(IqaflowError):
    """The output folder or URL cannot be written."""


class StartupError(IqaflowError):
    """The Prefect API server or the local Dask cluster of a run did not start."""


class GateFailed(IqaflowError):
    """A collection gate configured with ``on_fail: fail`` failed; the run's state is Failed."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report  # the GateReport, so the CLI can still print what was decided


class RoutingError(IqaflowError):
    """A routing destination or action cannot be used as configured."""
