"""The ``iqaflow`` Typer app: the command groups registered on it, and ``main``: one line and exit 2 on expected errors.

Heavy imports happen inside commands so ``--help`` is instant.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Annotated

import typer

from iqaflow.cli import default_nr, gates, ml, models, ops, score
from iqaflow.cli.common import ENV_DEBUG, err_console, traceback_if_debug
from iqaflow.cli.preflight import one_line
from iqaflow.errors import IqaflowError

app = typer.Typer(
    name="iqaflow",
    help="Image-quality QA for large image collections: score, gate, route, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown joins a docstring's wrapped lines, so help paragraphs reflow to the terminal's width.
    rich_markup_mode="markdown",
)


@app.callback()
def _top(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an expected error too")] = False,
) -> None:
    # Expected errors are one line on stderr; --debug (or $IQAFLOW_DEBUG=1) adds their traceback.
    if debug:
        os.environ[ENV_DEBUG] = "1"


score.register(app)
models.register(app)
gates.register(app)
ml.register(app)
default_nr.register(app)
ops.register(app)


def main() -> None:
    """Entry point: one-line reason and non-zero exit on failure.

    Exits through ``os._exit`` after flushing, because s3fs/pyarrow background threads can
    abort the interpreter at shutdown ("terminate called ...") and turn success into 134.
    """
    code = 0
    if "--debug" in sys.argv[1:]:  # accepted anywhere on the line, not only before the command
        sys.argv = [a for a in sys.argv if a != "--debug"]
        os.environ[ENV_DEBUG] = "1"
    try:
        app(standalone_mode=False)
    except IqaflowError as exc:
        traceback_if_debug()
        err_console.print(f"[red]error:[/red] {one_line(str(exc))}", highlight=False, soft_wrap=True)
        code = 2
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        code = 130
    except Exception as exc:  # click usage errors and anything unexpected: one line, non-zero
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            code = exc.exit_code
        elif isinstance(exc, click.exceptions.Abort):
            code = 1
        else:
            traceback_if_debug()
            err_console.print(f"[red]error:[/red] {type(exc).__name__}: {one_line(str(exc))}", highlight=False,
                              soft_wrap=True)
            code = 1
    # Run atexit handlers ourselves (they stop Prefect's ephemeral API server), then leave
    # without the interpreter teardown in which native threads may abort.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


