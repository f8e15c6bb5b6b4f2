"""Per-task environment variables: the values tasks and their children see, and no growth
of the worker's memory per task (each case runs in a fresh interpreter: it changes the
process's environment)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_each_value_is_seen_by_python_and_by_child_processes() -> None:
    out = _run(
        """
        import os, subprocess, sys, uuid
        from outpost.endpoint.task_env import TaskVariable
        v = TaskVariable("OUTPOST_TEST_TASK_ID")
        for i in range(3):
            tid = str(uuid.uuid4())
            v.set(tid)
            assert os.environ["OUTPOST_TEST_TASK_ID"] == tid
            assert os.getenv("OUTPOST_TEST_TASK_ID") == tid
            child = subprocess.run(
                ["sh", "-c", "printf %s \\"$OUTPOST_TEST_TASK_ID\\""],
                capture_output=True, text=True, check=True,
            ).stdout
            assert child == tid, (child, tid)
        print("in place" if v._buf is not None and not v._broken else "fallback")
        """
    )
    assert out == "in place"


def test_many_values_do_not_grow_the_process() -> None:
    # Through os.environ (setenv) 100,000 distinct ids cost ~9 MiB that are never freed.
    out = _run(
        """
        import os, uuid
        from outpost.endpoint.task_env import TaskVariable
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096
        v = TaskVariable("OUTPOST_TEST_TASK_ID")
        ids = [str(uuid.uuid4()) for _ in range(100_000)]
        v.set(ids[0])
        before = rss()
        for tid in ids:
            v.set(tid)
        assert os.environ["OUTPOST_TEST_TASK_ID"] == ids[-1]
        print((rss() - before) // 1024)
        """
    )
    assert int(out) < 2048, f"grew {out} KiB over 100,000 values"


def test_values_that_do_not_fit_and_values_set_by_others_fall_back_to_os_environ() -> None:
    out = _run(
        """
        import os, subprocess
        from outpost.endpoint.task_env import TaskVariable
        def child():
            return subprocess.run(
                ["sh", "-c", "printf %s \\"$V\\""], capture_output=True, text=True, check=True
            ).stdout
        v = TaskVariable("V", capacity=16)
        v.set("short")
        assert child() == "short" and os.environ["V"] == "short"
        long = "x" * 40
        v.set(long)  # longer than the buffer
        assert child() == long and os.environ["V"] == long
        os.environ["V"] = "set by the task itself"
        v.set("next")
        assert child() == "next" and os.environ["V"] == "next"
        v.set("after")
        assert child() == "after" and os.environ["V"] == "after"
        print("ok")
        """
    )
    assert out == "ok"
