"""Event-loop lag, measured by the service (issue 20, point 6): a stall of the loop shows in
``user_service_event_loop_lag_seconds`` within a sample period. The service runs on the test's
own event loop here, so a blocking call in the test blocks the service's loop too."""

from __future__ import annotations

import asyncio
import re
import time

from app.main import create_app
from app.settings import Settings
from testkit.live_server import LiveClient, serve

LAG = re.compile(r'^user_service_event_loop_lag_seconds_(count|bucket\{le="0\.25"\}) (\S+)$', re.MULTILINE)
# Longer than the sample period (0.5 s), so whichever moment of its sleep the sampler is in,
# it wakes at least 0.3 s late.
STALL_SECONDS = 0.8


async def _lag(client: LiveClient) -> dict[str, float]:
    return {key: float(value) for key, value in LAG.findall((await client.get("/metrics")).text)}


async def test_a_stalled_event_loop_shows_in_the_lag_histogram(settings: Settings) -> None:
    async with serve(create_app(settings)) as client:
        await asyncio.sleep(1.2)  # two or three samples of a loop with nothing to do
        before = await _lag(client)
        assert before["count"] >= 1
        time.sleep(STALL_SECONDS)  # noqa: ASYNC251 - the point: every task on this loop waits
        await asyncio.sleep(1.2)
        after = await _lag(client)
    observed = after["count"] - before["count"]
    over_a_quarter_second = observed - (after['bucket{le="0.25"}'] - before['bucket{le="0.25"}'])
    assert observed >= 2
    # The sample that was sleeping through the stall woke that much late.
    assert over_a_quarter_second >= 1
