"""``endpoint/starting.py``: what ``outpost endpoint start`` does before it registers.
A ProcessPoolEngine's workers are started while the service is waited for, unless
``endpoint_setup`` must run before them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from outpost.common.serialize import deserialize
from outpost.endpoint.config import parse_config
from outpost.endpoint.engines.processes import ProcessPoolEngine
from outpost.endpoint.records import TaskResult
from outpost.endpoint.starting import load_the_agent
from tests.engine_tasks import make_records, pid

PROCESSES = {"engine": {"type": "ProcessPoolEngine", "max_workers": 2}}


def test_process_pool_workers_start_before_the_engine_does(tmp_path: Path) -> None:
    engine = load_the_agent(parse_config(PROCESSES), tmp_path)
    assert isinstance(engine, ProcessPoolEngine)
    try:
        procs = [w.proc for w in engine._workers]
        assert len(procs) == 2 and all(p.is_alive() for p in procs)
        got: list[TaskResult] = []
        engine.start(got.extend)
        assert [w.proc for w in engine._workers] == procs  # the same interpreters, taken
        engine.submit(make_records(pid, range(20)))
        deadline = time.monotonic() + 60
        while len(got) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(got) == 20
        assert {deserialize(r.result) for r in got} <= {p.pid for p in procs}
    finally:
        engine.shutdown()
    assert not any(p.is_alive() for p in procs)


def test_no_workers_before_endpoint_setup_or_for_other_engines(tmp_path: Path) -> None:
    with_setup = parse_config({**PROCESSES, "endpoint_setup": "true"})
    assert load_the_agent(with_setup, tmp_path) is None  # setup runs first, in runner.serve
    threads = parse_config({"engine": {"type": "ThreadPoolEngine", "max_workers": 2}})
    assert load_the_agent(threads, tmp_path) is None


def test_an_engine_shut_down_unstarted_stops_its_workers(tmp_path: Path) -> None:
    engine = load_the_agent(parse_config(PROCESSES), tmp_path)
    assert isinstance(engine, ProcessPoolEngine)
    procs = [w.proc for w in engine._workers]
    engine.shutdown()  # registration failed: the endpoint exits without starting it
    assert not any(p.is_alive() for p in procs)


def test_config_kind_is_told_without_importing_the_multi_user_models(tmp_path: Path) -> None:
    """A single-user endpoint's start never imports ``outpost.endpoint.multi_user``; a
    multi-user config is still read as one."""
    code = textwrap.dedent(
        """
        import sys
        from outpost.endpoint.files import EndpointDir, is_multi_user
        from outpost.endpoint.starting import load_the_agent
        d = EndpointDir("single")
        d.create()
        config = d.config()
        assert not is_multi_user(config)
        engine = load_the_agent(config, d.path)
        engine.shutdown()
        assert not [m for m in sys.modules if m.startswith("outpost.endpoint.multi_user")]
        mep = EndpointDir("mep")
        mep.create_multi_user()
        config = mep.config()
        from outpost.endpoint.multi_user.config import MultiUserConfig
        assert is_multi_user(config) and isinstance(config, MultiUserConfig)
        assert load_the_agent(config, mep.path) is None
        print("ok")
        """
    )
    env = {**os.environ, "OUTPOST_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
