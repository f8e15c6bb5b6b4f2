"""The fork server's trust checks: code it would run as root must be changeable by root
(or the MEP's own account) alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from outpost.endpoint.multi_user.zygote import Untrusted, _check_path
from outpost.endpoint.multi_user.zygote_client import ZygoteUnavailable, trusted_python

ME = {0, os.geteuid()}


def above(p: Path) -> set[Path]:
    """Taken as checked: the directories above pytest's (under the world-writable /tmp)."""
    return set(p.parents)


def test_a_directory_writable_by_others_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "lib"
    d.mkdir()
    module = d / "mod.py"
    module.write_text("")
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o755)
    _check_path(module, ME, above(tmp_path))  # fine as it is
    for mode in (0o775, 0o757, 0o1777):
        os.chmod(d, mode)
        with pytest.raises(Untrusted, match="writable"):
            _check_path(module, ME, above(tmp_path))
    os.chmod(d, 0o755)
    os.chmod(module, 0o666)
    with pytest.raises(Untrusted, match="mod.py"):
        _check_path(module, ME, above(tmp_path))


def test_a_file_owned_by_another_account_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "mod.py"
    f.write_text("")
    os.chmod(tmp_path, 0o755)
    with pytest.raises(Untrusted, match="owned by uid"):
        _check_path(f, {12345}, above(tmp_path))


def test_trusted_python_checks_the_link_and_its_target(tmp_path: Path) -> None:
    real = Path(os.path.realpath("/usr/bin/python3"))
    if not real.exists():
        pytest.skip("no /usr/bin/python3")
    link_dir = tmp_path / "bin"
    link_dir.mkdir()
    (link_dir / "python").symlink_to(real)
    os.chmod(tmp_path, 0o755)
    # tmp_path lies under /tmp (sticky, world-writable): refused whatever its own mode.
    if Path("/tmp") in tmp_path.parents:
        with pytest.raises(ZygoteUnavailable, match="another account"):
            trusted_python(str(link_dir / "python"))
    trusted_python(str(real))  # the system Python: root's


def test_trusted_python_looks_a_bare_name_up_on_path() -> None:
    found = trusted_python("sh")
    assert os.path.isabs(found) and Path(found).name == "sh"
