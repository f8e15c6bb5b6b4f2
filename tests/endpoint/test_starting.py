"""``endpoint/starting.py``: what ``outpost endpoint start`` does before it registers.
A single-user endpoint never imports the multi-user models."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def test_config_kind_is_told_without_importing_the_multi_user_models(tmp_path: Path) -> None:
    """A single-user endpoint's start never imports ``outpost.endpoint.multi_user``; a
    multi-user config is still read as one."""
    code = textwrap.dedent(
        """
        import sys
        from outpost.endpoint.files import EndpointDir, is_multi_user
        from outpost.endpoint.starting import load_the_agent
        import outpost.endpoint.registration
        d = EndpointDir("single")
        d.create()
        config = d.config()
        assert not is_multi_user(config)
        load_the_agent(config)
        assert not [m for m in sys.modules if m.startswith("outpost.endpoint.multi_user")]
        mep = EndpointDir("mep")
        mep.create_multi_user()
        config = mep.config()
        from outpost.endpoint.multi_user.config import MultiUserConfig
        assert is_multi_user(config) and isinstance(config, MultiUserConfig)
        print("ok")
        """
    )
    env = {**os.environ, "OUTPOST_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
