"""GET/PATCH /users/me and PUT /users/me/password."""

from __future__ import annotations

from typing import Any

from tests.integration.helpers import AUTH, ME, PASSWORD, Client, assert_problem, bearer, login, register

NEW_PASSWORD = "amber-falcon-93-lantern"


async def signed_in(client: Client, username: str, **fields: Any) -> dict[str, Any]:
    assert (await register(client, username, **fields)).status_code == 201
    tokens: dict[str, Any] = (await login(client, username)).json()
    return tokens


async def test_me_returns_the_callers_account(client: Client) -> None:
    tokens = await signed_in(client, "myself", full_name="My Self")
    body = (await client.get(ME, headers=bearer(tokens))).json()
    assert (body["username"], body["full_name"], body["role"]) == ("myself", "My Self", "user")
    assert "password_hash" not in body


async def test_me_refuses_missing_malformed_and_foreign_tokens(client: Client) -> None:
    for headers in [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ]:
        problem = assert_problem(await client.get(ME, headers=headers), 401)
        assert problem["type"].endswith("/not-authenticated")


async def test_full_name_can_be_set_and_cleared_without_touching_the_email(client: Client) -> None:
    tokens = await signed_in(client, "namer")
    named = (await client.patch(ME, headers=bearer(tokens), json={"full_name": "Nora Namer"})).json()
    assert (named["full_name"], named["email"]) == ("Nora Namer", "namer@example.com")
    cleared = (await client.patch(ME, headers=bearer(tokens), json={"full_name": None})).json()
    assert cleared["full_name"] is None
    assert (await client.patch(ME, headers=bearer(tokens), json={})).json()["full_name"] is None


async def test_the_email_is_not_a_profile_field_any_more(client: Client) -> None:
    """An email change goes through POST /me/email and a link to the new address: PATCH
    answered 409 for a taken address and 200 for a free one, an oracle with no limit."""
    await register(client, "first_owner", email="shared@example.com")
    tokens = await signed_in(client, "second_owner")
    for address in ("SHARED@example.com", "free.address@example.com"):
        problem = assert_problem(await client.patch(ME, headers=bearer(tokens), json={"email": address}), 422)
        assert [e["field"] for e in problem["errors"]] == ["email"]
    assert (await client.get(ME, headers=bearer(tokens))).json()["email"] == "second_owner@example.com"


async def test_invalid_profile_changes_are_422_and_change_nothing(client: Client) -> None:
    tokens = await signed_in(client, "careful")
    for body, field in [
        ({"email": "nope"}, "email"),
        ({"full_name": "x" * 201}, "full_name"),
        ({"role": "admin"}, "role"),
    ]:
        problem = assert_problem(await client.patch(ME, headers=bearer(tokens), json=body), 422)
        assert field in {e["field"] for e in problem["errors"]}
    me = (await client.get(ME, headers=bearer(tokens))).json()
    assert (me["email"], me["full_name"], me["role"]) == ("careful@example.com", None, "user")


async def test_password_change_keeps_this_session_and_ends_the_others(client: Client) -> None:
    here = await signed_in(client, "rotating_pw")
    elsewhere = (await login(client, "rotating_pw")).json()
    body = {"current_password": PASSWORD, "new_password": NEW_PASSWORD}
    response = await client.put(f"{ME}/password", headers=bearer(here), json=body)
    assert response.status_code == 204
    # This session lives on...
    assert (await client.get(ME, headers=bearer(here))).status_code == 200
    assert (await client.post(f"{AUTH}/refresh", json={"refresh_token": here["refresh_token"]})).status_code == 200
    # ...every other one is over.
    assert_problem(await client.get(ME, headers=bearer(elsewhere)), 401)
    assert_problem(await client.post(f"{AUTH}/refresh", json={"refresh_token": elsewhere["refresh_token"]}), 401)
    assert_problem(await login(client, "rotating_pw"), 401)
    assert (await login(client, "rotating_pw", NEW_PASSWORD)).status_code == 200


async def test_wrong_current_password_is_400_not_401(client: Client) -> None:
    tokens = await signed_in(client, "forgetful")
    body = {"current_password": "not-my-password", "new_password": NEW_PASSWORD}
    problem = assert_problem(await client.put(f"{ME}/password", headers=bearer(tokens), json=body), 400)
    assert problem["type"].endswith("/wrong-current-password")
    assert (await login(client, "forgetful")).status_code == 200


async def test_weak_new_password_is_422_naming_new_password(client: Client) -> None:
    tokens = await signed_in(client, "weakling")
    for weak in ["short", "password1", "my-weakling-pw"]:
        body = {"current_password": PASSWORD, "new_password": weak}
        problem = assert_problem(await client.put(f"{ME}/password", headers=bearer(tokens), json=body), 422)
        assert [e["field"] for e in problem["errors"]] == ["new_password"]
    assert (await login(client, "weakling")).status_code == 200
