"""The suite's leak check (tests/leakcheck.py), run on small suites of its own in a
separate pytest process: a run that leaves a process fails and names the test, the
process is stopped, and a clean run passes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import uuid
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = "/usr/bin/python3"


#: The inner runs' grace for processes still ending. A run that leaks waits all of it for
#: a process that never ends (it sleeps 300 s), so those runs get a short one; nothing
#: else of theirs is still ending at their end (what they start, they wait for).
GRACE_S = "8"
LEAKING_GRACE_S = "1"


def _run_suite(
    tmp_path: Path, body: str, as_nobody: bool = False, grace: str = GRACE_S
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(body))
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.leakcheck"]\n')
    python, path = [sys.executable], str(ROOT)
    if as_nobody:
        # The system Python with this environment's packages (the environment's own
        # interpreter may live where other accounts cannot read).
        site = sysconfig.get_paths()["purelib"]
        python = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", SYSTEM_PYTHON]
        path = f"{ROOT}:{site}"
        os.chmod(tmp_path, 0o777)
    return subprocess.run(
        [*python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "PYTHONPATH": path,
            "OUTPOST_LEAK_GRACE_S": grace,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )


def _by_token(token: str) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        if token in " ".join(p.info["cmdline"] or []):
            out.append(p)
    return out


def test_a_process_left_by_a_test_fails_the_run_names_the_test_and_is_stopped(
    tmp_path,
) -> None:
    token = f"leak-{uuid.uuid4().hex}"
    r = _run_suite(
        tmp_path,
        f"""
        import subprocess, sys

        def test_clean():
            subprocess.run([sys.executable, "-c", "pass"], check=True)

        def test_leaks():
            # Out of pytest's process tree: found by the marker in its environment.
            subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(300)", "{token}"],
                start_new_session=True,
            )
        """,
        grace=LEAKING_GRACE_S,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "2 passed" in out
    assert "left running after the suite" in out
    assert token in out and "likely started by test_inner.py::test_leaks" in out
    assert "stopped now" in out
    assert not _by_token(token)


def _can_run_as_nobody() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    try:
        v = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except OSError:
        return False
    return v == str(sys.version_info[:2])


def test_without_root_it_reads_what_it_can_and_still_finds_its_own() -> None:
    """Not root: other accounts' processes cannot be read (they are skipped, not an
    error); the run's own are found and stopped."""
    if not _can_run_as_nobody():
        pytest.skip(f"needs root, setpriv and {SYSTEM_PYTHON} of this Python's version")
    token = f"leak-{uuid.uuid4().hex}"
    # pytest's own temporary directories are closed to other accounts.
    where = Path(tempfile.mkdtemp(prefix="outpost-leakcheck-"))
    try:
        r = _nobody_leaks(where, token)
    finally:
        shutil.rmtree(where, ignore_errors=True)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "user nobody" in out and token in out and "stopped now" in out
    assert "likely started by test_inner.py::test_leaks_as_nobody" in out
    assert not _by_token(token)


def _nobody_leaks(where: Path, token: str) -> subprocess.CompletedProcess[str]:
    return _run_suite(
        where,
        f"""
        import subprocess, sys

        def test_leaks_as_nobody():
            subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(300)", "{token}"],
                start_new_session=True,
            )
        """,
        as_nobody=True,
        grace=LEAKING_GRACE_S,
    )


def test_a_process_with_a_clean_environment_is_known_by_its_parent(tmp_path) -> None:
    """A child started by a process of the run with an empty environment, in a new
    session (as a multi-user endpoint starts user endpoints), whose parent is gone by
    the end."""
    token = f"leak-{uuid.uuid4().hex}"
    r = _run_suite(
        tmp_path,
        f"""
        import subprocess, sys, time
        import psutil

        started = []

        def test_starts_a_parent_that_starts_a_child():
            code = (
                "import subprocess, sys, time\\n"
                "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)',"
                " '{token}'], env={{}}, start_new_session=True)\\n"
                "time.sleep(300)\\n"
            )
            started.append(subprocess.Popen([sys.executable, "-c", code]))
            deadline = time.monotonic() + 30
            while not [  # the child (its last argument), not the parent
                p for p in psutil.process_iter(["cmdline"])
                if (p.info["cmdline"] or [""])[-1] == "{token}"
            ]:
                assert time.monotonic() < deadline
                time.sleep(0.1)

        def test_stops_the_parent():
            started[0].kill()
            started[0].wait()
        """,
        grace=LEAKING_GRACE_S,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert token in out and "test_starts_a_parent_that_starts_a_child" in out
    assert not _by_token(token)


def test_a_clean_run_passes_and_pytest_itself_is_not_flagged(tmp_path) -> None:
    r = _run_suite(
        tmp_path,
        """
        import multiprocessing, subprocess, sys

        def _twice(x):
            return 2 * x

        def test_waits_for_what_it_starts():
            p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1)"])
            p.wait()

        def test_a_pool_closed_in_time():
            with multiprocessing.get_context("spawn").Pool(1) as pool:
                assert pool.map(_twice, [1, 2]) == [2, 4]
        """,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "left running" not in out


def test_a_process_that_ends_during_the_grace_period_is_not_a_leak(tmp_path) -> None:
    r = _run_suite(
        tmp_path,
        """
        import subprocess, sys

        def test_starts_something_that_ends_soon():
            subprocess.Popen(
                [sys.executable, "-c", "import time; time.sleep(3)"], start_new_session=True
            )
        """,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "left running" not in r.stdout
