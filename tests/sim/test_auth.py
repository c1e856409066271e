"""OAuth client credentials and bearer-token checks."""

from __future__ import annotations

from tests.sim.conftest import Sim, StartSim, eventually


async def test_token_issued_for_valid_client_credentials(sim: Sim) -> None:
    """HTTP Basic + grant_type=client_credentials returns a bearer token with expires_in."""
    r = await sim.http.post(
        "/oauth/token", auth=("sim-client", "sim-secret"), data={"grant_type": "client_credentials"}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 86_400
    assert body["access_token"]


async def test_bad_credentials_are_401(sim: Sim) -> None:
    """A wrong secret, an unknown client or no Basic header is 401."""
    for auth in (("sim-client", "nope"), ("someone", "sim-secret")):
        r = await sim.http.post("/oauth/token", auth=auth, data={"grant_type": "client_credentials"})
        assert r.status_code == 401
    r = await sim.http.post("/oauth/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 401


async def test_wrong_grant_type_is_400(sim: Sim) -> None:
    """Only the client_credentials grant is supported."""
    r = await sim.http.post(
        "/oauth/token", auth=("sim-client", "sim-secret"), data={"grant_type": "password"}
    )
    assert r.status_code == 400


async def test_api_without_valid_token_is_401_with_genesys_body(sim: Sim) -> None:
    """/api/v2 without a token, or with an unknown one, is 401 with message/code/status."""
    r = await sim.http.get("/api/v2/users")
    assert r.status_code == 401
    body = r.json()
    assert body["status"] == 401 and body["code"] == "bad.credentials" and body["message"]
    r = await sim.api("GET", "/api/v2/users", token="forged")
    assert r.status_code == 401


async def test_several_clients_can_be_configured(start_sim: StartSim) -> None:
    """Every configured id:secret pair gets tokens; the default one is then unknown."""
    sim = await start_sim(clients={"a": "1", "b": "2"})
    assert await sim.token("a", "1")
    assert await sim.token("b", "2")
    r = await sim.http.post(
        "/oauth/token", auth=("sim-client", "sim-secret"), data={"grant_type": "client_credentials"}
    )
    assert r.status_code == 401


async def test_expired_token_is_401(start_sim: StartSim) -> None:
    """A token past its expires_in is refused."""
    sim = await start_sim(token_ttl_s=1)
    token = await sim.token()
    assert (await sim.api("GET", "/api/v2/users", token)).status_code == 200

    async def refused() -> bool:
        return (await sim.api("GET", "/api/v2/users", token)).status_code == 401

    await eventually(refused, 3)


async def test_revoke_tokens_fault_invalidates_live_tokens(sim: Sim) -> None:
    """After /sim/faults/revoke-tokens every earlier token is 401; a new one works."""
    token = await sim.token()
    r = await sim.admin("POST", "/sim/faults/revoke-tokens", {})
    assert r.json()["revoked"] >= 1
    assert (await sim.api("GET", "/api/v2/users", token)).status_code == 401
    assert (await sim.api("GET", "/api/v2/users", await sim.token())).status_code == 200
