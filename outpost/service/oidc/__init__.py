"""Sign-in through OpenID Connect issuers (Keycloak, CILogon, Globus Auth, ...).

``config`` (what the administrator trusts), ``issuer`` (discovery, the signing keys and
introspection of one issuer, cached), ``verify`` (an access token -> its verified claims,
or a refusal that says why), ``claims`` (verified claims -> the identities they prove).
``outpost.service.authn`` puts them together with the admin-minted tokens.
"""
