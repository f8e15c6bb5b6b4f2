"""TLS for clients of the service (SDK, endpoints, multi-user endpoints).

A site CA is trusted through ``SSL_CERT_FILE`` (a PEM bundle) or ``SSL_CERT_DIR`` (a
hashed directory), as with OpenSSL, curl and Python; otherwise the system's store.
"""

from __future__ import annotations

import functools
import os
import ssl

TLS_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR")


def client_ssl_context() -> ssl.SSLContext:
    """One context per CA setting, shared: loading a CA store costs tens of ms of CPU,
    which every new client (an Executor per config, a reconnect) would pay again."""
    return _context(os.environ.get("SSL_CERT_FILE") or None, os.environ.get("SSL_CERT_DIR") or None)


@functools.lru_cache(maxsize=4)
def _context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    if cafile or capath:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    ctx = ssl.create_default_context()
    if not ctx.get_ca_certs() and not os.path.isdir("/etc/ssl/certs"):
        import certifi  # no system store (minimal containers): httpx's bundle

        ctx.load_verify_locations(certifi.where())
    return ctx


def context_for(url: str) -> ssl.SSLContext:
    """The ``verify=`` context of an HTTP client whose requests are paths under ``url``
    and which follows no redirect. Loading a CA store costs ~50 ms of CPU (~250 M
    instructions; a tenth of an endpoint's start-up); such a client of a plain
    ``http://`` URL, with no proxy in the environment, never opens a TLS connection, so
    it gets a context that verifies as strictly (certificate and host name required) but
    trusts no CA: a TLS connection it did open would fail, never go unchecked."""
    if url.startswith("https:") or _proxy_configured():
        return client_ssl_context()
    return _trusts_no_ca()


def _proxy_configured() -> bool:
    """Whether httpx could route a request through a proxy taken from the environment
    (``HTTPS_PROXY``, ``ALL_PROXY``, ... in any case), which may speak TLS."""
    return any(
        v and k.lower().endswith("_proxy") and k.lower() != "no_proxy"
        for k, v in os.environ.items()
    )


@functools.lru_cache(maxsize=1)
def _trusts_no_ca() -> ssl.SSLContext:
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname


def ws_ssl(url: str) -> ssl.SSLContext | None:
    """The ``ssl=`` argument for a websockets connection to ``url``."""
    return client_ssl_context() if url.startswith("wss:") else None


def tls_environment() -> dict[str, str]:
    """The CA variables of this process, for a child started with a clean environment."""
    return {k: os.environ[k] for k in TLS_ENV if os.environ.get(k)}
