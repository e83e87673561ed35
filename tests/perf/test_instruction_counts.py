"""A regression check on the CPU the service spends per request that does not depend on
what else the machine is doing: callgrind's instruction counts per GET /users/me and per
login (argon2 at its minimum cost, so the rest of the login is what is counted), against
the baseline committed in instruction_baseline.json. A change that makes either grow by
more than the margin fails here, with the figures; one that is meant to (a feature with a
cost) refreshes the baseline with UPDATE_INSTRUCTION_BASELINE=1 and says so in its commit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from testkit.callgrind import QUIET_ENV, Callgrind, available
from testkit.server_process import ServerProcess

BASELINE = Path(__file__).with_name("instruction_baseline.json")
# Counts repeat to within about a percent between runs (the event loop's iterations depend
# a little on timing); growth beyond this is a change in the code.
MARGIN = 0.10
PASSWORD = "callgrind-lantern-93-harbour"
REQUESTS = {"me": 40, "login": 15}

pytestmark = pytest.mark.skipif(not available(), reason="valgrind (Debian's package) is not installed")


@pytest.fixture
def counted(clean_database: str, signing_key_file: Path, tmp_path: Path) -> Iterator[Callgrind]:
    server = ServerProcess(
        database_url=clean_database,
        signing_key_file=signing_key_file,
        log_file=tmp_path / "server.log",
        USER_SERVICE_PASSWORDS__TIME_COST="1",
        USER_SERVICE_PASSWORDS__MEMORY_COST_KIB="8",
        USER_SERVICE_PASSWORDS__POOL_SIZE="1",
        USER_SERVICE_LOGGING__LEVEL="WARNING",
        USER_SERVICE_MAIL__NEW_LOGIN_NOTICE="false",
        **QUIET_ENV,
    ).untraced()
    callgrind = Callgrind(server, tmp_path).start()
    try:
        yield callgrind
    finally:
        server.stop(timeout=120)


def test_instructions_per_request_stay_within_the_baseline(counted: Callgrind) -> None:
    base = counted.server.base_url
    with httpx.Client(base_url=base, timeout=120) as client:
        name = f"cg{os.getpid()}"
        registered = client.post(
            "/api/v1/auth/register", json={"username": name, "email": f"{name}@example.com", "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        credentials = {"username": name, "password": PASSWORD}

        def login() -> None:
            answer = client.post("/api/v1/auth/login", json=credentials)
            assert answer.status_code == 200, answer.text

        token = client.post("/api/v1/auth/login", json=credentials).json()["access_token"]
        bearer = {"Authorization": f"Bearer {token}"}

        def me() -> None:
            assert client.get("/api/v1/users/me", headers=bearer).status_code == 200

        # Warm: the interpreter's specialised instructions, statement caches, the pool.
        for _ in range(30):
            me()
        for _ in range(10):
            login()
        measured = {
            "me": counted.instructions_per_call(me, REQUESTS["me"]),
            "login": counted.instructions_per_call(login, REQUESTS["login"]),
        }
    print(  # noqa: T201 - the figures, with -s
        "instructions per request: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in measured.items())
    )
    if os.environ.get("UPDATE_INSTRUCTION_BASELINE"):
        BASELINE.write_text(json.dumps({k: round(v) for k, v in measured.items()}, indent=2) + "\n")
    baseline = json.loads(BASELINE.read_text())
    grown = {k: v / baseline[k] for k, v in measured.items() if v > baseline[k] * (1 + MARGIN)}
    assert not grown, f"instructions per request grew past {MARGIN:.0%} over the baseline: {grown} ({measured})"
