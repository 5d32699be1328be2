"""The ``iqaflow`` command line: one module per command group, shared console helpers in ``common``.

``iqaflow.cli:main`` is the console script; ``app`` is the Typer application (for ``typer.testing.CliRunner``).
"""

from iqaflow.cli.app import app, main

__all__ = ["app", "main"]
