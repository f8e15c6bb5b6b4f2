"""What an endpoint tells the service about how it runs, in its ``status`` frames: the
engine, when it started and, for a batch scheduler, the account and partition its jobs
are charged to and run in (shown in the web console's user endpoint table)."""

from __future__ import annotations

from typing import Any, TypedDict

from outpost.endpoint.config import EndpointConfig

#: Provider options reported; every one is a plain string in a job script.
RESOURCE_OPTIONS = ("account", "partition", "queue", "project")


class RunSummary(TypedDict):
    engine: str
    started_at: float
    resources: dict[str, Any]


def run_summary(config: EndpointConfig, started_at: float) -> RunSummary:
    engine = config.engine
    resources: dict[str, str] = {}
    provider = getattr(engine, "provider", None)
    if provider is not None:
        resources["provider"] = provider.type
        opts = provider.options()
        for key in RESOURCE_OPTIONS:
            if isinstance(opts.get(key), str) and opts[key]:
                resources[key] = opts[key]
    return {"engine": engine.type, "started_at": started_at, "resources": resources}
