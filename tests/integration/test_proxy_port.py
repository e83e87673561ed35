"""The reverse proxy's own port (issue 19, point 5): with ``USER_SERVICE_SERVER__PROXY_PORT``
the service listens on two ports, and X-Forwarded-For counts only on the proxy's, so a
caller that reaches the service port directly (an in-cluster client, from an address inside
the trusted ranges) cannot choose the address its rate limits and its sessions are
recorded under. Through ``python -m app``, with one worker and with two (each worker serves
both sockets); the address the service believed is read back from the sessions it
recorded (API.md: a session's ``ip``)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from testkit.ports import free_port
from testkit.server_process import ServerProcess
from tests.integration.faults import LOGIN, REGISTER, register_body
from tests.integration.helpers import PASSWORD, unique_name

FORWARDED_BY_THE_PROXY = "203.0.113.7"
FORGED_BY_A_CALLER = "198.51.100.9"


@pytest.mark.parametrize("workers", [1, 2])
def test_forwarded_addresses_count_on_the_proxy_port_only(
    clean_database: str, signing_key_file: Path, tmp_path: Path, workers: int
) -> None:
    proxy_port = free_port()
    server = ServerProcess(
        database_url=clean_database,
        signing_key_file=signing_key_file,
        log_file=tmp_path / "server.log",
        USER_SERVICE_SERVER__PROXY_PORT=str(proxy_port),
        USER_SERVICE_HTTP__TRUSTED_PROXIES="127.0.0.1",
        USER_SERVICE_SERVER__WORKERS=str(workers),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"),
    ).start()
    try:
        name = unique_name()
        registered = httpx.post(f"{server.base_url}{REGISTER}", json=register_body(name), timeout=30)
        assert registered.status_code == 201, registered.text
        credentials = {"username": name, "password": PASSWORD}
        via_proxy = httpx.post(
            f"http://127.0.0.1:{proxy_port}{LOGIN}",
            json=credentials,
            headers={"X-Forwarded-For": FORWARDED_BY_THE_PROXY},
            timeout=30,
        )
        assert via_proxy.status_code == 200, via_proxy.text
        # Several logins on the service port: with two workers, both get some.
        for _ in range(4):
            direct = httpx.post(
                f"{server.base_url}{LOGIN}",
                json=credentials,
                headers={"X-Forwarded-For": FORGED_BY_A_CALLER},
                timeout=30,
            )
            assert direct.status_code == 200, direct.text
        token = direct.json()["access_token"]
        sessions = httpx.get(
            f"{server.base_url}/api/v1/users/me/sessions", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert sessions.status_code == 200, sessions.text
        addresses = sorted(session["ip"] for session in sessions.json()["items"])
        assert addresses == ["127.0.0.1"] * 4 + [FORWARDED_BY_THE_PROXY]
        # The proxy's port is the service in every other respect.
        assert httpx.get(f"http://127.0.0.1:{proxy_port}/health/ready", timeout=10).status_code == 200
    finally:
        server.stop()


def test_a_proxy_port_without_trusted_proxies_is_refused(
    clean_database: str, signing_key_file: Path, tmp_path: Path
) -> None:
    server = ServerProcess(
        database_url=clean_database,
        signing_key_file=signing_key_file,
        log_file=tmp_path / "server.log",
        USER_SERVICE_SERVER__PROXY_PORT=str(free_port()),
    )
    with pytest.raises(RuntimeError, match="USER_SERVICE_SERVER__PROXY_PORT needs USER_SERVICE_HTTP__TRUSTED_PROXIES"):
        server.start(timeout=30)
