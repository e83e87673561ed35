"""The user collection over real HTTP: pagination (defaults, bounds, stable pages) and the
role, is_active and q filters, alone and combined."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.helpers import USERS, Client, assert_problem, make_user, unique_name
from tests.integration.user_admin import (
    Account,
    assert_page,
    db_set_inactive,
    error_fields,
    ids,
    list_users,
    new_user,
    new_users,
    patch_user,
    set_role,
)


async def test_list_defaults_to_20_items_and_total_counts_every_live_user(
    client: Client, db_engine: AsyncEngine
) -> None:
    admin = await make_user(client, db_engine, role="admin")
    await new_users(client, 25)

    page = assert_page(await list_users(client, admin["headers"]))

    assert page["limit"] == 20
    assert page["offset"] == 0
    assert len(page["items"]) == 20
    assert page["total"] == 26  # the 25 users and the admin


async def test_pages_do_not_overlap_and_cover_everyone_in_a_stable_order(
    client: Client, db_engine: AsyncEngine
) -> None:
    admin = await make_user(client, db_engine, role="admin")
    created = await new_users(client, 25)
    everyone = {admin["id"]} | {user["id"] for user in created}

    seen: list[str] = []
    for offset in range(0, 28, 7):
        page = assert_page(await list_users(client, admin["headers"], limit=7, offset=offset))
        assert (page["limit"], page["offset"], page["total"]) == (7, offset, 26)
        assert len(page["items"]) == min(7, 26 - offset)
        seen += ids(page)

    assert len(seen) == len(set(seen)) == 26
    assert set(seen) == everyone
    in_one_page = ids(assert_page(await list_users(client, admin["headers"], limit=100)))
    assert seen == in_one_page
    assert ids(assert_page(await list_users(client, admin["headers"], limit=100))) == in_one_page


async def test_offset_past_the_end_gives_empty_items_and_the_full_total(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    await new_users(client, 3)

    page = assert_page(await list_users(client, admin["headers"], offset=50))

    assert page["items"] == []
    assert page["total"] == 4


INVALID_QUERIES = [
    ("limit", "0"),
    ("limit", "101"),
    ("limit", "-5"),
    ("limit", "ten"),
    ("offset", "-1"),
    ("role", "superuser"),
    ("is_active", "maybe"),
]


@pytest.mark.parametrize(("parameter", "value"), INVALID_QUERIES, ids=[f"{p}={v}" for p, v in INVALID_QUERIES])
async def test_invalid_query_parameter_answers_422_naming_it(
    client: Client, db_engine: AsyncEngine, parameter: str, value: str
) -> None:
    admin = await make_user(client, db_engine, role="admin")

    response = await client.get(USERS, headers=admin["headers"], params={parameter: value})

    body = assert_problem(response, 422)
    assert parameter in error_fields(body)


@pytest.mark.parametrize("limit", [1, 100])
async def test_limit_bounds_are_inclusive(client: Client, db_engine: AsyncEngine, limit: int) -> None:
    admin = await make_user(client, db_engine, role="admin")
    await new_users(client, 2)

    page = assert_page(await list_users(client, admin["headers"], limit=limit))

    assert page["limit"] == limit
    assert len(page["items"]) == min(limit, 3)
    assert page["total"] == 3


async def test_filter_by_role(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    users = await new_users(client, 5)
    moderators = users[1:4]
    for moderator in moderators:
        await set_role(db_engine, moderator["id"], "moderator")

    page = assert_page(await list_users(client, admin["headers"], role="moderator", limit=2))

    assert page["total"] == 3
    assert len(page["items"]) == 2
    everyone = assert_page(await list_users(client, admin["headers"], role="moderator"))
    assert set(ids(everyone)) == {m["id"] for m in moderators}
    assert all(item["role"] == "moderator" for item in everyone["items"])


async def test_filter_by_is_active(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    users = await new_users(client, 4)
    for user in users[:2]:
        assert (await patch_user(client, admin["headers"], user["id"], {"is_active": False})).status_code == 200

    inactive = assert_page(await list_users(client, admin["headers"], is_active="false"))
    active = assert_page(await list_users(client, admin["headers"], is_active="true"))

    assert inactive["total"] == 2
    assert set(ids(inactive)) == {u["id"] for u in users[:2]}
    assert all(item["is_active"] is False for item in inactive["items"])
    assert active["total"] == 3
    assert set(ids(active)) == {admin["id"]} | {u["id"] for u in users[2:]}


async def test_q_matches_username_substring_case_insensitively(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    wanted = [await new_user(client, f"{unique_name('Zebra')}x"), await new_user(client, unique_name("azebra"))]
    await new_users(client, 3)

    page = assert_page(await list_users(client, admin["headers"], q="ZEBRA"))

    assert page["total"] == 2
    assert set(ids(page)) == {u["id"] for u in wanted}


async def test_q_matches_email_substring(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    by_email = await new_user(client, unique_name("plain"), email=f"Kiwi.{unique_name('x')}@example.com")
    await new_users(client, 3)

    page = assert_page(await list_users(client, admin["headers"], q="kIWI."))

    assert page["total"] == 1
    assert ids(page) == [by_email["id"]]


async def test_q_does_not_match_full_name(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    await new_user(client, full_name="Quokka Jones")

    page = assert_page(await list_users(client, admin["headers"], q="quokka"))

    assert page["total"] == 0


@pytest.mark.parametrize("wildcard", ["%", "_", "%%", "a%b", "__"])
async def test_q_with_like_wildcards_is_literal_and_matches_nothing_here(
    client: Client, db_engine: AsyncEngine, wildcard: str
) -> None:
    admin = await make_user(client, db_engine, role="admin")
    await new_users(client, 3)

    page = assert_page(await list_users(client, admin["headers"], q=wildcard))

    assert page["total"] == 0
    assert page["items"] == []


async def test_q_underscore_matches_only_a_literal_underscore(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    stem = unique_name("qq")
    with_underscore = await new_user(client, f"{stem}a_b")
    await new_user(client, f"{stem}axb")  # would match if "_" were a wildcard

    page = assert_page(await list_users(client, admin["headers"], q="a_b"))

    assert ids(page) == [with_underscore["id"]]
    assert page["total"] == 1


async def test_combined_filters_and_total_reflects_filter_not_page(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    stem = unique_name("combo")
    matching: list[Account] = []
    for index in range(3):
        user = await new_user(client, f"{stem}m{index}")
        await set_role(db_engine, user["id"], "moderator")
        assert (await patch_user(client, admin["headers"], user["id"], {"is_active": False})).status_code == 200
        matching.append(user)
    active_moderator = await new_user(client, f"{stem}active")
    await set_role(db_engine, active_moderator["id"], "moderator")
    inactive_plain = await new_user(client, f"{stem}plain")
    assert (await patch_user(client, admin["headers"], inactive_plain["id"], {"is_active": False})).status_code == 200
    other_inactive_moderator = await new_user(client, unique_name("other"))
    await set_role(db_engine, other_inactive_moderator["id"], "moderator")
    await db_set_inactive(db_engine, other_inactive_moderator["id"])

    filters = {"role": "moderator", "is_active": "false", "q": stem.upper()}
    first = assert_page(await list_users(client, admin["headers"], limit=2, **filters))
    second = assert_page(await list_users(client, admin["headers"], limit=2, offset=2, **filters))

    assert first["total"] == second["total"] == 3
    assert len(first["items"]) == 2
    assert len(second["items"]) == 1
    assert set(ids(first) + ids(second)) == {u["id"] for u in matching}


async def test_moderator_sees_the_same_list_as_admin(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    moderator = await make_user(client, db_engine, role="moderator")
    await new_users(client, 3)

    as_admin = assert_page(await list_users(client, admin["headers"]))
    as_moderator = assert_page(await list_users(client, moderator["headers"]))

    assert as_moderator == as_admin
    assert as_admin["total"] == 5
