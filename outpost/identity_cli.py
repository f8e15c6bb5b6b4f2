"""``outpost login``, ``outpost logout`` and ``outpost whoami``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def _url(service_url: str | None) -> str:
    from outpost.sdk.config import find_service_url

    return find_service_url(service_url)


def _choose(configs: list[Any], issuer: str | None) -> Any:
    if issuer:
        chosen = [c for c in configs if c.issuer == issuer.rstrip("/") or c.issuer == issuer]
        if not chosen:
            known = ", ".join(c.issuer for c in configs) or "none"
            raise click.ClickException(f"the service does not trust {issuer}; it trusts {known}")
        return chosen[0]
    return configs[0]


def _show_device_code(uri: str, code: str, complete: str | None) -> None:
    click.echo(
        f"To sign in, open {complete or uri}\n"
        f"and check that it shows the code {code} (or enter it at {uri}).\n"
        "Waiting for you to finish in the browser...",
        err=True,
    )


def _open_browser(url: str, use_browser: bool) -> None:
    click.echo(f"Opening the sign-in page; if no browser appears, open:\n{url}", err=True)
    if use_browser:
        import webbrowser

        webbrowser.open(url)


def _sign_in(url: str, issuer: str | None, code: bool, browser: bool) -> Any:
    from outpost.sdk import signin

    configs = signin.login_configs(url)
    if not configs:
        return None
    cfg = _choose(configs, issuer)
    if code:
        return signin.code_flow(cfg, lambda u: _open_browser(u, browser))
    return signin.device_flow(cfg, _show_device_code)


def _me(url: str, token: str) -> dict[str, Any]:
    from outpost.sdk.http import Transport

    t = Transport(url, token)
    try:
        return t.get("/v3/me")  # type: ignore[no-any-return]
    finally:
        t.close()


@click.command()
@click.option(
    "--token",
    default=None,
    help="Store this bearer token (from an administrator) instead of signing in.",
)
@click.option(
    "--service", "service_url", default=None, help="Service URL (default: http://127.0.0.1:5000)."
)
@click.option(
    "--code",
    "use_code",
    is_flag=True,
    help="Sign in with a browser on this machine (authorization code + PKCE on a loopback "
    "redirect) instead of the device flow.",
)
@click.option("--no-browser", is_flag=True, help="With --code: print the URL, open nothing.")
@click.option(
    "--issuer", default=None, help="Which identity provider, if the service trusts several."
)
@click.option(
    "--link",
    is_flag=True,
    help="Sign in with another identity and link it to the account you are signed in with.",
)
@click.option(
    "--no-check", is_flag=True, help="With --token: store without contacting the service."
)
def login(
    token: str | None,
    service_url: str | None,
    use_code: bool,
    no_browser: bool,
    issuer: str | None,
    link: bool,
    no_check: bool,
) -> None:
    """Sign in to an Outpost service; credentials go to ~/.outpost/credentials.json (0600).

    \b
    outpost login --service https://compute.example.edu   # device flow: open a URL, check a code
    outpost login --code                                  # a browser on this machine
    outpost login --token TOKEN                           # a token from an administrator
    outpost login --link                                  # link another identity to your account

    The SDK (Client, Executor) and endpoints use the stored sign-in and renew its access
    token before it expires. OUTPOST_TOKEN and OUTPOST_SERVICE_URL override it;
    OUTPOST_HOME moves ~/.outpost.
    """
    from outpost.sdk import config
    from outpost.sdk.errors import OutpostError

    url = _url(service_url)
    if link:
        _link(url, issuer, use_code, not no_browser)
        return
    if token is None:
        try:
            signed = _sign_in(url, issuer, use_code, not no_browser)
        except OutpostError as e:
            raise click.ClickException(str(e)) from None
        if signed is not None:
            try:
                me = _me(url, signed.access_token)
            except OutpostError as e:
                raise click.ClickException(f"the service did not accept the sign-in: {e}") from None
            path = config.save_sign_in(signed, service_url=url)
            click.echo(f"signed in to {url} as {me['username']}; credentials in {path}", err=True)
            return
        token = click.prompt(
            "This service has no sign-in through an identity provider; token", hide_input=True
        )
    assert token is not None
    token = token.strip()
    if not token:
        raise click.BadParameter(
            "the token is empty. On the service host, `outpost service user add USER` (a new "
            "user) or `outpost service user token USER` (an existing one) prints a token; "
            "pass it as --token TOKEN or paste it at the prompt",
            param_hint="--token",
        )
    if not no_check:
        try:
            _me(url, token)
        except OutpostError as e:
            raise click.ClickException(f"the service did not accept the token: {e}") from None
    path = config.save_credentials(token, url)
    click.echo(f"logged in to {url}; credentials in {path}", err=True)


def _link(url: str, issuer: str | None, use_code: bool, browser: bool) -> None:
    from outpost.sdk import Client
    from outpost.sdk.errors import OutpostError

    try:
        client = Client(url)
        current = client.transport.get("/v3/me")["username"]
        click.echo(f"signed in as {current}; now sign in with the identity to link", err=True)
        other = _sign_in(url, issuer, use_code, browser)
        if other is None:
            raise click.ClickException("this service has no identity provider to link with")
        me = client.transport.post("/v3/me/identities", json={"token": other.access_token})
    except OutpostError as e:
        raise click.ClickException(str(e)) from None
    names = ", ".join(i["username"] for i in me["identities"])
    click.echo(f"linked; {me['username']}'s identities: {names}", err=True)


@click.command()
@click.option("--service", "service_url", default=None, help="Service URL.")
def logout(service_url: str | None) -> None:
    """Revoke the stored sign-in at the identity provider and delete it."""
    from outpost.sdk import config, signin

    stored = config.load_sign_in()
    if stored is not None:
        failed = signin.revoke(stored)
        for f in failed:
            click.echo(f"warning: could not revoke the {f}", err=True)
        if not failed:
            click.echo("revoked the sign-in's tokens", err=True)
    elif config.credentials_path().exists():
        click.echo(
            "a stored token was forgotten; it stays valid until an administrator revokes it",
            err=True,
        )
    if config.forget_credentials():
        click.echo(f"deleted {config.credentials_path()}", err=True)
    else:
        click.echo("not signed in", err=True)


@click.command()
@click.option("--service", "service_url", default=None, help="Service URL.")
@click.option("--linked-identities", is_flag=True, help="Also list every linked identity.")
@click.option("--json", "as_json", is_flag=True, help="Print the service's answer as JSON.")
def whoami(service_url: str | None, linked_identities: bool, as_json: bool) -> None:
    """Show who the stored credentials sign in as."""
    from outpost.sdk import Client
    from outpost.sdk.errors import OutpostError

    try:
        with Client(service_url) as client:
            me = client.transport.get("/v3/me")
    except OutpostError as e:
        raise click.ClickException(str(e)) from None
    if as_json:
        json.dump(me, sys.stdout, indent=2)
        click.echo()
        return
    role = " (admin)" if me.get("admin") else ""
    click.echo(f"{me['username']}{role}")
    if linked_identities:
        for i in me["identities"]:
            click.echo(f"  {i['username']}\t{i['identity_provider'] or ''}\t{i['id']}")
