"""Open-loop login load: arrivals of a Poisson process at a set rate, each sent when it
arrives whether or not earlier ones have been answered, as a crowd of independent users
does (a closed-loop client such as wrk slows down with the service and hides a queue).

    uv run python -m loadtests.open_loop URL --rate 60 --seconds 10 --prefix P --count 2000

Each login is a random one of ``count`` seeded accounts (``<prefix>000001``...). Requests
go over HTTP/1.1 keep-alive connections taken from an idle set, a new one opened when
none is idle (up to ``--max-connections``; beyond it an arrival counts as dropped by the
client, which the report says). Prints one JSON object: offered and achieved rates, the
answers by status, how many refusals lacked Retry-After, and latency percentiles of
successful logins and of all answers. The standard library only: it runs where the
benchmark runs, and its own CPU stays small next to the service's at these rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOGIN = "/api/v1/auth/login"


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    refusals_without_retry_after: int = 0
    ok_latencies: list[float] = field(default_factory=list)
    all_latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    connections_opened: int = 0


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def exchange(self, request: bytes) -> tuple[int, dict[str, str]]:
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers


class OpenLoop:
    def __init__(self, url: str, prefix: str, count: int, password: str, max_connections: int) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = prefix
        self.count = count
        self.password = password
        self.max_connections = max_connections
        self.idle: list[Connection] = []
        self.open = 0
        self.tally = Tally()

    def request(self) -> bytes:
        name = f"{self.prefix}{random.randint(1, self.count):06d}"  # noqa: S311 - a load pattern, not a secret
        body = json.dumps({"username": name, "password": self.password}).encode()
        return (
            f"POST {LOGIN} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def one(self, sent_at: float) -> None:
        if self.idle:
            connection = self.idle.pop()
        elif self.open >= self.max_connections:
            self.tally.dropped += 1
            return
        else:
            self.open += 1
            self.tally.connections_opened += 1
            try:
                connection = Connection(*await asyncio.open_connection(self.host, self.port))
            except OSError as exc:
                self.open -= 1
                self.tally.errors[type(exc).__name__] += 1
                return
        try:
            status, headers = await connection.exchange(self.request())
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            self.open -= 1
            connection.writer.close()
            self.tally.errors[type(exc).__name__] += 1
            return
        # From the arrival, not from the send: time waiting for a connection is the user's too.
        latency = time.perf_counter() - sent_at
        self.tally.statuses[status] += 1
        self.tally.all_latencies.append(latency)
        if status == 200:
            self.tally.ok_latencies.append(latency)
        if status in (429, 503) and "retry-after" not in headers:
            self.tally.refusals_without_retry_after += 1
        if headers.get("connection", "").lower() == "close":
            self.open -= 1
            connection.writer.close()
        else:
            self.idle.append(connection)

    async def run(self, rate: float, seconds: float) -> None:
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        next_at = started
        while next_at - started < seconds:
            next_at += random.expovariate(rate)
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.one(next_at))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        # Answers still in flight at the end are waited for (bounded) and counted.
        if tasks:
            await asyncio.wait(tasks, timeout=30)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="mean arrivals per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--max-connections", type=int, default=1000)
    args = parser.parse_args()
    load = OpenLoop(args.url, args.prefix, args.count, args.password, args.max_connections)
    asyncio.run(load.run(args.rate, args.seconds))
    tally = load.tally
    answered = sum(tally.statuses.values())
    print(
        json.dumps(
            {
                "offered_per_second": args.rate,
                "seconds": args.seconds,
                "answered": answered,
                "ok_per_second": tally.statuses[200] / args.seconds,
                "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
                "refusals_without_retry_after": tally.refusals_without_retry_after,
                "errors": dict(tally.errors),
                "dropped_by_client": tally.dropped,
                "connections_opened": tally.connections_opened,
                "ok_p50_ms": 1000 * percentile(tally.ok_latencies, 0.50),
                "ok_p99_ms": 1000 * percentile(tally.ok_latencies, 0.99),
                "all_p50_ms": 1000 * percentile(tally.all_latencies, 0.50),
                "all_p99_ms": 1000 * percentile(tally.all_latencies, 0.99),
            }
        )
    )


if __name__ == "__main__":
    main()
