"""/docs in a real browser (headless Chromium): Swagger UI renders the API from assets the
service serves itself, with an Authorize button for the bearer token."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from outpost.local import LocalService
from tests.conftest import need


def _dom(url: str, profile: Path) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    need(chromium is not None, "chromium (Debian: chromium)")
    assert chromium is not None
    args = [chromium, "--headless", "--disable-gpu", "--virtual-time-budget=20000"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    out = subprocess.run(
        [*args, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return out.stdout


def test_swagger_ui_renders_offline_with_authorize(tmp_path: Path) -> None:
    svc = LocalService(tmp_path / "home").start()
    try:
        dom = _dom(svc.url + "/docs", tmp_path / "profile")
        redoc = _dom(svc.url + "/redoc", tmp_path / "profile2")
    finally:
        svc.close()
    assert "Unable to render" not in dom
    assert "authorize" in dom.lower()  # the security scheme's button
    assert "/v2/tasks/{task_id}" in dom and "/v3/endpoints/{endpoint_id}/submit" in dom
    assert "cdn." not in dom
    assert "/v2/batch_status" in redoc
