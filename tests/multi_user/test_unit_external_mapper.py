"""Unit tests of outpost.endpoint.multi_user.external: real mapper programs.

As root the mapper runs as ``nobody``, so the scripts live in a directory of our own
under /tmp with mode 0755 (pytest's tmp_path may not be traversable by nobody), and
what a script writes goes to a 0777 subdirectory.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pwd
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from outpost.endpoint.multi_user.external import MAX_OUTPUT, ExternalMapper
from outpost.endpoint.multi_user.mapping import (
    EXPRESSION,
    EXTERNAL,
    MappingFailed,
    map_identities,
    parse_mapping,
)
from tests.conftest import need

PY = "/usr/bin/python3"
OUT_TYPE = "identity_mapping_output#1.0.0"
pytestmark = pytest.mark.anyio

ECHO = f"""#!{PY}
# maps user@example.org to user; other identities are not mapped
import json, sys
doc = json.load(sys.stdin)
result = []
for i in doc["identities"]:
    local, _, domain = i["username"].partition("@")
    if domain == "example.org":
        result.append({{"id": i["id"], "output": local}})
print(json.dumps({{"DATA_TYPE": "{OUT_TYPE}", "result": result}}))
"""

# Answers with a JSON report (as the 'output' of the first identity) of how it runs.
REPORT = f"""#!{PY}
import json, os, sys
doc = json.load(sys.stdin)
with open("/proc/self/environ", "rb") as f:
    exec_env = [e.split(b"=", 1)[0].decode() for e in f.read().split(b"\\0") if e]
report = {{
    "uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "egid": os.getegid(),
    "groups": os.getgroups(), "exec_env": exec_env, "environ": dict(os.environ),
    "cwd": os.getcwd(), "session_leader": os.getsid(0) == os.getpid(),
    "input": doc,
}}
out = {{"id": doc["identities"][0]["id"], "output": json.dumps(report)}}
print(json.dumps({{"DATA_TYPE": "{OUT_TYPE}", "result": [out]}}))
"""


def sh(body: str) -> str:
    return "#!/bin/sh\nPATH=/usr/bin:/bin\n" + body + "\n"


def answer(ident_id: str, output: str) -> str:
    doc = {"DATA_TYPE": OUT_TYPE, "result": [{"id": ident_id, "output": output}]}
    return json.dumps(doc)


class Scripts:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "out"

    def add(self, name: str, body: str) -> str:
        p = self.root / name
        p.write_text(body)
        p.chmod(0o755)
        return str(p)

    def mapper(self, name: str, body: str, timeout: float = 10.0, **kw: Any) -> ExternalMapper:
        path = self.add(name, body)
        return ExternalMapper({"DATA_TYPE": EXTERNAL, "command": [path]}, name, timeout, **kw)


@pytest.fixture
def scripts() -> Iterator[Scripts]:
    root = Path(tempfile.mkdtemp(prefix="outpost-mapper-test-"))
    try:
        root.chmod(0o755)
        (root / "out").mkdir()
        (root / "out").chmod(0o777)
        yield Scripts(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def python3() -> str:
    need(os.path.exists(PY), f"a system Python at {PY} (runnable by nobody)")
    return PY


def ident(username: str, id: str = "id-1") -> dict[str, Any]:
    return {"id": id, "username": username}


def alive(pid: int) -> bool:
    """Running (a zombie nobody has reaped yet counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] not in ("Z", "X")


def wait_gone(pid: int, limit: float = 5.0) -> bool:
    deadline = time.monotonic() + limit
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def kill_if_alive(pid: int) -> None:
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


async def wait_for_file(path: Path, limit: float = 10.0) -> str:
    deadline = time.monotonic() + limit
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.01)
    return path.read_text()


# -- a working mapper -----------------------------------------------------------------------------
async def test_mapper_maps(scripts: Scripts, python3: str) -> None:
    m = scripts.mapper("echo.py", ECHO)
    out = await m.map([ident("alice@example.org", "1"), ident("bob@other.org", "2")])
    assert out == {"1": "alice"}


