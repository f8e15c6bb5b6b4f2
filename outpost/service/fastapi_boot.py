"""Import FastAPI with its OpenAPI models built on first use instead of at import.

``fastapi.openapi.models`` (imported by ``fastapi`` itself) defines ~40 pydantic models
(the OpenAPI document: ``Schema``, ``Operation``, ``PathItem``...) and builds their
validators at import: ~40 % of importing FastAPI, ~70 ms of the service's start-up CPU
on a quiet machine. The service uses them only when it writes ``/openapi.json``, so
``import_fastapi`` imports FastAPI with pydantic's ``defer_build`` in effect for the models
defined meanwhile: each is built the first time it validates, serialises or gives a
schema, with the same result (``tests/service/test_fastapi_boot.py`` compares the
OpenAPI documents). Models defined outside that import are not touched.

It relies on two things pydantic documents: a model's config is inherited from its
bases (``defer_build`` among it), and a deferred model builds itself on first use. The
module-level ``model_rebuild()`` calls of ``fastapi.openapi.models`` (which would build
at once) are skipped while it is imported; the rebuild a deferred model does on first use
goes through. If anything about this is not as expected, FastAPI is imported plainly.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

#: The module whose import defines the models deferred here.
MODELS = "fastapi.openapi.models"


def import_fastapi() -> None:
    """Import FastAPI (once per process), its OpenAPI models deferred. A no-op if FastAPI's
    OpenAPI models were imported already."""
    if MODELS in sys.modules:
        _check_pydantic_v1_only_once_imported()
        return
    try:
        with _models_deferred():
            import fastapi  # noqa: F401
            import fastapi.openapi.models  # noqa: F401
    except Exception:  # an unexpected pydantic: import FastAPI as it comes
        log.debug("deferred import of FastAPI failed; importing it plainly", exc_info=True)
        for name in [m for m in sys.modules if m == "fastapi" or m.startswith("fastapi.")]:
            del sys.modules[name]
        import fastapi  # noqa: F401
    _check_pydantic_v1_only_once_imported()


#: Where FastAPI looks up its "is this a pydantic.v1 model?" checks (module, name).
V1_CHECKS = (
    ("fastapi._compat.shared", "is_pydantic_v1_model_class"),
    ("fastapi._compat.shared", "is_pydantic_v1_model_instance"),
    ("fastapi._compat", "is_pydantic_v1_model_instance"),
    ("fastapi.encoders", "is_pydantic_v1_model_instance"),
)


def _check_pydantic_v1_only_once_imported() -> None:
    """FastAPI's pydantic.v1 checks, answering False without importing ``pydantic.v1``
    while it is not imported (no pydantic.v1 model can exist then). Left as they are if
    FastAPI's layout is not the one expected."""
    import importlib

    try:
        modules = {name: importlib.import_module(name) for name, _ in V1_CHECKS}
    except ImportError:
        return
    if not all(callable(getattr(modules[m], f, None)) for m, f in V1_CHECKS):
        return
    for m, f in V1_CHECKS:
        original = getattr(modules[m], f)
        if getattr(original, "__wrapped__", None) is not None:
            continue  # already wrapped (a second call)
        setattr(modules[m], f, _unless_v1_unimported(original))


def _unless_v1_unimported(check: Any) -> Any:
    def v1_check(obj: Any) -> bool:
        if "pydantic.v1" not in sys.modules:
            return False
        return bool(check(obj))

    v1_check.__wrapped__ = check  # type: ignore[attr-defined]
    v1_check.__name__ = check.__name__
    return v1_check


@contextmanager
def _models_deferred() -> Iterator[None]:
    from pydantic import BaseModel

    saved_config = BaseModel.__dict__["model_config"]
    saved_rebuild = BaseModel.__dict__["model_rebuild"]
    rebuild = saved_rebuild.__func__

    def model_rebuild(cls: type[BaseModel], **kwargs: Any) -> bool | None:
        # A bare ``X.model_rebuild()`` (fastapi's module-level calls) would build now:
        # skip it. A deferred model's first use calls it with arguments: let it build.
        if kwargs:
            return rebuild(cls, **kwargs)  # type: ignore[no-any-return]
        return None

    BaseModel.model_config = {**saved_config, "defer_build": True}
    BaseModel.model_rebuild = classmethod(model_rebuild)  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        BaseModel.model_config = saved_config
        BaseModel.model_rebuild = saved_rebuild  # type: ignore[method-assign]
