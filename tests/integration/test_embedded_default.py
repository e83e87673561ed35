"""The README's run command: no configuration, the embedded SQLite default, migrated at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from testkit.ports import free_port
from tests.conftest import ROOT

PASSWORD = "saffron-kettle-21-bridge"


@pytest.mark.slow
def test_the_service_runs_with_no_configuration_at_all(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("USER_SERVICE_")}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "litestar",
            "--app",
            "app.main:create_app",
            "run",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=tmp_path,  # a fresh folder: .data/ (database and dev key) is created there
        env={**env, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/startup").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.communicate()[0]
            assert time.monotonic() < deadline, "service did not start"
            time.sleep(0.2)
        created = httpx.post(
            f"{base}/api/v1/auth/register",
            json={"username": "first", "email": "first@example.com", "password": PASSWORD},
        )
        assert created.status_code == 201, created.text
        tokens = httpx.post(f"{base}/api/v1/auth/login", json={"username": "first", "password": PASSWORD}).json()
        me = httpx.get(f"{base}/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
        assert me.json()["username"] == "first"
        assert (tmp_path / ".data" / "user-service.sqlite3").exists()
        assert (tmp_path / ".data" / "dev-signing-key.pem").stat().st_mode & 0o077 == 0
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