async def test_map_identities_with_an_external_mapper(scripts: Scripts, python3: str) -> None:
    (m,) = parse_mapping([{"DATA_TYPE": EXTERNAL, "command": [scripts.add("e.py", ECHO)]}], "f")
    r = await map_identities([m], [ident("opmu_alice@example.org")])
    assert r.account == "opmu_alice"
    r = await map_identities([m], [ident("x@other.org")])
    assert r.account is None and r.reason == "no mapper matched the identity"


async def test_mapper_gets_the_documented_input(scripts: Scripts, python3: str) -> None:
    m = scripts.mapper("report.py", REPORT)
    idents = [
        {"id": "id-1", "username": "a@x.org", "email": "a@mail.org"},
        {"id": "id-2", "username": 'b\n"x"@x.org'},
    ]
    report = json.loads((await m.map(idents))["id-1"])
    assert report["input"] == {"DATA_TYPE": "identity_mapping_input#1.0.0", "identities": idents}


async def test_mapper_runs_unprivileged_with_an_empty_environment(
    scripts: Scripts, python3: str
) -> None:
    need(os.geteuid() == 0, "the mapper switches to nobody only when the MEP is root")
    nobody = pwd.getpwnam("nobody")
    m = scripts.mapper("report.py", REPORT)
    report = json.loads((await m.map([ident("a")]))["id-1"])
    assert report["uid"] == report["euid"] == nobody.pw_uid
    assert report["gid"] == report["egid"] == nobody.pw_gid
    assert report["uid"] != 0
    assert set(report["groups"]) <= {nobody.pw_gid}  # no supplementary groups (root's, say)
    # the environment given to exec is empty ...
    assert report["exec_env"] == []
    # ... and CPython itself may add LC_CTYPE when it coerces the C locale (PEP 538)
    assert set(report["environ"]) <= {"LC_CTYPE"}
    assert report["cwd"] == "/"
    assert report["session_leader"] is True


async def test_mapper_empty_environment_without_root(scripts: Scripts, python3: str) -> None:
    # true whoever runs the MEP
    report = json.loads((await scripts.mapper("r.py", REPORT).map([ident("a")]))["id-1"])
    assert report["exec_env"] == []
    assert report["session_leader"] is True


async def test_mapper_runs_as_the_configured_mapper_user(
    scripts: Scripts, python3: str, unix_accounts: dict[str, pwd.struct_passwd]
) -> None:
    bob = unix_accounts["opmu_bob"]
    m = scripts.mapper("report.py", REPORT, run_as="opmu_bob")
    report = json.loads((await m.map([ident("a")]))["id-1"])
    assert (report["uid"], report["gid"]) == (bob.pw_uid, bob.pw_gid)
    assert report["groups"] == [] or report["groups"] == [bob.pw_gid]


async def test_mapper_user_root_or_missing_is_refused(scripts: Scripts) -> None:
    need(os.geteuid() == 0, "mapper_user is only used when the MEP is root")
    path = scripts.add("ok.sh", sh(f"echo '{answer('id-1', 'x')}'"))
    for user, why in [("root", "must not be root"), ("opmu_no_such_user", "does not exist")]:
        m = ExternalMapper({"command": [path]}, "m", 5.0, run_as=user)
        with pytest.raises(MappingFailed, match=why):
            await m.map([ident("a")])


# -- failures -----------------------------------------------------------------------------------------
async def test_timeout_kills_the_mapper_and_its_children(scripts: Scripts) -> None:
    pidfile, childfile = scripts.out / "pid", scripts.out / "child"
    m = scripts.mapper(
        "slow.sh",
        sh(f"echo $$ > {pidfile}\nsleep 60 &\necho $! > {childfile}\nwait"),
        timeout=1.0,
    )
    try:
        with pytest.raises(MappingFailed, match=r"timed out after 1 s; killed"):
            await m.map([ident("a")])
        pid, child = int(pidfile.read_text()), int(childfile.read_text())
        assert not alive(pid)  # reaped by map() itself
        assert wait_gone(child)  # the whole process group was killed
    finally:
        for f in (pidfile, childfile):
            if f.exists() and f.read_text().strip():
                kill_if_alive(int(f.read_text()))


