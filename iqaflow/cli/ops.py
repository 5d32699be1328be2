"""CLI commands for operating iqaflow: ``iqaflow report`` and ``iqaflow deploy``; ``register`` adds them to the app."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from iqaflow.cli.common import quiet_prefect

console = Console()

REPORT_EXAMPLES = """
Examples:

  iqaflow report ./qa/runs/photos-1a2b3c4d

  iqaflow report s3://bucket/qa/runs/today --baseline s3://bucket/qa/runs/last-week --out today.html

  iqaflow report ./qa/runs/scans-77aa --gates examples/print_audit.yaml --worst 48
"""

DEPLOY_EXAMPLES = """
Examples:

  iqaflow deploy                                 # serve every deployment of infra/prefect.yaml here

  iqaflow deploy --name curate-nightly --param source=s3://bucket/photos --param out=s3://bucket/qa

  iqaflow deploy --register --work-pool iqaflow  # for `prefect worker start --pool iqaflow`

PREFECT_API_URL chooses the Prefect server (e.g. http://prefect:4200/api).
"""


def _parse_params(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are YAML scalars or flow mappings (``true``, ``3``, ``{workers: 2}``)."""
    import yaml

    from iqaflow.errors import ConfigError

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE, e.g. --param source=s3://bucket/photos")
        try:
            out[key.strip()] = yaml.safe_load(value) if value else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--param {item!r}: the value is not valid YAML ({exc})") from None
    return out


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``deploy`` to ``app``."""

    @app.command(epilog=REPORT_EXAMPLES)
    def report(
        results: Annotated[str, typer.Argument(help="Run folder (OUT/runs/RUN_ID) or its results folder")],
        out: Annotated[str | None, typer.Option(help="HTML file to write [default: RUN/report.html]")] = None,
        gates: Annotated[str | None, typer.Option(help="Gate file whose thresholds to draw [default: the run's]")]
        = None,
        baseline: Annotated[str | None, typer.Option(help="Earlier run to compare distributions with")] = None,
        worst: Annotated[int, typer.Option(min=0, max=1000, help="How many worst images to show")] = 24,
    ) -> None:
        """Write one self-contained HTML report: summary, histograms, folders, worst images, errors, drift."""
        from iqaflow.tasks.report.build import write_report

        path = write_report(results, out, gates, baseline, worst)
        console.print(f"[bold]report:[/bold] {path}")

    @app.command(epilog=DEPLOY_EXAMPLES)
    def deploy(
        file: Annotated[Path, typer.Option("--file", "-f", help="Prefect project file")] = Path("infra/prefect.yaml"),
        name: Annotated[list[str] | None, typer.Option(help="Deployment name(s) from the file [default: all]")]
        = None,
        param: Annotated[list[str] | None, typer.Option(help="Override a flow parameter: KEY=VALUE (repeat)")]
        = None,
        cron: Annotated[str | None, typer.Option(help="Replace the file's schedules with this cron string")] = None,
        register_only: Annotated[bool, typer.Option("--register", help="Register for a work pool; do not serve")]
        = False,
        work_pool: Annotated[str | None, typer.Option(help="Work pool for --register [default: the file's]")] = None,
        limit: Annotated[int | None, typer.Option(help="Most flow runs served at once")] = None,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect logs")] = False,
    ) -> None:
        """Serve the scheduled curation deployments of infra/prefect.yaml (or register them to a work pool)."""
        quiet_prefect(verbose)
        from iqaflow.flows import deployments

        pairs = deployments.from_file(file, name or None, _parse_params(param or []), cron)
        for dep, _ in pairs:
            when = ", ".join(str(getattr(s.schedule, "cron", s.schedule)) for s in dep.schedules) or "no schedule"
            console.print(f"deployment [bold]{dep.flow_name}/{dep.name}[/bold]: {when}", highlight=False)
        if register_only:
            for (dep, _), dep_id in zip(pairs, deployments.register(pairs, work_pool), strict=True):
                console.print(f"registered {dep.flow_name}/{dep.name} ({dep_id})")
            return
        deployments.serve([dep for dep, _ in pairs], limit)
