"""The database connection pool, measured: how long each checkout waited for a connection,
and which ones gave up (OpenTelemetry's ``db.client.connection.wait_time`` and
``db.client.connection.timeouts``).

SQLAlchemy offers no event before a checkout starts waiting, and its own queue's waiters are
private. ``_do_get`` is the method a Pool subclass implements to hand out a connection (the
documented way to write a pool), so the measurement wraps exactly the wait, including
opening a new connection while the pool is below its size: the time a request could not
run its first statement for want of a connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import exc
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

# (seconds waited, whether the checkout gave up at the pool timeout)
CheckoutObserver = Callable[[float, bool], None]


class MeasuredQueuePool(AsyncAdaptedQueuePool):
    """asyncio's queue pool, telling its observers how long each checkout waited."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checkout_observers: list[CheckoutObserver] = []

    def recreate(self) -> MeasuredQueuePool:
        # engine.dispose() and an invalidated pool build a fresh instance of this class;
        # the observers carry over to it.
        # (QueuePool.recreate builds self.__class__, so this class.)
        fresh = cast("MeasuredQueuePool", super().recreate())
        fresh.checkout_observers = self.checkout_observers
        return fresh

    def _do_get(self) -> ConnectionPoolEntry:
        started = time.perf_counter()
        try:
            entry = super()._do_get()
        except exc.TimeoutError:
            self._report(time.perf_counter() - started, timed_out=True)
            raise
        self._report(time.perf_counter() - started, timed_out=False)
        return entry

    def _report(self, seconds: float, *, timed_out: bool) -> None:
        for observer in self.checkout_observers:
            observer(seconds, timed_out)