async def test_mapper_that_ignores_sigterm_is_still_killed(scripts: Scripts) -> None:
    pidfile = scripts.out / "pid"
    m = scripts.mapper(
        "stubborn.sh",
        sh(f"trap '' TERM HUP INT\necho $$ > {pidfile}\nwhile :; do sleep 1; done"),
        timeout=1.0,
    )
    try:
        with pytest.raises(MappingFailed, match="timed out"):
            await m.map([ident("a")])
        assert not alive(int(pidfile.read_text()))
    finally:
        if pidfile.exists():
            kill_if_alive(int(pidfile.read_text()))


@pytest.mark.parametrize("code", [1, 3, 127])
async def test_non_zero_exit_fails(scripts: Scripts, code: int) -> None:
    # it even prints a valid answer first
    m = scripts.mapper("exit.sh", sh(f"echo '{answer('id-1', 'alice')}'\nexit {code}"))
    with pytest.raises(MappingFailed, match=f"exited with code {code}"):
        await m.map([ident("a")])


async def test_killed_by_a_signal_fails(scripts: Scripts) -> None:
    m = scripts.mapper("sig.sh", sh("kill -9 $$"))
    with pytest.raises(MappingFailed, match="exited with code -9"):
        await m.map([ident("a")])


@pytest.mark.parametrize(
    ("output", "why"),
    [
        ("", "not JSON"),
        ("not json", "not JSON"),
        ('{"DATA_TYPE": "identity_mapping_output#1.0.0", "result": []', "not JSON"),
        ("[]", "lacks DATA_TYPE"),
        ('"alice"', "lacks DATA_TYPE"),
        ('{"result": []}', "lacks DATA_TYPE"),
        ('{"DATA_TYPE": "identity_mapping_input#1.0.0", "result": []}', "lacks DATA_TYPE"),
        ('{"DATA_TYPE": "identity_mapping_output#2.0.0", "result": []}', "lacks DATA_TYPE"),
        (f'{{"DATA_TYPE": "{OUT_TYPE}"}}', "'result' is not a list"),
        (f'{{"DATA_TYPE": "{OUT_TYPE}", "result": {{"id-1": "a"}}}}', "'result' is not a list"),
        (f'{{"DATA_TYPE": "{OUT_TYPE}", "result": ["alice"]}}', "lacks a string 'output'"),
        (f'{{"DATA_TYPE": "{OUT_TYPE}", "result": [{{"id": "id-1"}}]}}', "lacks a string"),
        (
            f'{{"DATA_TYPE": "{OUT_TYPE}", "result": [{{"id": "id-1", "output": 5}}]}}',
            "lacks a string",
        ),
    ],
)
async def test_bad_output_fails(scripts: Scripts, output: str, why: str) -> None:
    (scripts.root / "answer").write_text(output)
    m = scripts.mapper("bad.sh", sh(f"cat {scripts.root / 'answer'}"))
    with pytest.raises(MappingFailed, match=why):
        await m.map([ident("a")])


async def test_invalid_utf8_output_fails(scripts: Scripts) -> None:
    m = scripts.mapper("bin.sh", sh("printf '\\377\\376'"))
    with pytest.raises(MappingFailed, match="not JSON"):
        await m.map([ident("a")])


@pytest.mark.parametrize("other", ["id-2", "", "None"])
async def test_answer_for_an_identity_not_asked_for_fails(scripts: Scripts, other: str) -> None:
    body = json.dumps(
        {
            "DATA_TYPE": OUT_TYPE,
            "result": [{"id": "id-1", "output": "alice"}, {"id": other, "output": "root"}],
        }
    )
    (scripts.root / "answer").write_text(body)
    m = scripts.mapper("extra.sh", sh(f"cat {scripts.root / 'answer'}"))
    with pytest.raises(MappingFailed, match="which was not asked for"):
        await m.map([ident("a@x.org", "id-1")])


