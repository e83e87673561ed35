"""The open-loop overload profile: logins arrive at a fixed rate whatever the service
answers, so a service past its capacity keeps being offered that rate (a closed loop would
slow down with it), and the gates judge goodput: no failures, and a fair share of the
arrivals logged in while the rest were shed with 503 + Retry-After."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.loadtests.test_smoke_profile import explain, run_loadtests

pytestmark = pytest.mark.slow

# 16 logins/s offered to one hashing thread with a queue of 2: sheds for sure, while the
# share that gets through stays above the profile's 30 % even when the shared machine is
# busy (a CI run served 7.7/s there: 48 % of 16/s; 32/s offered gave 28 % and failed).
# 25 s: the profile's goodput gate wants at least 200 logins with the right password.
USERS, PACING_SECONDS, RUN_SECONDS = 8, 0.5, 25
OFFERED_PER_SECOND = USERS / PACING_SECONDS


def test_logins_keep_arriving_past_capacity_and_goodput_holds(clean_database: str, tmp_path: Path) -> None:
    reports = tmp_path / "overload"
    result = run_loadtests(
        clean_database,
        reports,
        *("--profile", "overload", "--users", str(USERS), "--run-time", f"{RUN_SECONDS}s"),
        timeout=240,
        LOADTEST_ARRIVAL_PACING_SECONDS=str(PACING_SECONDS),
        # One hashing thread and a short queue: capacity well under the offered rate.
        USER_SERVICE_PASSWORDS__POOL_SIZE="1",
        USER_SERVICE_PASSWORDS__QUEUE_SIZE="2",
    )
    assert result.returncode == 0, explain(result)
    with (reports / "locust_stats.csv").open(newline="") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    served = int(rows["/api/v1/auth/login"]["Request Count"])
    shed = sum(int(row["Request Count"]) for name, row in rows.items() if name.endswith("[shed]"))
    assert shed > 0, "nothing was shed: the offered rate did not exceed the capacity"
    assert served > 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    # The open loop: the rate offered held although most of it was refused (a closed loop
    # backing off on Retry-After would have sent a fraction of it).
    achieved = int(rows["Aggregated"]["Request Count"]) / RUN_SECONDS
    assert achieved >= 0.8 * OFFERED_PER_SECOND, f"{achieved:.1f}/s of {OFFERED_PER_SECOND:.0f}/s offered"
