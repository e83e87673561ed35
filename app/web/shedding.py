"""Shedding the hashing routes at the edge while the hashing pool is full.

Under overload a shed is the common answer, and each one competes for the cores the
hashing threads need. Shed inside Litestar, a login cost about 3 ms of CPU before its 503:
routing, the body parsed and validated, the per-address rate limit, the account throttle's
reservation and settlement in the database. Clients that retry at once without honouring
Retry-After (64 such connections) then halved the logins that got through. Here, below
Litestar and above everything else it would do, a ``POST`` to a route that must hash is
answered 503 ``hashing-capacity-exceeded`` with ``Retry-After`` as soon as its headers
are in: no body read, no database. It is the same answer the use case gives when the pool
is full (the same problem document, headers, metrics and log line), only cheaper.

Cheaper is not enough against clients that retry at once: answered in a millisecond, 64
such connections sent 850 sheds a second and still took a third of the CPU. So the answer
is held for ``shed_delay_seconds`` (0.5 s, an idle wait) before it goes: each connection
then costs at most two sheds a second. Well-behaved clients lose nothing (their request
was refused either way, and they wait out Retry-After, which is longer).

What it gives up, on purpose and only while the pool is full: a request that the limits
or the throttle would have refused (429) or that is malformed (400/422) gets the 503
instead. Both say "not now" and neither spends a hash; the 429 comes back on the retry
once the pool has room. When the pool has room, a request pays a look-up and a count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import NoReturn, Protocol

from litestar.types import ASGIApp, Receive, Scope, Send

from app.errors import HashingCapacityExceeded
from app.web.problems import problem_bytes, send_problem


class HashingPool(Protocol):
    """What the edge needs of the password hasher (app/identity/passwords.py)."""

    @property
    def full(self) -> bool: ...

    @property
    def capacity(self) -> int: ...

    def refuse(self, operation: str) -> NoReturn: ...


# Called with the route of each request shed here (the login's own counter, for one).
ShedObserver = Callable[[str], None]


class _Counted:
    """One request's place in its route's count, given up once."""

    __slots__ = ("_counts", "_path")

    def __init__(self, counts: dict[str, int], path: str) -> None:
        self._counts = counts
        self._path = path
        counts[path] += 1

    def release(self) -> None:
        if self._counts:
            self._counts[self._path] -= 1
            self._counts = {}


_this_request: ContextVar[_Counted | None] = ContextVar("edge_counted_request", default=None)


def waiting_for_something_else() -> None:
    """The current request is about to wait for something other than a hash (its turn in
    the login throttle's line for one account): the edge stops counting it against the
    pool's capacity. Otherwise many logins waiting on one name would keep everyone
    else's out at the edge while the pool stood idle. No-op outside a counted request."""
    if (counted := _this_request.get()) is not None:
        counted.release()


def shedding_while_hashing_is_full(
    app: ASGIApp,
    *,
    hasher: HashingPool,
    routes: Mapping[str, str],
    delay_seconds: float,
    on_shed: ShedObserver | None = None,
) -> ASGIApp:
    """``routes``: path of a ``POST`` route that hashes -> its hashing operation
    ("verify" or "hash", the label of the rejection counter). Each shed answer is held
    ``delay_seconds`` first (see PasswordSettings.shed_delay_seconds)."""
    bodies = {
        path: problem_bytes(
            status=503,
            kind=HashingCapacityExceeded.kind,
            title=HashingCapacityExceeded.title,
            detail=HashingCapacityExceeded.default_detail,
            instance=path,
        )
        for path in routes
    }
    # Requests of each route between the edge and their answer (or until they wait for
    # something else, see waiting_for_something_else). The pool admits a hash only once the
    # request has been read, checked and looked up; judged by the pool alone, every
    # request that arrived in the moment a slot freed passed the edge, and all but one
    # were then shed inside at full cost. Counting them here closes that gap: no more are
    # let in than the pool and its queue can take.
    in_flight = dict.fromkeys(routes, 0)

    async def shedding(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path not in routes or scope.get("method") != "POST":
            await app(scope, receive, send)
            return
        if in_flight[path] < hasher.capacity and not hasher.full:
            counted = _Counted(in_flight, path)
            token = _this_request.set(counted)
            try:
                await app(scope, receive, send)
            finally:
                counted.release()
                _this_request.reset(token)
            return
        try:
            hasher.refuse(routes[path])  # counted as the use case's own shed would be
        except HashingCapacityExceeded as exc:
            scope["path_template"] = path  # the route's own series in the metrics and the log
            if on_shed is not None:
                on_shed(path)
            retry_after = str(exc.retry_after_seconds).encode()
            if delay_seconds:
                await asyncio.sleep(delay_seconds)
            await send_problem(send, 503, bodies[path], (b"retry-after", retry_after))

    return shedding
