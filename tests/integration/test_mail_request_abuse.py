"""The endpoints that send mail cannot be turned into an oracle or a mail cannon: the same
answer in about the same time whether or not an address has an account (or is taken),
and limits per client address and per target address."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from app.accounts.recovery import AccountRecovery, EmailChangeRequest
from app.accounts.recovery_controllers import deferred
from app.container import container_of
from app.settings import Settings
from testkit.smtp_server import SmtpServer
from tests.integration.helpers import AUTH, ME, PASSWORD, assert_problem, bearer, login, register
from tests.integration.mail_flows import (
    MailedService,
    mailed_service,
    settings_with_mail,
    smtp,  # noqa: F401 - the fixture
)

LIMITED = {"enabled": True, "login": "1000/minute", "registration": "1000/minute", "password_check": "1000/hour"}


async def test_a_reset_request_takes_the_same_time_whether_or_not_the_address_has_an_account(
    settings: Settings,
    signing_key_file: Path,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    """Measured as a prober would: requests for an address with an account and one without,
    each on a quiet server (the previous request's mail delivered), each address first in
    every other round. The part that depends on the account (a token, a mail queued, a
    commit) runs after the answer: the medians differ by far less than that part costs,
    timed in the same run."""
    async with mailed_service(settings_with_mail(settings, signing_key_file, smtp)) as client:
        service = MailedService(client, smtp)
        assert (await register(client, "present")).status_code == 201
        samples: dict[str, list[float]] = {"present@example.com": [], "absent@example.com": []}
        for _ in range(3):  # warm-up: statement caches, pool connections
            for address in samples:
                await client.post(f"{AUTH}/password-reset/request", json={"email": address})
        delivered = len(await service.mails_to("present@example.com", 4))
        bodies = set()
        for round_ in range(40):
            for address in _counterbalanced(samples, round_):
                started = time.perf_counter()
                answer = await client.post(f"{AUTH}/password-reset/request", json={"email": address})
                samples[address].append(time.perf_counter() - started)
                assert answer.status_code == 202
                bodies.add(answer.content)
                if address.startswith("present"):
                    delivered += 1
                    await service.mails_to(address, delivered)
                await _quiet()
        # What the answer would carry if the account's part ran before it.
        account_part = []
        send = deferred(container_of(client.app), lambda recovery: recovery.send_password_reset("present@example.com"))
        for _ in range(20):
            started = time.perf_counter()
            await send()
            account_part.append(time.perf_counter() - started)
            delivered += 1
            await service.mails_to("present@example.com", delivered)
            await _quiet()
    assert len(bodies) == 1
    present = statistics.median(samples["present@example.com"])
    absent = statistics.median(samples["absent@example.com"])
    cost = statistics.median(account_part)
    print(  # noqa: T201 - the figures for the note, with -s
        f"reset request median: present {present * 1000:.2f} ms, absent {absent * 1000:.2f} ms,"
        f" the account's part {cost * 1000:.2f} ms"
    )
    assert abs(present - absent) < cost / 2, (present, absent, cost)


async def test_an_email_change_takes_the_same_time_whether_or_not_the_address_is_taken(
    settings: Settings,
    signing_key_file: Path,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    """As the reset request above: the part that depends on whether the new address is
    taken (a mail to its owner, or a link to it) runs after the answer. If one of the two
    ran in the answer, they would differ by its cost, timed here in the same run."""
    async with mailed_service(settings_with_mail(settings, signing_key_file, smtp)) as client:
        service = MailedService(client, smtp)
        assert (await register(client, "holder")).status_code == 201
        assert (await register(client, "asker")).status_code == 201
        tokens = (await login(client, "asker")).json()
        samples: dict[str, list[float]] = {"holder@example.com": [], "nobody.yet@example.com": []}
        notices = len(await service.mails_to("asker@example.com"))  # its verification mail
        for round_ in range(30):
            for address in _counterbalanced(samples, round_):
                started = time.perf_counter()
                answer = await client.post(
                    f"{ME}/email", headers=bearer(tokens), json={"new_email": address, "current_password": PASSWORD}
                )
                samples[address].append(time.perf_counter() - started)
                assert answer.status_code == 202, answer.text
                notices += 1  # the old address is told of every request, taken or not
                await service.mails_to("asker@example.com", notices)
                await _quiet()
        asker = UUID((await client.get(ME, headers=bearer(tokens))).json()["id"])
        deferred_part: dict[str, list[float]] = {address: [] for address in samples}
        for round_ in range(10):
            for address in _counterbalanced(samples, round_):
                send = deferred(container_of(client.app), _email_change_part(asker, address))
                started = time.perf_counter()
                await send()
                deferred_part[address].append(time.perf_counter() - started)
                notices += 1
                await service.mails_to("asker@example.com", notices)
                await _quiet()
    taken = statistics.median(samples["holder@example.com"])
    free = statistics.median(samples["nobody.yet@example.com"])
    cost = min(statistics.median(times) for times in deferred_part.values())
    print(  # noqa: T201 - the figures for the note, with -s
        f"email change median: taken {taken * 1000:.2f} ms, free {free * 1000:.2f} ms,"
        f" the address's part {cost * 1000:.2f} ms"
    )
    assert abs(taken - free) < cost / 2, (taken, free, cost)


def _email_change_part(user_id: UUID, address: str) -> Callable[[AccountRecovery], Awaitable[None]]:
    async def send(recovery: AccountRecovery) -> None:
        await recovery.send_email_change(EmailChangeRequest(user_id=user_id, new_email=address))

    return send


def _counterbalanced(samples: dict[str, list[float]], round_: int) -> list[str]:
    """Each address first in every other round, so that whatever the order does (a cache,
    a connection's state) falls on both alike."""
    order = list(samples)
    return order if round_ % 2 == 0 else order[::-1]


async def _quiet() -> None:
    import anyio

    await anyio.sleep(0.03)


async def test_mails_to_one_address_are_limited_whoever_asks(
    settings: Settings,
    signing_key_file: Path,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    limits = {**LIMITED, "mail_request": "1000/minute", "mail_per_address": "3/hour"}
    configured = settings_with_mail(settings, signing_key_file, smtp, rate_limits=limits)
    async with mailed_service(configured) as client:
        service = MailedService(client, smtp)
        assert (await register(client, "target")).status_code == 201  # its verification mail
        answers = [
            await client.post(f"{AUTH}/password-reset/request", json={"email": "TARGET@example.com"}) for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [202, 202, 202, 429]
        problem = assert_problem(answers[-1], 429)
        assert problem["type"].endswith("/mail-requests-throttled")
        assert int(answers[-1].headers["Retry-After"]) > 0
        # Unknown addresses count alike (no oracle in the limit either)...
        unknown = [
            (await client.post(f"{AUTH}/password-reset/request", json={"email": "ghost@example.com"})).status_code
            for _ in range(4)
        ]
        assert unknown == [202, 202, 202, 429]
        # ...and another address is not affected.
        other = await client.post(f"{AUTH}/password-reset/request", json={"email": "someone.else@example.com"})
        assert other.status_code == 202
        # The verification mail and three resets: the fourth reset was never queued.
        await service.mails_to("target@example.com", 4)
        await service.no_more_mail_to("target@example.com", already=4)


async def test_mail_requests_from_one_client_address_are_limited(
    settings: Settings,
    signing_key_file: Path,
    smtp: SmtpServer,  # noqa: F811
) -> None:
    limits: dict[str, Any] = {**LIMITED, "mail_request": "3/minute", "mail_per_address": "1000/hour"}
    configured = settings_with_mail(settings, signing_key_file, smtp, rate_limits=limits)
    async with mailed_service(configured) as client:
        statuses = [
            (await client.post(f"{AUTH}/password-reset/request", json={"email": f"n{i}@example.com"})).status_code
            for i in range(4)
        ]
        assert statuses == [202, 202, 202, 429]
        # The same budget covers every endpoint that sends mail.
        assert (await register(client, "limited")).status_code == 201
        tokens = (await login(client, "limited")).json()
        assert_problem(await client.post(f"{AUTH}/verify-email/request", headers=bearer(tokens)), 429)
        change = await client.post(
            f"{ME}/email", headers=bearer(tokens), json={"new_email": "x@example.com", "current_password": PASSWORD}
        )
        assert_problem(change, 429)
        # Logins and /me are not in it.
        assert (await client.get(ME, headers=bearer(tokens))).status_code == 200
