// A real OpenID Connect issuer for Outpost's sign-in tests: panva's oidc-provider
// (a certified implementation) configured with the device flow, code + PKCE, client
// credentials, JWT and opaque access tokens (resource indicators), refresh tokens,
// introspection and revocation.
//
//   node issuer.mjs CONFIG.json
//
// CONFIG (written by the pytest fixture, tests/servers/oidc_issuer.py):
//   port, audience, admin_secret, jwks {keys: [private JWKs]},
//   accounts {id: {password, claims: {...}}}, clients [client metadata],
//   access_token_ttl {client_id: seconds}
//
// Test-only routes (need the header "x-admin-secret"):
//   POST /test/keys   body: a private JWKS. Rebuilds the provider with these signing keys
//                     (grants, sessions and tokens are kept): key rotation.
// Prints one line "ready <issuer>" on stdout once listening.
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = `http://127.0.0.1:${config.port}`;
const API = 'urn:outpost:api';
const OPAQUE = 'urn:outpost:opaque';
const OTHER = 'urn:other:api';

function account(id) {
  const a = config.accounts[id];
  return a ? { id, ...a } : undefined;
}

function tokenClaims(accountId) {
  const a = account(accountId);
  if (!a) return undefined;
  const { preferred_username, email, name, identity_set, groups } = a.claims;
  return { preferred_username, email, name, identity_set, groups };
}

function clientTTL(client) {
  return (config.access_token_ttl || {})[client.clientId] || 600;
}

function page(title, body) {
  return `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${title}</title></head>`
    + `<body><h1>${title}</h1>${body}</body></html>`;
}

function build(jwks) {
  const provider = new Provider(issuer, {
    clients: config.clients,
    jwks,
    cookies: { keys: [config.admin_secret] },
    pkce: { required: () => true },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['preferred_username', 'name', 'identity_set', 'groups'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'compute'],
    async findAccount(ctx, id) {
      const a = account(id);
      if (!a) return undefined;
      return { accountId: id, async claims() { return { sub: id, ...a.claims }; } };
    },
    async extraTokenClaims(ctx, token) {
      return token.accountId ? tokenClaims(token.accountId) : undefined;
    },
    async issueRefreshToken(ctx, client) {
      return client.grantTypeAllowed('refresh_token');
    },
    ttl: {
      AccessToken: (ctx, token, client) => clientTTL(client),
      ClientCredentials: (ctx, token, client) => clientTTL(client),
      DeviceCode: 600,
      Grant: 3600,
      IdToken: 600,
      Interaction: 600,
      RefreshToken: 3600,
      Session: 3600,
      AuthorizationCode: 60,
    },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    features: {
      devInteractions: { enabled: false },
      deviceFlow: {
        enabled: true,
        async successSource(ctx) {
          ctx.body = page('Signed in', '<p id="done">You can close this page.</p>');
        },
      },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client, oneOf) => oneOf || API,
        useGrantedResource: () => true,
        async getResourceServerInfo(ctx, indicator, client) {
          const base = { scope: 'compute', accessTokenTTL: clientTTL(client) };
          if (indicator === API) {
            return { ...base, audience: config.audience, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
          }
          if (indicator === OPAQUE) {
            return { ...base, audience: config.audience, accessTokenFormat: 'opaque' };
          }
          if (indicator === OTHER) {
            return { ...base, audience: 'someone-else', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
          }
          throw new errors.InvalidTarget();
        },
      },
    },
  });
  provider.proxy = false;
  return provider;
}

let provider = build(config.jwks);

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res, status, type, body) {
  res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
  res.end(body);
}

// The sign-in pages a person would see: a login form, then consent granted for what was
// asked (this issuer's users always agree).
async function interaction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    if (req.method === 'GET') {
      send(res, 200, 'text/html', page('Sign in', `<form method="post" action="/interaction/${uid}">`
        + '<input name="login"><input name="password" type="password">'
        + '<button type="submit">Sign in</button></form>'));
      return;
    }
    const form = new URLSearchParams(await readBody(req));
    const a = account(form.get('login') || '');
    if (!a || a.password !== form.get('password')) {
      send(res, 200, 'text/html', page('Sign in', '<p id="error">wrong login or password</p>'
        + `<form method="post" action="/interaction/${uid}"><input name="login">`
        + '<input name="password" type="password"></form>'));
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId: a.id } });
    return;
  }
  if (prompt.name === 'consent') {
    const d = prompt.details;
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
    if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(d.missingResourceScopes || {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } });
    return;
  }
  send(res, 400, 'text/plain', `unexpected prompt ${prompt.name}`);
}

const server = http.createServer(async (req, res) => {
  try {
    const url = new URL(req.url, issuer);
    if (url.pathname.startsWith('/test/')) {
      if (req.headers['x-admin-secret'] !== config.admin_secret) {
        send(res, 403, 'text/plain', 'admin secret required');
        return;
      }
      if (url.pathname === '/test/keys' && req.method === 'POST') {
        provider = build(JSON.parse(await readBody(req)));
        send(res, 200, 'application/json', '{"rotated": true}');
        return;
      }
      send(res, 404, 'text/plain', 'no such test route');
      return;
    }
    const m = url.pathname.match(/^\/interaction\/([^/]+)$/);
    if (m) {
      await interaction(req, res, m[1]);
      return;
    }
    provider.callback()(req, res);
  } catch (err) {
    send(res, 500, 'text/plain', String(err && err.stack ? err.stack : err));
  }
});

server.listen(config.port, '127.0.0.1', () => {
  process.stdout.write(`ready ${issuer}\n`);
});

// The test run holds our stdin: when it ends (even killed), so do we.
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => server.close(() => process.exit(0)));
}
