"""The heartbeat deadline: silence past the threshold calls back once; anything heard
pushes the deadline out; a threshold changed meanwhile is used at the next check."""

from __future__ import annotations

import asyncio

import pytest

from outpost.service.watchdog import Watchdog

pytestmark = pytest.mark.anyio


async def test_silence_calls_back_once_and_hearing_keeps_it_quiet() -> None:
    calls: list[float] = []
    threshold = 0.2

    async def silent(seconds: float) -> None:
        calls.append(seconds)

    dog = Watchdog(lambda: threshold, silent)
    dog.start()
    for _ in range(8):  # heard every 0.05 s for 0.4 s: twice the threshold
        await asyncio.sleep(0.05)
        dog.heard()
    assert calls == []
    threshold = 0.3  # read at the next check
    deadline = asyncio.get_running_loop().time() + 30
    while not calls and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    assert calls == [0.3]
    await asyncio.sleep(0.5)
    assert calls == [0.3]  # once
    dog.stop()


async def test_stopped_it_never_calls_back() -> None:
    calls: list[float] = []

    async def silent(seconds: float) -> None:
        calls.append(seconds)

    dog = Watchdog(lambda: 0.05, silent)
    dog.start()
    dog.stop()
    await asyncio.sleep(0.2)
    assert calls == []
