"""The RabbitMQ management HTTP API: the few calls the service needs."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import httpx


log = logging.getLogger(__name__)


class ManagementError(RuntimeError):
    pass


class Management:
    def __init__(self, base_url: str, user: str, password: str, timeout: float = 15.0) -> None:
        import httpx  # loaded only by a service on RabbitMQ

        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/api", auth=(user, password), timeout=timeout
        )
        self.base_url = base_url

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        import httpx

        try:
            r = await self._http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ManagementError(
                f"RabbitMQ management API at {self.base_url} cannot be reached ({e}); "
                "is the management plugin enabled (rabbitmq-plugins enable "
                "rabbitmq_management) and --amqp-management-url right?"
            ) from e
        if r.status_code == 401:
            raise ManagementError(
                f"RabbitMQ management API at {self.base_url} refused the --amqp-url "
                "credentials; that user needs the 'administrator' tag"
            )
        if r.status_code >= 400 and not (method == "DELETE" and r.status_code == 404):
            raise ManagementError(
                f"RabbitMQ management API {method} {path} answered {r.status_code}: {r.text[:300]}"
            )
        return r

    async def put_user(self, name: str, password: str, tags: list[str]) -> None:
        await self._call(
            "PUT",
            f"/users/{quote(name, safe='')}",
            json={"password": password, "tags": ",".join(tags)},
        )

    async def set_permissions(
        self, vhost: str, name: str, configure: str, write: str, read: str
    ) -> None:
        await self._call(
            "PUT",
            f"/permissions/{quote(vhost, safe='')}/{quote(name, safe='')}",
            json={"configure": configure, "write": write, "read": read},
        )

    async def delete_user(self, name: str) -> None:
        await self._call("DELETE", f"/users/{quote(name, safe='')}")

    async def users(self) -> list[dict[str, Any]]:
        r = await self._call("GET", "/users")
        return list(r.json())

    async def close_connections_of(self, name: str, reason: str) -> int:
        r = await self._call("GET", "/connections", params={"columns": "name,user"})
        n = 0
        for c in r.json():
            if c.get("user") == name:
                await self._call(
                    "DELETE",
                    f"/connections/{quote(c['name'], safe='')}",
                    headers={"X-Reason": reason},
                )
                n += 1
        return n


def tags_of(user: dict[str, Any]) -> list[str]:
    tags = user.get("tags") or []
    if isinstance(tags, str):
        return [t for t in tags.split(",") if t]
    return [str(t) for t in tags]
