"""A Python environment that the test accounts can run user endpoints with.

The project's own .venv may live under a directory other accounts cannot enter (a
pyenv Python under /root, a clone in a private home). So the tests build one under
/opt (or $OUTPOST_TEST_USER_VENV) from the system Python, with Outpost's dependencies
installed once and Outpost's source copied in whenever it changed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"


def _source_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "outpost").rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def user_python() -> str:
    """Path of a Python every account can run, with the current Outpost importable."""
    base = Path(os.environ.get("OUTPOST_TEST_USER_VENV", "/opt/outpost-test"))
    venv, src = base / "venv", base / "src"
    py = venv / "bin" / "python"
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    deps_stamp = venv / ".deps"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # With the hpc extra: user endpoints on the test Slurm run the HighThroughputEngine.
    deps = project["dependencies"] + project["optional-dependencies"]["hpc"]
    wanted = "\n".join(deps)
    if not py.exists() or not deps_stamp.exists() or deps_stamp.read_text() != wanted:
        if venv.exists():
            shutil.rmtree(venv)
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *deps],
            check=True,
        )
        site = next((venv / "lib").glob("python3*/site-packages"))
        (site / "outpost-test-src.pth").write_text(str(src) + "\n")
        deps_stamp.write_text(wanted)
    stamp = base / ".source"
    digest = _source_hash()
    if not stamp.exists() or stamp.read_text() != digest:
        tmp = base / "src.new"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(
            ROOT / "outpost", tmp / "outpost", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.rmtree(src, ignore_errors=True)
        tmp.rename(src)
        subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
        stamp.write_text(digest)
    return str(py)
