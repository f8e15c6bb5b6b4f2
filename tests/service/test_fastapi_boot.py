"""``outpost service start`` imports FastAPI with its OpenAPI models built on first use
(``outpost/service/fastapi_boot.py``); the API document it serves is the same as with a
plain import, and models defined elsewhere are not deferred."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

CODE = """
import json, sys
from pydantic import BaseModel
if {defer}:
    from outpost.service.fastapi_boot import import_fastapi
    import_fastapi()
    from fastapi.openapi import models
    deferred = sorted(
        n for n, v in vars(models).items()
        if isinstance(v, type) and issubclass(v, BaseModel) and not v.__pydantic_complete__
    )
    assert {{"OpenAPI", "Schema", "Operation", "PathItem"}} <= set(deferred), deferred
    assert "defer_build" not in BaseModel.model_config  # put back after the import

    class Later(BaseModel):  # defined after the import: built at once, as usual
        x: int
    assert Later.__pydantic_complete__
    import_fastapi()  # a second call is a no-op
from fastapi.testclient import TestClient
from outpost.service.app import create_app
from outpost.service.settings import ServiceSettings

app = create_app(ServiceSettings(data_dir={data_dir!r}))
with TestClient(app) as client:
    r = client.get("/openapi.json")
    assert r.status_code == 200, r.text
    print(json.dumps(r.json(), sort_keys=True))
from fastapi.openapi.models import Schema
assert Schema.model_validate({{"type": "object", "properties": {{"a": {{"type": "string"}}}}}})
"""


def _openapi(tmp_path: Path, defer: bool) -> dict[str, object]:
    code = textwrap.dedent(CODE.format(defer=defer, data_dir=str(tmp_path / str(defer))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_deferred_openapi_models_give_the_same_api_document(tmp_path: Path) -> None:
    plain = _openapi(tmp_path, defer=False)
    deferred = _openapi(tmp_path, defer=True)
    assert "/v2/tasks/{task_id}" in plain["paths"]  # type: ignore[operator]
    assert deferred == plain


def test_service_start_imports_fastapi_through_the_deferral() -> None:
    """Nothing on ``outpost service start``'s path imports FastAPI before ``_build`` does
    (else its models would be built at import, and the deferral would do nothing)."""
    code = textwrap.dedent(
        """
        import sys
        import outpost.cli, outpost.service.cli, outpost.service.serve
        from outpost.service.settings import ServiceSettings
        assert "fastapi" not in sys.modules, "imported before serve._build"
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


V1_CODE = """
import sys, warnings
from outpost.service.fastapi_boot import V1_CHECKS, import_fastapi
import_fastapi()
import importlib
for module, name in V1_CHECKS:  # FastAPI still looks these up where the service wraps them
    assert getattr(importlib.import_module(module), name).__wrapped__, (module, name)
from fastapi.testclient import TestClient
from outpost.service.app import create_app
from outpost.service.settings import ServiceSettings

app = create_app(ServiceSettings(data_dir={data_dir!r}))
with TestClient(app) as client:
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/v2/version").status_code == 200
assert "pydantic.v1" not in sys.modules, "imported to check for pydantic.v1 models"

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from pydantic import v1
class Old(v1.BaseModel):
    x: int
from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import PydanticV1NotSupportedError
router = APIRouter()
try:
    @router.get("/old", response_model=Old)
    def old() -> None: ...
except PydanticV1NotSupportedError:
    pass
else:
    raise AssertionError("a pydantic.v1 response model was accepted")
try:
    jsonable_encoder(Old(x=1))
except PydanticV1NotSupportedError:
    pass
else:
    raise AssertionError("a pydantic.v1 model instance was encoded")
print("ok")
"""


def test_pydantic_v1_checks_do_not_import_it_and_still_reject_v1_models(tmp_path: Path) -> None:
    """FastAPI asks whether each route's types (and objects it encodes) are pydantic.v1
    models by importing ``pydantic.v1``; the service's wrapper answers no while it is not
    imported (``fastapi_boot._check_pydantic_v1_only_once_imported``). Guards the
    monkey-patch: the functions are where it expects them, building and serving the app
    does not import ``pydantic.v1``, and once a v1 model exists FastAPI still rejects it."""
    code = textwrap.dedent(V1_CODE.format(data_dir=str(tmp_path / "svc")))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "ok"
