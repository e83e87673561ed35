"""Probes for Kubernetes: live (process), ready (database and not draining), startup."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.web.problems import problem_response

READY_DB_TIMEOUT_SECONDS = 2.0


class Lifecycle:
    """Where start-up and shutdown stand. A plain class, not a dataclass: it is injected
    into the probes, and Litestar would validate (and copy) a dataclass field by field."""

    def __init__(self) -> None:
        self.started = False
        self.draining = False
        self.startup_problem: str | None = "starting"
        # The previous readiness answer of this process, and who hears when the next one
        # differs (the transitions counter: a probe that flips every period looks steady
        # to any sampling of the answers, never to a count of the flips).
        self.last_ready: bool | None = None
        self.readiness_observers: list[Callable[[bool], None]] = []

    def answered_ready(self, ready: bool) -> None:
        """Record one readiness answer; tell the observers when it differs from the last."""
        changed = self.last_ready is not None and ready != self.last_ready
        self.last_ready = ready
        if changed:
            for observer in self.readiness_observers:
                observer(ready)


async def database_problem(engine: AsyncEngine) -> str | None:
    try:
        async with asyncio.timeout(READY_DB_TIMEOUT_SECONDS):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except TimeoutError:
        return "timeout"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready", and says which
        return type(exc).__name__
    return None


# A probe that fails answers 503 with the same JSON shape and the reason in "problem".
NOT_YET = {
    503: ResponseSpec(
        data_container=dict[str, Any],
        description="Not ready (or not started): `problem` says why.",
        generate_examples=False,
    )
}


class HealthController(Controller):
    path = "/health"
    tags = ["operations"]
    opt = {"exclude_from_auth": True}
    include_in_schema = True

    @get("/live", sync_to_thread=False, summary="Liveness: the process can serve")
    def live(self) -> dict[str, str]:
        # Never touches the database or the hashing pool: a saturated login path or a
        # database outage must not get healthy pods killed.
        return {"status": "ok"}

    @get("/ready", summary="Readiness: database reachable and not draining", responses=NOT_YET)
    async def ready(
        self, lifecycle: NamedDependency[Lifecycle], db_engine: NamedDependency[AsyncEngine]
    ) -> Response[dict[str, Any]]:
        checks: dict[str, str] = {}
        checks["startup"] = "ok" if lifecycle.started else (lifecycle.startup_problem or "starting")
        checks["draining"] = "fail: shutting down" if lifecycle.draining else "ok"
        problem = await database_problem(db_engine)
        checks["database"] = "ok" if problem is None else f"fail: {problem}"
        ready = all(value == "ok" for value in checks.values())
        lifecycle.answered_ready(ready)
        if ready:
            return Response({"status": "ok", "checks": checks})
        failed = ", ".join(name for name, value in checks.items() if value != "ok")
        response = problem_response(
            status=503,
            kind="not-ready",
            title="Not ready",
            detail=f"Failing checks: {failed}",
            instance="/health/ready",
        )
        response.content["checks"] = checks
        return response

    @get(
        "/startup",
        sync_to_thread=False,
        summary="Start-up finished: schema current, keys loaded, pools open",
        responses=NOT_YET,
    )
    def startup(self, lifecycle: NamedDependency[Lifecycle]) -> Response[dict[str, Any]]:
        if lifecycle.started:
            return Response({"status": "ok"})
        return problem_response(
            status=503,
            kind="starting",
            title="Starting",
            detail=f"Start-up not finished: {lifecycle.startup_problem}",
            instance="/health/startup",
        )
