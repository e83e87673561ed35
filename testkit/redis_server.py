"""A Redis for the tests: TEST_REDIS_URL when set, else a throwaway redis-server on a free
loopback port that keeps nothing on disk (scripts/test installs Debian's redis-server)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from testkit.ports import free_port

START_TIMEOUT_SECONDS = 10.0


@contextmanager
def throwaway_redis(workdir: Path) -> Iterator[str]:
    if url := os.environ.get("TEST_REDIS_URL"):
        yield url
        return
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail("redis-server is not installed: scripts/test installs it (apt-get install redis-server)")
    port = free_port()
    command = [executable, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]
    process = subprocess.Popen([*command, "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def forget_service_keys(url: str) -> None:
    """Delete what the service stored, and only that: TEST_REDIS_URL may be a shared server."""
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match="user-service:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
