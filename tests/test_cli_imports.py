"""The ``outpost`` command starts light: its modules and every ``--help`` need only click.

Each command imports what it uses when it runs, so ``outpost --help`` (and a plain
``pip install`` without a service's libraries at hand) never loads pydantic-settings,
FastAPI or SQLAlchemy; ``outpost service start``'s flags, made from the settings model,
are built only when that command parses or shows its help.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import click
from click.testing import CliRunner

# Every third-party module but click fails to import in the child (a meta path finder
# placed first); the standard library and outpost itself load as usual.
ONLY_CLICK = textwrap.dedent(
    """
    import importlib.abc, sys

    class Blocked(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top in ("click", "outpost"):
                return None
            raise ImportError(f"blocked in this test: {name}")

    sys.meta_path.insert(0, Blocked())
    for name in ("pydantic_settings", "pydantic", "fastapi", "sqlalchemy"):
        sys.modules[name] = None
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ONLY_CLICK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_outpost_help_needs_only_click() -> None:
    out = _run(
        """
        import sys
        from outpost.cli import main
        try:
            main(["--help"], prog_name="outpost")
        except SystemExit as e:
            assert e.code == 0, e.code
        """
    )
    assert out.returncode == 0, out.stderr
    for command in ("service", "endpoint", "login", "demo", "tunnel"):
        assert f"  {command} " in out.stdout, out.stdout


def test_every_command_and_its_help_need_only_click() -> None:
    """Importing every CLI module and showing every command's help (all but `service
    start`, whose flags come from the settings model) loads no third-party library but
    click."""
    out = _run(
        """
        import sys
        import click
        from click.testing import CliRunner
        import outpost.endpoint.cli, outpost.service.cli, outpost.identity_cli
        from outpost.cli import main

        def walk(cmd, path):
            yield path
            if isinstance(cmd, click.Group):
                for name, sub in cmd.commands.items():
                    yield from walk(sub, [*path, name])

        shown = 0
        for path in walk(main, []):
            if path == ["service", "start"]:
                continue
            r = CliRunner().invoke(main, [*path, "--help"])
            assert r.exit_code == 0, (path, r.output, r.exception)
            assert "Usage:" in r.output, path
            shown += 1
        third_party = {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
        third_party -= set(sys.stdlib_module_names) | {"click", "outpost", "__main__"}
        third_party = {m for m in third_party if not m.startswith(("_", "__"))}
        assert not third_party, third_party
        print(shown)
        """
    )
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.split()[-1]) > 25  # the whole tree was walked


def test_service_start_help_lists_every_setting_flag() -> None:
    from outpost.cli import main
    from outpost.service.settings import ServiceSettings, field_extra
    from outpost.service.settings_cli import flag_name

    r = CliRunner().invoke(main, ["service", "start", "--help"], terminal_width=200)
    assert r.exit_code == 0, r.output
    flags = [
        flag_name(name, info)
        for name, info in ServiceSettings.model_fields.items()
        if field_extra(info).get("cli", True)
    ]
    assert len(flags) > 20
    for flag in flags:
        assert flag in r.output, flag
    for name, info in ServiceSettings.model_fields.items():
        if field_extra(info).get("cli", True):
            assert f"OUTPOST_{name.upper()}" in r.output, name
    assert "--config" in r.output


def test_service_start_parses_lazily_built_flags() -> None:
    """The lazily built flags parse like any other (a bad value names the setting)."""
    from outpost.service.cli import start

    assert isinstance(start, click.Command)
    ctx = start.make_context("start", ["--port", "6123", "--no-access-log", "--sync", "full"])
    assert ctx.params["port"] == 6123
    assert ctx.params["access_log"] is False
    assert ctx.params["sqlite_synchronous"] == "FULL"  # the choice as the model spells it
    assert ctx.params["task_ttl"] is None  # unset: the model's default applies


def test_the_endpoint_imports_httpcore_without_trio_and_leaves_trio_importable() -> None:
    """``outpost endpoint start`` keeps httpcore from importing trio (unused by the agent,
    slow to import where it is installed), and a task can still import trio after."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import importlib.util, sys
                from outpost.endpoint.starting import import_httpcore_without_trio
                import_httpcore_without_trio()
                assert "httpcore" in sys.modules
                assert "trio" not in sys.modules, "trio was imported"
                if importlib.util.find_spec("trio") is not None:
                    import trio
                    assert trio.__name__ == "trio"
                print("ok")
                """
            ),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
