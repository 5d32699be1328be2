"""Real servers as processes on loopback for the operations tests: ``prefect server`` and ``mlflow server``.

Each has its own state folder and log file; ``start`` waits on the health endpoint with a deadline,
``close`` stops only the process (group) it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent


def http_get(url: str, timeout: float = 2) -> bytes | None:
    """The body of a 200 answer, else None: a server still starting may refuse, or accept and not answer yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read() if r.status == 200 else None
    except OSError:
        return None


class ServerProcess:
    """A child process in its own session, with a log file and a health URL."""

    name = "server"

    def __init__(self, root: Path) -> None:
        from conftest import free_port

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = root / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def health_url(self) -> str:
        raise NotImplementedError

    def launch(self) -> ServerProcess:
        """Start the process without waiting (several servers can boot side by side)."""
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                         start_new_session=True)
        return self

    def wait_healthy(self, timeout: float = 180) -> ServerProcess:
        from conftest import wait_until

        assert self.proc is not None, "launch() first"
        try:
            wait_until(lambda: self.proc.poll() is not None or http_get(self.health_url()) is not None, timeout,
                       self.name, interval=0.5)
        except TimeoutError:
            self.close()
            raise TimeoutError(f"{self.name} not healthy after {timeout:.0f}s; log: {self.tail()}") from None
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; log: {self.tail()}")
        return self

    def start(self, timeout: float = 180) -> ServerProcess:
        return self.launch().wait_healthy(timeout)

    def tail(self, n: int = 3000) -> str:
        return self.log_file.read_text(errors="replace")[-n:] if self.log_file.exists() else ""

    def terminate(self) -> None:
        """SIGTERM to the server and the workers it forked (its own session), nothing else."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        if self.proc is None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)


class PrefectServer(ServerProcess):
    """``prefect server start`` with its own SQLite database; the scheduler service loops every second."""

    name = "prefect-server"

    def command(self) -> list[str]:
        return [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        return {**env, **self.client_env(self.root / "server-home"),
                "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.root / 'prefect.db'}",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false",
                "PREFECT_SERVER_UI_ENABLED": "false", "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1"}

    def client_env(self, home: Path) -> dict[str, str]:
        """Environment for a client process of this server (its own PREFECT_HOME)."""
        home.mkdir(parents=True, exist_ok=True)
        return {"PREFECT_HOME": str(home), "PREFECT_API_URL": self.api, "PREFECT_LOGGING_LEVEL": "WARNING",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def health_url(self) -> str:
        return f"{self.api}/health"

    def post(self, path: str, body: dict[str, Any], attempts: int = 6) -> Any:
        """The REST API as any outside client sees it. Like Prefect's own client, retries a 503 (the server
        says so when its SQLite database is busy) and 429 with backoff."""
        import time
        import urllib.error

        req = urllib.request.Request(f"{self.api}/{path.lstrip('/')}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        for attempt in range(attempts):
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return json.loads(r.read())
            except urllib.error.HTTPError as exc:
                if exc.code not in (429, 503) or attempt == attempts - 1:
                    raise
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")


class MlflowServer(ServerProcess):
    """``mlflow server`` with a SQLite store and a proxied artifact folder."""

    name = "mlflow-server"

    def command(self) -> list[str]:
        return [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination", (self.root / "artifacts").as_uri()]

    def env(self) -> dict[str, str]:
        return {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}

    def health_url(self) -> str:
        return f"{self.url}/health"