async def test_answer_without_id_fails(scripts: Scripts) -> None:
    (scripts.root / "answer").write_text(
        json.dumps({"DATA_TYPE": OUT_TYPE, "result": [{"output": "alice"}]})
    )
    m = scripts.mapper("noid.sh", sh(f"cat {scripts.root / 'answer'}"))
    with pytest.raises(MappingFailed, match="not asked for"):
        await m.map([ident("a")])


async def test_huge_output_fails(scripts: Scripts, python3: str) -> None:
    big = f'#!{PY}\nimport sys\nsys.stdout.write(" " * {MAX_OUTPUT + 10})\n'
    m = scripts.mapper("big.py", big)
    with pytest.raises(MappingFailed, match=f"printed more than {MAX_OUTPUT} bytes"):
        await m.map([ident("a")])


async def test_huge_output_from_a_mapper_that_keeps_running(scripts: Scripts) -> None:
    pidfile = scripts.out / "pid"
    m = scripts.mapper(
        "big.sh",
        sh(f"echo $$ > {pidfile}\nhead -c {MAX_OUTPUT + 5000} /dev/zero\nexec sleep 30"),
        timeout=30.0,
    )
    try:
        with pytest.raises(MappingFailed, match="printed more than"):
            await m.map([ident("a")])
        assert not alive(int(pidfile.read_text()))
    finally:
        if pidfile.exists():
            kill_if_alive(int(pidfile.read_text()))


async def test_map_returns_after_killing_a_mapper_with_unread_output(scripts: Scripts) -> None:
    # Deterministic set-up of the paused state: map() is still writing the 300 KB of
    # identities (drain() waits: more than a pipe and the write buffer hold) while the
    # mapper writes 400 KB before it reads its stdin. stdout fills the StreamReader, which
    # pauses reading; both sides wait until the 0.5 s timeout kills the mapper. map()
    # should then say so at once; the outer 5 s limit (10 times the mapper's timeout) only
    # keeps the test from hanging. (A mapper with endless output, `exec yes`, hits the same
    # state in most runs, but not deterministically.)
    pidfile = scripts.out / "pid"
    m = scripts.mapper(
        "burst.sh",
        sh(f"echo $$ > {pidfile}\nhead -c 400000 /dev/zero\ncat > /dev/null"),
        timeout=0.5,
    )
    idents = [ident("u" * 1000, f"id-{i}") for i in range(300)]
    outcome = "returned"
    try:
        await asyncio.wait_for(m.map(idents), 5.0)
    except MappingFailed as e:
        outcome = str(e)
    except TimeoutError:
        outcome = "map() still had not returned after 5 s"
    finally:
        if pidfile.exists() and pidfile.read_text().strip():
            kill_if_alive(int(pidfile.read_text()))
    # the abandoned transport is closed while this test's event loop still runs
    gc.collect()
    await asyncio.sleep(0.01)
    assert "timed out" in outcome, outcome


async def test_deeply_nested_output_is_a_failed_mapping(scripts: Scripts, python3: str) -> None:
    deep = f'#!{PY}\nimport sys\nsys.stdout.write("[" * 50000)\n'
    m = scripts.mapper("deep.py", deep)
    with pytest.raises(MappingFailed, match="not JSON"):
        await m.map([ident("a")])
    r = await map_identities([m], [ident("a")])
    assert r.account is None
    assert "not JSON" in r.reason


async def test_missing_program_fails(scripts: Scripts) -> None:
    m = ExternalMapper({"command": [str(scripts.root / "nope")]}, "m", 5.0)
    with pytest.raises(MappingFailed, match="cannot run"):
        await m.map([ident("a")])


async def test_program_not_executable_fails(scripts: Scripts) -> None:
    path = scripts.root / "noexec.sh"
    path.write_text(sh("true"))
    path.chmod(0o644)
    m = ExternalMapper({"command": [str(path)]}, "m", 5.0)
    if os.geteuid() == 0:
        # root can exec anything with an x bit; nobody cannot read a 0700 file
        path.chmod(0o700)
    with pytest.raises(MappingFailed, match="cannot run"):
        await m.map([ident("a")])


