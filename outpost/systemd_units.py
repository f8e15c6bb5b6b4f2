"""Installing and removing systemd units (the service's, an endpoint's): write or remove
the file, then ``systemctl daemon-reload`` and ``enable``/``disable`` when systemd runs this
machine (elsewhere, e.g. in a container, only the file is written or removed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import click


def systemd_running() -> bool:
    return shutil.which("systemctl") is not None and Path("/run/systemd/system").is_dir()


def systemctl(*args: str) -> str | None:
    """Run systemctl when systemd manages this machine; the error text, or None."""
    if not systemd_running():
        return None
    done = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    return done.stderr.strip() or f"exit {done.returncode}" if done.returncode else None


def install_unit(unit_dir: Path, name: str, text: str) -> Path:
    """Write the unit ``name`` (mode 0644) into ``unit_dir`` and enable it; its path.
    A ``ClickException`` says what failed and what to do."""
    path = unit_dir / name
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o644)
    except OSError as e:
        raise click.ClickException(
            f"cannot write {path}: {e.strerror} (run as root, or use --print)"
        ) from None
    for args in (("daemon-reload",), ("enable", name)):
        problem = systemctl(*args)
        if problem:
            raise click.ClickException(f"systemctl {' '.join(args)} failed: {problem}")
    return path


def remove_unit(unit_dir: Path, name: str) -> Path | None:
    """Disable the unit ``name`` and remove its file from ``unit_dir``; its path, or None
    when there is none. What runs from it keeps running."""
    path = unit_dir / name
    if not path.exists():
        return None
    problem = systemctl("disable", name)
    if problem:
        raise click.ClickException(f"systemctl disable {name} failed: {problem}")
    try:
        path.unlink()
    except OSError as e:
        raise click.ClickException(f"cannot remove {path}: {e.strerror} (run as root)") from None
    systemctl("daemon-reload")
    return path
