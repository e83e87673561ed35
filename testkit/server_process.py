"""The service as a real process (``python -m app``), for tests of signals, workers and export."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from testkit.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
# The service's own command line, as an operator runs it.
LITESTAR_CLI = [sys.executable, "-m", "litestar", "--app", "app.main:create_app"]
# uvicorn re-raises the SIGTERM it handled once it has shut down gracefully, so a clean
# stop ends "killed by SIGTERM" (as Kubernetes expects), not with exit code 0.
CLEAN_EXIT = {0, -signal.SIGTERM}
# One hashing thread and a long queue, with argon2 slow enough (~0.1 s a verify) that a
# handful of concurrent logins keeps the pool saturated for seconds.
SLOW_SINGLE_THREAD_HASHING = {
    "USER_SERVICE_PASSWORDS__TIME_COST": "3",
    "USER_SERVICE_PASSWORDS__MEMORY_COST_KIB": "32768",
    "USER_SERVICE_PASSWORDS__POOL_SIZE": "1",
    "USER_SERVICE_PASSWORDS__QUEUE_SIZE": "64",
}


# coverage.py measures Python subprocesses of the test run (pyproject.toml: patch =
# ["subprocess"]) through this variable; the processes of a benchmark or a load test must
# run without its tracer, or their latency would be the tracer's.
COVERAGE_VARIABLE = "COVERAGE_PROCESS_CONFIG"


def without_coverage(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name != COVERAGE_VARIABLE}


class ServerProcess:
    def __init__(self, *, database_url: str, signing_key_file: Path, log_file: Path, **env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_file = log_file
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("USER_SERVICE_", "OTEL_", "PROMETHEUS_"))},
            "USER_SERVICE_ENVIRONMENT": "test",
            "USER_SERVICE_DB__URL": database_url,
            "USER_SERVICE_TOKENS__SIGNING_KEY_FILE": str(signing_key_file),
            # The TOTP secrets' key, which production insists on as it does on the signing
            # key: one per process (no test shares enrolments between processes).
            "USER_SERVICE_MFA__ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "USER_SERVICE_PASSWORDS__TIME_COST": "1",
            "USER_SERVICE_PASSWORDS__MEMORY_COST_KIB": "64",
            "USER_SERVICE_SERVER__PORT": str(self.port),
            "USER_SERVICE_LOGGING__FORMAT": "json",
            "USER_SERVICE_HTTP__DRAIN_SECONDS": "0",
            # Test clients all come from 127.0.0.1; tests of the limits turn them on.
            "USER_SERVICE_RATE_LIMITS__ENABLED": "false",
            # Registrations queue verification mail: as files next to the log, never in
            # the checkout, unless a test points the service at an SMTP server.
            "USER_SERVICE_MAIL__FILE_DIRECTORY": str(log_file.parent / "mail"),
            **env,
        }
        self.process: subprocess.Popen[bytes] | None = None
        # Words before ``python -m app``: a tool the service runs under (valgrind).
        self.command_prefix: list[str] = []

    def untraced(self) -> ServerProcess:
        """Run without the test suite's coverage tracer: for benchmarks and load tests."""
        self.env = without_coverage(self.env)
        return self

    def start(self, timeout: float = 60.0) -> ServerProcess:
        """Run it and wait until its startup probe says it has started."""
        return self._launch(timeout, probe="/health/startup")

    def start_unchecked(self, timeout: float = 60.0) -> ServerProcess:
        """Run it and wait only until it answers (its liveness probe): for a test of a
        process that must not finish starting."""
        return self._launch(timeout, probe="/health/live")

    def _launch(self, timeout: float, *, probe: str) -> ServerProcess:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.command_prefix, sys.executable, "-m", "app"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output}")
            try:
                if httpx.get(f"{self.base_url}{probe}", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not start:\n{self.output}")

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; kills it if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    @property
    def output(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
