"""AMQP URLs: the service's admin link, the URL handed to clients, per-user credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

USER_PREFIX = "outpost-u-"
QUEUE_PREFIX = "outpost.results."


class AmqpUrlError(ValueError):
    pass


@dataclass(frozen=True)
class BrokerAddress:
    scheme: str  # amqp | amqps
    host: str
    port: int
    vhost: str  # decoded, "/" by default
    user: str
    password: str

    @classmethod
    def parse(cls, url: str, what: str = "--amqp-url") -> BrokerAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise AmqpUrlError(f"{what} must start with amqp:// or amqps://, not {url[:8]!r}...")
        if not parts.hostname:
            raise AmqpUrlError(f"{what} has no host (amqp://user:password@host:5672/vhost)")
        try:
            port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
        except ValueError as e:
            raise AmqpUrlError(f"{what}: {e}") from None
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        return cls(
            scheme=parts.scheme,
            host=parts.hostname,
            port=port,
            vhost=vhost,
            user=unquote(parts.username or "guest"),
            password=unquote(parts.password or "guest"),
        )

    def url(self, user: str | None = None, password: str | None = None) -> str:
        u = quote(user if user is not None else self.user, safe="")
        p = quote(password if password is not None else self.password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{u}:{p}@{host}:{self.port}/{quote(self.vhost, safe='')}"

    def redacted(self) -> str:
        return (
            f"{self.scheme}://{self.user}:***@{self.host}:{self.port}/{quote(self.vhost, safe='')}"
        )


def default_management_url(addr: BrokerAddress) -> str:
    host = f"[{addr.host}]" if ":" in addr.host else addr.host
    return f"http://{host}:15672"


def rabbit_user(user_id: str) -> str:
    return USER_PREFIX + user_id


def queue_prefix(user_id: str) -> str:
    return f"{QUEUE_PREFIX}{user_id}."


def read_pattern(user_id: str) -> str:
    """The RabbitMQ ``read`` permission of a user: their own result queues only."""
    return "^" + re.escape(queue_prefix(user_id)) + ".*$"


def token_fingerprint(active_token_ids: list[str]) -> str:
    """Changes whenever one of the user's tokens is revoked (or a new one issued)."""
    return hashlib.sha256(",".join(sorted(active_token_ids)).encode()).hexdigest()[:16]


def derive_password(admin: BrokerAddress, user_id: str, fingerprint: str) -> str:
    """A per-user RabbitMQ password every replica derives alike from the admin URL (a
    secret they share), so nothing new is stored; a new token set gives a new one."""
    key = hashlib.sha256(b"outpost-amqp-credentials\0" + admin.url().encode()).digest()
    mac = hmac.new(key, f"{user_id}\0{fingerprint}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")