async def test_mapper_that_does_not_read_stdin(scripts: Scripts) -> None:
    m = scripts.mapper("noread.sh", sh(f"exec 0<&-\necho '{answer('id-1', 'alice')}'"))
    idents = [ident("a" * 200, "id-1")] + [ident("b" * 200, f"x{i}") for i in range(10)]
    assert await m.map(idents) == {"id-1": "alice"}


# -- map_identities and failures ------------------------------------------------------------------
async def test_map_identities_turns_a_failure_into_a_refusal(scripts: Scripts) -> None:
    m = scripts.mapper("fail.sh", sh("exit 4"))
    r = await map_identities([m], [ident("a")])
    assert r.account is None
    assert "exited with code 4" in r.reason
    assert m.command[0] in r.reason


async def test_map_identities_tries_the_next_mapper_after_a_failure(scripts: Scripts) -> None:
    failing = scripts.mapper("fail.sh", sh("exit 4"), timeout=5.0)
    (expr,) = parse_mapping(
        [
            {
                "DATA_TYPE": EXPRESSION,
                "mappings": [{"source": "{username}", "match": "(.*)@x\\.org", "output": "{0}"}],
            }
        ],
        "f",
    )
    r = await map_identities([failing, expr], [ident("ann@x.org")])
    assert r.account == "ann"


async def test_map_identities_timeout_is_a_refusal(scripts: Scripts) -> None:
    m = scripts.mapper("slow.sh", sh("exec sleep 30"), timeout=0.5)
    r = await map_identities([m], [ident("a")])
    assert r.account is None
    assert "timed out" in r.reason


# -- concurrency ------------------------------------------------------------------------------------
async def test_a_slow_mapper_does_not_block_another(scripts: Scripts) -> None:
    gate = scripts.out / "gate"
    slow = scripts.mapper(
        "slow.sh",
        sh(f"while [ ! -e {gate} ]; do sleep 0.05; done\necho '{answer('id-1', 'slow')}'"),
        timeout=20.0,
    )
    fast = scripts.mapper("fast.sh", sh(f"echo '{answer('id-1', 'fast')}'"), timeout=20.0)
    order: list[str] = []

    async def run(name: str, m: ExternalMapper) -> dict[str, str]:
        out = await m.map([ident("a")])
        order.append(name)
        if name == "fast":
            gate.write_text("go\n")  # the slow one can only finish after the fast one did
        return out

    results = await asyncio.gather(run("slow", slow), run("fast", fast))
    assert results == [{"id-1": "slow"}, {"id-1": "fast"}]
    assert order == ["fast", "slow"]


async def test_concurrent_mappings_are_independent(scripts: Scripts, python3: str) -> None:
    m = scripts.mapper("echo.py", ECHO)
    names = [f"user{i}" for i in range(8)]
    results = await asyncio.gather(*(m.map([ident(f"{n}@example.org", n)]) for n in names))
    assert results == [{n: n} for n in names]


async def test_cancelled_mapping_kills_the_mapper(scripts: Scripts) -> None:
    pidfile, childfile = scripts.out / "pid", scripts.out / "child"
    m = scripts.mapper(
        "hang.sh",
        # it reads all its input first: once the pid file exists, map() is past starting
        # the process and writing its stdin, and waits for the answer
        sh(f"cat > /dev/null\nsleep 30 &\necho $! > {childfile}\necho $$ > {pidfile}\nwait"),
        timeout=30.0,
    )
    task = asyncio.ensure_future(m.map([ident("a")]))
    try:
        pid = int(await wait_for_file(pidfile))
        child = int(childfile.read_text())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert wait_gone(pid, limit=2.0) and wait_gone(child, limit=2.0), (
            "the mapper outlived its cancelled mapping"
        )
    finally:
        for f in (pidfile, childfile):
            if f.exists() and f.read_text().strip():
                kill_if_alive(int(f.read_text()))
        # Let asyncio's child watcher see the exit and the orphaned transport close while
        # the event loop still runs (else it warns "Event loop is closed" later).
        del task
        for _ in range(100):
            if not (pidfile.exists() and Path(f"/proc/{pidfile.read_text().strip()}").exists()):
                break
            await asyncio.sleep(0.02)
        for _ in range(5):
            await asyncio.sleep(0.01)
        gc.collect()
