"""A multi-user endpoint speaking the channel protocol over a real WebSocket, in a
thread: it accepts every ``start_endpoint`` and connects the user endpoint with the
credential the service sent, reporting what a real user endpoint reports in its status
frames (built by the agent's own ``run_summary`` from a real endpoint config).

The real MEP needs root and Unix accounts (tests/multi_user); the console only needs
what the service hears, which is what this sends.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import yaml
from websockets.sync.client import ClientConnection, connect

from outpost.common import messages as m
from outpost.endpoint.config import EndpointConfig
from outpost.endpoint.summary import run_summary

SLURM_UEP = """\
engine:
  type: HighThroughputEngine
  provider:
    type: SlurmProvider
    account: {account}
    partition: {partition}
    nodes_per_block: 1
"""


def status_frame(config: EndpointConfig | None, local_user: str, started: float) -> bytes:
    frame: dict[str, Any] = {
        "type": m.STATUS,
        "window": 16,
        "heartbeat_threshold": 30,
        "hostname": "login1.cluster.test",
        "local_user": local_user,
        "total_workers": 4,
        "idle_workers": 3,
    }
    if config is not None:
        frame.update(run_summary(config, started))
    return m.encode(frame)


class FakeMEP:
    def __init__(self, channel_url: str, secret: str, local_user: str = "bob") -> None:
        self.channel_url, self.secret, self.local_user = channel_url, secret, local_user
        self.stop = threading.Event()
        self.started: list[str] = []
        self.threads: list[threading.Thread] = []

    def _open(self, url: str, secret: str) -> ClientConnection:
        return connect(url, additional_headers={"Authorization": f"Bearer {secret}"})

    def __enter__(self) -> FakeMEP:
        self.welcomed = threading.Event()
        self._spawn(self._mep_loop)
        assert self.welcomed.wait(30), "the service did not welcome the MEP"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)

    def _spawn(self, target: Any, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _mep_loop(self) -> None:
        last = 0.0
        with self._open(self.channel_url, self.secret) as ws:
            ws.send(status_frame(None, "root", time.time()))
            assert m.decode(ws.recv(timeout=20))["type"] == m.WELCOME  # type: ignore[arg-type]
            self.welcomed.set()
            while not self.stop.is_set():
                if time.time() - last > 1:
                    ws.send(status_frame(None, "root", time.time()))
                    last = time.time()
                try:
                    frame = m.decode(ws.recv(timeout=0.2))  # type: ignore[arg-type]
                except TimeoutError:
                    continue
                if frame["type"] == m.COMMAND and frame["command"] == "start_endpoint":
                    uep = frame["endpoint_id"]
                    ws.send(
                        m.encode(
                            {
                                "type": m.COMMAND_RESULT,
                                "command_id": frame["command_id"],
                                "endpoint_id": uep,
                                "ok": True,
                                "stage": "accepted",
                            }
                        )
                    )
                    cfg = frame["user_config"]
                    config = EndpointConfig.model_validate(yaml.safe_load(SLURM_UEP.format(**cfg)))
                    creds = frame["credentials"]
                    self.started.append(uep)
                    self._spawn(
                        self._uep_loop, creds["channel_url"], creds["channel_secret"], config
                    )

    def _uep_loop(self, url: str, secret: str, config: EndpointConfig) -> None:
        started = time.time()
        with self._open(url, secret) as ws:
            ws.send(status_frame(config, self.local_user, started))
            assert m.decode(ws.recv(timeout=20))["type"] == m.WELCOME  # type: ignore[arg-type]
            last = time.time()
            finished_one = False
            while not self.stop.is_set():
                if time.time() - last > 1:
                    ws.send(status_frame(config, self.local_user, started))
                    last = time.time()
                try:
                    frame = m.decode(ws.recv(timeout=0.2))  # type: ignore[arg-type]
                except TimeoutError:
                    continue
                if frame["type"] == m.TASK:
                    ids = [t["task_id"] for t in frame["tasks"]]
                    ws.send(m.encode({"type": m.ACK, "task_ids": ids}))
                    if not finished_one:  # the first task finishes; the others keep running
                        finished_one = True
                        result = {"task_id": ids[0], "status": "success", "result": "11\n1"}
                        ws.send(m.encode({"type": m.RESULT, "results": [result]}))
