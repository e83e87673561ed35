from tests.integration.helpers import ME, Client, assert_problem, bearer, login, register


async def test_register_login_me(client: Client) -> None:
    created = await register(client, "smoke_user")
    assert created.status_code == 201, created.text
    tokens = (await login(client, "smoke_user")).json()
    me = await client.get(ME, headers=bearer(tokens))
    assert me.json()["username"] == "smoke_user"
    assert_problem(await client.get(ME), 401)
