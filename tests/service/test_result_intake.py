"""Where an endpoint channel's results are stored: by the receive loop itself when
nothing is queued before them, the store is idle and storing waits on nothing; else by
the store loop, in the order they came. Stored results are acknowledged, and a failed
store closes the channel (the endpoint sends them again)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from outpost.common import messages as m
from outpost.service import result_intake
from outpost.service.result_intake import ResultIntake


class FakeLedger:
    """The channel's ledger: ``finish`` records what it stored (or fails when told)."""

    def __init__(self) -> None:
        self.stored: list[list[str]] = []
        self.fail = False

    async def finish(self, records: list[Any]) -> list[Any]:
        if self.fail:
            raise RuntimeError("database gone")
        self.stored.append([r.task_id for r in records])
        return records


class Channel:
    def __init__(self) -> None:
        self.sent: list[m.Frame] = []
        self.closed: list[str] = []

    async def send(self, frame: m.Frame) -> None:
        self.sent.append(frame)

    async def close(self, reason: str) -> None:
        self.closed.append(reason)


def _intake(inline: bool = True, in_place: bool = True) -> tuple[ResultIntake, FakeLedger, Channel]:
    ledger, ch = FakeLedger(), Channel()
    db: Any = SimpleNamespace(writes_inline=lambda size: inline)
    intake = ResultIntake("e" * 36, ledger, db, in_place, ch.send, ch.close)  # type: ignore[arg-type]
    return intake, ledger, ch


def _records(*ids: str) -> list[Any]:
    return [SimpleNamespace(task_id=t) for t in ids]


def test_results_are_stored_at_once_when_the_store_is_idle_and_writes_inline() -> None:
    async def main() -> None:
        intake, ledger, _ = _intake()
        await intake.add(_records("a", "b"))
        assert ledger.stored == [["a", "b"]]  # before add() returned: no store loop ran

    asyncio.run(main())


def test_results_wait_for_the_store_loop_when_writes_or_pushes_would_wait() -> None:
    async def main(**how: bool) -> None:
        intake, ledger, _ = _intake(**how)
        await intake.add(_records("a"))
        assert ledger.stored == []
        intake.stop()  # the store loop stores what is queued, then ends
        await intake.store_loop()
        assert ledger.stored == [["a"]]

    asyncio.run(main(inline=False))  # the writer's thread is busy
    asyncio.run(main(in_place=False))  # RabbitMQ: acks and fan-out go over the network


def test_results_queued_before_are_stored_first() -> None:
    async def main() -> None:
        intake, ledger, _ = _intake(inline=False)
        await intake.add(_records("queued"))  # the writer is busy: queued
        intake._db = SimpleNamespace(writes_inline=lambda size: True)  # type: ignore[assignment]
        await intake.add(_records("later"))  # not stored past the queued one
        assert ledger.stored == []
        intake.stop()
        await intake.store_loop()
        assert ledger.stored == [["queued", "later"]]

    asyncio.run(main())


def test_stored_results_are_acknowledged_together(monkeypatch: Any) -> None:
    monkeypatch.setattr(result_intake, "RESULT_ACK_DELAY", 0.01)

    async def main() -> None:
        intake, _, ch = _intake()
        acker = asyncio.create_task(intake.ack_loop())
        await intake.add(_records("a"))
        await intake.add(_records("b"))
        for _ in range(3000):  # generous: a busy machine
            if ch.sent:
                break
            await asyncio.sleep(0.01)
        acker.cancel()
        assert ch.sent == [m.ResultAckFrame(task_ids=["a", "b"])]

    asyncio.run(main())


def test_a_failed_store_closes_the_channel_and_acknowledges_nothing() -> None:
    async def main() -> None:
        intake, ledger, ch = _intake()
        ledger.fail = True
        await intake.add(_records("a"))
        assert ch.closed == ["internal error; please reconnect"]
        assert intake._to_ack == [] and intake._queued == []

    asyncio.run(main())
