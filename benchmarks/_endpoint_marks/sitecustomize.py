"""Loaded by every Python process started with this directory on ``PYTHONPATH`` (see
``endpoint_hops.py``); does something only in the process that imports the endpoint
agent, and only when ``OUTPOST_HOPS_OUT`` names a file.

It wraps a few of the agent's, channel's and engine's methods to note, per task, when
(``time.monotonic``, the clock every process shares) the task frame arrived on the
endpoint's socket, was decoded, reached a worker's pipe; when the worker's result was
readable on the loop, spooled, taken by the sender and written to the socket. One line
per task is written to the file after its result frame went out.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import inspect
import os
import sys
import time
from typing import Any

_OUT = os.environ.get("OUTPOST_HOPS_OUT")
_TARGET = "outpost.endpoint.agent"


def _patch(agent_mod: Any) -> None:
    from outpost.endpoint import channel as ch
    from outpost.endpoint.engines import processes as pp

    out = open(_OUT, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    now = time.monotonic
    state: dict[str, Any] = {"rx": 0.0, "readable": 0.0}
    marks: dict[str, list[float]] = {}

    conn_cls = ch.LargeFrameConnection  # the class itself, wherever it is defined
    conn_dr = conn_cls.data_received

    def data_received(self: Any, data: bytes) -> None:
        state["rx"] = now()
        conn_dr(self, data)

    conn_cls.data_received = data_received

    on_tasks = agent_mod.Agent._on_tasks

    def _before(tasks: Any) -> list[Any]:
        t1 = now()
        ids = [t.get("task_id") for t in tasks if isinstance(t, dict)]
        for tid in ids:
            marks[tid] = [state["rx"], t1]
        return ids

    def _after(ids: list[Any]) -> None:
        t2 = now()
        for tid in ids:
            if tid in marks and len(marks[tid]) == 2:
                marks[tid].append(t2)

    if inspect.iscoroutinefunction(on_tasks):  # before the agent took frames at once

        async def _on_tasks(self: Any, channel: Any, tasks: Any) -> None:
            ids = _before(tasks)
            await on_tasks(self, channel, tasks)
            _after(ids)

    else:

        def _on_tasks(self: Any, channel: Any, tasks: Any) -> None:  # type: ignore[misc]
            ids = _before(tasks)
            on_tasks(self, channel, tasks)
            _after(ids)

    agent_mod.Agent._on_tasks = _on_tasks

    readable = pp.ProcessPoolEngine._readable

    def _readable(self: Any, w: Any) -> None:
        state["readable"] = now()
        readable(self, w)

    pp.ProcessPoolEngine._readable = _readable

    from_engine = agent_mod.Agent._from_engine

    def _from_engine(self: Any, results: list[Any]) -> None:
        t = state["readable"]
        spool_add = self.spool.add

        def add(rs: list[Any]) -> None:
            state["add0"] = now()
            spool_add(rs)
            t2 = now()
            for r in rs:
                mk = marks.get(r.task_id)
                if mk is not None and len(mk) == 3:
                    mk += [t, t2]

        self.spool.add = add
        try:
            from_engine(self, results)
        finally:
            del self.spool.add

    agent_mod.Agent._from_engine = _from_engine

    send = ch.Channel.send

    async def chan_send(self: Any, frame: dict[str, Any]) -> None:
        if frame.get("type") != "result":
            await send(self, frame)
            return
        t0 = now()
        await send(self, frame)
        _note(frame, t0, now())

    ch.Channel.send = chan_send

    def _note(frame: dict[str, Any], t0: float, t1: float) -> None:
        for r in frame["results"]:
            mk = marks.pop(r["task_id"], None)
            if mk is not None and len(mk) == 5:
                vals = (*mk, t0, t1, state.get("add0", 0.0))
                out.write(" ".join([r["task_id"], *(f"{x:.7f}" for x in vals)]) + "\n")

    send_now = getattr(ch.Channel, "send_now", None)
    if send_now is not None:

        def chan_send_now(self: Any, frame: dict[str, Any]) -> bool:
            t0 = now()
            sent = send_now(self, frame)
            if sent and frame.get("type") == "result":
                _note(frame, t0, now())
            return sent

        ch.Channel.send_now = chan_send_now


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != _TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        orig = loader.exec_module

        def exec_module(module: Any) -> None:
            orig(module)
            _patch(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if _OUT:
    sys.meta_path.insert(0, _Finder())
