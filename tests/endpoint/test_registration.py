"""Registration (outpost/endpoint/registration.py), single- and multi-user, against a
real service process on loopback; the credentials it returns open the channel."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outpost.endpoint.channel import Channel, ChannelOwner, ChannelSettings, FatalChannelError
from outpost.endpoint.files import EndpointDir
from outpost.endpoint.registration import Registration, channel_url, register
from outpost.local import LocalService
from outpost.sdk import Client


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalService, str]]:
    s = LocalService(tmp_path_factory.mktemp("reg")).start()
    try:
        yield s, s.add_user("alice@example.org")
    finally:
        s.close()


class _Owner(ChannelOwner):
    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def on_open(self, channel: Channel) -> None:
        self.opened.set()
        channel.stop()


def _connect(reg: Registration) -> None:
    """Open the channel with the credential; returns once welcomed (or raises)."""

    async def go() -> None:
        owner = _Owner()
        ch = Channel(ChannelSettings(reg.channel_url, reg.channel_secret, 1.0, 5.0, 1), owner, "t")
        await asyncio.wait_for(ch.run(), 30)
        assert owner.opened.is_set()

    asyncio.run(go())


def test_channel_url() -> None:
    assert channel_url("https://outpost.example.org/", "e1") == (
        "wss://outpost.example.org/v3/endpoints/e1/channel"
    )
    assert (
        channel_url("http://127.0.0.1:5000", "e1") == "ws://127.0.0.1:5000/v3/endpoints/e1/channel"
    )


def test_register_then_reregister_keeps_the_id_and_rotates_the_secret(
    svc: tuple[LocalService, str], tmp_path: Path
) -> None:
    service, token = svc
    client = Client(service.url, token)
    d = EndpointDir("lab")
    d.create()
    config = d.config()
    first = register(client, d, config)
    assert d.endpoint_id() == first.endpoint_id
    assert first.channel_url == channel_url(service.url, first.endpoint_id)
    assert first.channel_secret not in repr(first)
    meta: dict[str, Any] = client.get_endpoint_metadata(first.endpoint_id)
    assert meta["name"] == "lab" and meta["multi_user"] is False
    assert meta["hostname"] and meta["endpoint_version"]
    _connect(first)

    second = register(client, d, config)
    assert second.endpoint_id == first.endpoint_id
    assert second.channel_secret != first.channel_secret
    _connect(second)
    with pytest.raises(FatalChannelError, match="HTTP 40[13]"):
        _connect(first)  # the old secret was revoked


def test_register_a_multi_user_endpoint(svc: tuple[LocalService, str]) -> None:
    from outpost.endpoint.multi_user.runner import register_multi_user

    service, token = svc
    client = Client(service.url, token)
    d = EndpointDir("mep")
    d.create_multi_user()
    config = d.config()
    from outpost.endpoint.multi_user.config import MultiUserConfig

    assert isinstance(config, MultiUserConfig)
    reg, owner = register_multi_user(client, d, config)
    meta = client.get_endpoint_metadata(reg.endpoint_id)
    assert meta["multi_user"] is True and owner == meta["owner"]
    assert "{{" in meta["user_config_template"] and isinstance(meta["user_config_schema"], dict)
    _connect(reg)
