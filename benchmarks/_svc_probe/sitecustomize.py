"""Timing probes inside the service, for ``service_timeline.py`` only.

Active only when ``OUTPOST_SERVICE_PROBE`` names a file and this process is the service:
wraps a few methods on the hot path with ``time.monotonic_ns`` marks and writes them to
that file (one ``name ns`` line each) when the process exits.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

_OUT = os.environ.get("OUTPOST_SERVICE_PROBE")
_marks: list[tuple[str, int]] = []
_now = time.monotonic_ns


def _mark(name: str) -> None:
    _marks.append((name, _now()))


def _dump() -> None:
    assert _OUT
    with open(_OUT, "w") as f:
        f.writelines(f"{n} {t}\n" for n, t in _marks)


def _side(proto: Any) -> str:
    path = getattr(proto, "scope", {}).get("path", "")
    return "ep" if path.endswith("/channel") else "sdk"


def _install() -> None:
    from outpost.service import results_stream, ws_protocol
    from outpost.service.broker import embedded
    from outpost.service.channel import EndpointSession
    from outpost.service.runtime import fanout, ledger
    from outpost.service.store import writer

    proto = ws_protocol.LargeFrameWebSocketProtocol
    data_received, send = proto.data_received, proto.send

    def data_received_p(self: Any, data: bytes) -> None:
        _mark(f"{_side(self)}.in")
        data_received(self, data)

    async def send_p(self: Any, message: Any) -> None:
        side = _side(self)
        await send(self, message)
        if message.get("type") == "websocket.send":
            _mark(f"{side}.out")

    proto.data_received, proto.send = data_received_p, send_p
    send_now = getattr(proto, "send_now", None)  # older checkouts have none
    if send_now is not None:

        def send_now_p(self: Any, data: bytes) -> bool:
            sent = send_now(self, data)
            if sent:
                _mark(f"{_side(self)}.out")
            return bool(sent)

        proto.send_now = send_now_p

    rs = results_stream.ResultStream
    submit, push = rs._submit, rs._push

    async def submit_p(self: Any, *a: Any) -> None:
        _mark("sdk.frame")
        await submit(self, *a)
        _mark("sdk.answered")

    def push_p(self: Any, docs: Any) -> None:
        _mark("push")
        push(self, docs)

    rs._submit, rs._push = submit_p, push_p
    accept = results_stream.accept

    async def accept_p(*a: Any) -> Any:
        _mark("accept")
        r = await accept(*a)
        _mark("accepted")
        return r

    results_stream.accept = accept_p

    run = writer.Writer.run

    async def run_p(self: Any, *a: Any, **k: Any) -> Any:
        _mark("db.write")
        c0 = time.thread_time_ns()
        r = await run(self, *a, **k)
        _marks.append(("db.cpu", time.thread_time_ns() - c0))
        _mark("db.written")
        return r

    writer.Writer.run = run_p

    publish = embedded.EmbeddedBroker.publish

    async def publish_p(self: Any, *a: Any) -> None:
        await publish(self, *a)
        _mark("published")

    embedded.EmbeddedBroker.publish = publish_p

    get = embedded._Consumer.get

    async def get_p(self: Any, *a: Any) -> Any:
        r = await get(self, *a)
        _mark("consumer.got")
        return r

    embedded._Consumer.get = get_p

    handle = EndpointSession._handle

    async def handle_p(self: Any, frame: Any) -> None:
        _mark(f"ep.frame.{type(frame).__name__}")
        await handle(self, frame)

    EndpointSession._handle = handle_p

    finish = ledger.ChannelLedger.finish

    async def finish_p(self: Any, *a: Any) -> Any:
        _mark("finish")
        return await finish(self, *a)

    ledger.ChannelLedger.finish = finish_p

    fpublish = fanout.EmbeddedFanout.publish

    async def fpublish_p(self: Any, *a: Any) -> None:
        _mark("fanout")
        await fpublish(self, *a)

    fanout.EmbeddedFanout.publish = fpublish_p


if _OUT and "service" in sys.argv[1:3]:
    import importlib.abc
    import importlib.machinery

    class _Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
            if name != "outpost.service.serve":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            assert spec is not None and spec.loader is not None
            exec_module = spec.loader.exec_module

            def exec_p(module: Any) -> None:
                exec_module(module)
                run = module._run

                def run_p(*a: Any) -> None:
                    import signal

                    _install()
                    # uvicorn restores this handler when it stops and raises SIGTERM again.
                    signal.signal(signal.SIGTERM, lambda *_: (_dump(), os._exit(0)))
                    run(*a)

                module._run = run_p

            spec.loader.exec_module = exec_p  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _Hook())
