"""NakamaClient.set_display_name: the name a partner sees (match notifications, the web
client's match view), on the real Nakama."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from mosaic.errors import ExternalServiceError
from mosaic.nakama_client import NakamaClient, Session
from mosaic.settings import Settings
from stack.base import Service

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def nakama(settings: Settings, nakama_stack: Service) -> Iterator[NakamaClient]:
    client = NakamaClient(settings.nakama)
    yield client
    client.close()


def test_display_name_is_what_other_users_see(nakama: NakamaClient) -> None:
    me, other = nakama.login(str(uuid.uuid4())), nakama.login(str(uuid.uuid4()))
    nakama.set_display_name(me, "outdoors-007")
    resp = nakama._http.get("/v2/user", params={"ids": me.user_id},
                            headers={"Authorization": f"Bearer {other.token}"})
    assert resp.status_code == 200, resp.text
    assert [u["display_name"] for u in resp.json()["users"]] == ["outdoors-007"]


def test_a_refused_update_is_an_error(nakama: NakamaClient) -> None:
    me = nakama.login(str(uuid.uuid4()))
    with pytest.raises(ExternalServiceError, match="account update answered 401"):
        nakama.set_display_name(Session(me.custom_id, me.user_id, "not-a-token"), "x")
