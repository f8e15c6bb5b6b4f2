"""``outpost service ... --database-url``: PostgreSQL URLs as written, clear failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from outpost.cli import main
from tests.servers import free_port


def run_outpost(*args: str, env: dict[str, str] | None = None, block_psycopg: bool = False):
    code = "import sys\n"
    if block_psycopg:
        code += "sys.modules['psycopg'] = None\n"
    code += "from outpost.cli import main\nsys.argv = ['outpost', *sys.argv[1:]]\nmain()\n"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_user_commands_take_a_postgresql_url(postgres_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["service", "user"]
    data = ["--data-dir", str(tmp_path / "svc")]
    added = runner.invoke(main, [*base, "add", "alice@example.org", *data,
                                 "--database-url", postgres_url])  # fmt: skip
    assert added.exit_code == 0, added.output
    token = added.stdout.strip()
    assert len(token) > 30
    # The same database through the environment variable, and the token is listed.
    listed = runner.invoke(main, [*base, "list", *data], env={"OUTPOST_DATABASE_URL": postgres_url})
    assert listed.exit_code == 0, listed.output
    assert "alice@example.org" in listed.stdout
    again = runner.invoke(main, [*base, "add", "alice@example.org", *data,
                                 "--database-url", postgres_url])  # fmt: skip
    assert again.exit_code != 0 and "already exists" in again.output
    # Nothing went to the default SQLite file.
    assert not (tmp_path / "svc" / "outpost.db").exists()


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://outpost:hunter2@127.0.0.1:{port}/outpost"
    r = run_outpost("service", "start", "--port", str(free_port()),
                    "--data-dir", str(tmp_path / "svc"), "--database-url", url)  # fmt: skip
    assert r.returncode == 1, r.stderr
    # The URL as written, its password hidden, and the driver's reason.
    assert f"cannot use the database postgresql://outpost:***@127.0.0.1:{port}/outpost: " in (
        r.stderr
    )
    assert "refused" in r.stderr.lower() or "connect" in r.stderr.lower()
    assert "hunter2" not in r.stderr and "Traceback" not in r.stderr


def test_user_command_on_an_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql://outpost@127.0.0.1:{free_port()}/outpost"
    r = run_outpost("service", "user", "list", "--data-dir", str(tmp_path / "svc"),
                    env={"OUTPOST_DATABASE_URL": url})  # fmt: skip
    assert r.returncode == 1
    assert "cannot use the database" in r.stderr and "Traceback" not in r.stderr


def test_postgresql_without_the_scale_extra_names_it(tmp_path: Path) -> None:
    r = run_outpost("service", "user", "list", "--data-dir", str(tmp_path / "svc"),
                    "--database-url", "postgresql://outpost@127.0.0.1/outpost",
                    block_psycopg=True)  # fmt: skip
    assert r.returncode == 1
    assert "pip install 'outpost-faas[scale]'" in r.stderr and "Traceback" not in r.stderr
