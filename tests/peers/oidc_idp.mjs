// The company's OpenID provider in tests: panva's oidc-provider (OpenID
// Certified), with its development login and consent pages, which the Rust
// test drives over HTTP like a person would.
//
// usage: node oidc_idp.mjs REDIRECT_URI CLIENT_SECRET
// Prints {"issuer": "http://127.0.0.1:<port>"} once it listens.
// Accounts (log in with the name; any password): alice (alice@example.com,
// verified), mallory (mallory@example.com, verified, not a gateway user),
// unverified (alice@example.com, email_verified false), contractor
// (bob@example.com, verified, a gateway user outside the allowed group).
// Everyone but the contractor is in the group `engineering` (scope `groups`).
//
// Attacks the provider itself plays, honestly — same issuer, same JWKS, same
// paths, its own signing key (generated here and given to it):
// - disabled (dora@example.com): the provider refuses the login and sends
//   the browser back with error=access_denied, as for a disabled account;
// - stale, foreign, replayed (all alice@example.com): the token endpoint's
//   ID token is signed again with the provider's key after its claims are
//   changed: `exp` an hour ago, `aud` another client, `nonce` another
//   sign-in's. Nothing else differs from alice's genuine ID token.
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// Installed by scripts/install-peers.sh into <peers>/node (MCPGATE_PEERS, else ./.peers).
const here = path.dirname(fileURLToPath(import.meta.url));
const peers = process.env.MCPGATE_PEERS || path.join(here, '..', '..', '.peers');
const modules = path.join(peers, 'node', 'node_modules');
const { default: Provider } = await import(
  pathToFileURL(path.join(modules, 'oidc-provider', 'lib', 'index.js')).href
);
const jose = await import(pathToFileURL(path.join(modules, 'jose', 'dist', 'webapi', 'index.js')).href);

// The provider's signing key: ours, so that the attacks above can sign with it.
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid: 'idp-key-1', alg: 'RS256', use: 'sig' };

const now = () => Math.floor(Date.now() / 1000);
// How each attack account's ID token is changed before it leaves.
const forged = {
  stale: (c) => ({ ...c, iat: now() - 7200, auth_time: now() - 7200, exp: now() - 3600 }),
  foreign: (c) => ({ ...c, aud: 'another-client' }),
  replayed: (c) => ({ ...c, nonce: 'the-nonce-of-another-sign-in' }),
};

const [redirectUri, clientSecret] = process.argv.slice(2);
const accounts = {
  alice: { email: 'alice@example.com', email_verified: true, groups: ['engineering'] },
  mallory: { email: 'mallory@example.com', email_verified: true, groups: ['engineering'] },
  unverified: { email: 'alice@example.com', email_verified: false, groups: ['engineering'] },
  contractor: { email: 'bob@example.com', email_verified: true, groups: ['contractors'] },
  disabled: { email: 'dora@example.com', email_verified: true, groups: ['engineering'] },
  stale: { email: 'alice@example.com', email_verified: true, groups: ['engineering'] },
  foreign: { email: 'alice@example.com', email_verified: true, groups: ['engineering'] },
  replayed: { email: 'alice@example.com', email_verified: true, groups: ['engineering'] },
};

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString();
}

// Re-sign the ID token of the token endpoint's answer for an attack account.
function forgeIdTokens(res) {
  const end = res.end.bind(res);
  res.end = (chunk, ...rest) => {
    let answer;
    try {
      answer = JSON.parse(chunk.toString());
    } catch {
      return end(chunk, ...rest);
    }
    const claims = answer.id_token ? jose.decodeJwt(answer.id_token) : {};
    const change = forged[claims.sub];
    if (!change) return end(chunk, ...rest);
    new jose.SignJWT(change(claims))
      .setProtectedHeader({ alg: 'RS256', kid: signingJwk.kid })
      .sign(privateKey)
      .then((token) => {
        const body = JSON.stringify({ ...answer, id_token: token });
        res.setHeader('content-length', Buffer.byteLength(body));
        end(body);
      });
    return res;
  };
}

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'mcpgate',
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    }],
    claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
    // The email claims in the ID token itself, not only at userinfo.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    features: { devInteractions: { enabled: true } },
    jwks: { keys: [signingJwk] },
    cookies: { keys: ['test-cookie-key'] },
    async findAccount(ctx, id) {
      const claims = accounts[id];
      if (!claims) return undefined;
      return { accountId: id, async claims() { return { sub: id, ...claims }; } };
    },
  });
  const callback = provider.callback();
  server.on('request', async (req, res) => {
    if (req.method === 'POST' && req.url.startsWith('/interaction/')) {
      // Read here; the provider takes an already read body from req.body.
      req.body = await readBody(req);
      if (new URLSearchParams(req.body).get('login') === 'disabled') {
        await provider.interactionFinished(
          req,
          res,
          { error: 'access_denied', error_description: 'this account is disabled' },
          { mergeWithLastSubmission: false },
        );
        return;
      }
    }
    if (req.method === 'POST' && req.url === '/token') forgeIdTokens(res);
    callback(req, res);
  });
  console.log(JSON.stringify({ issuer }));
});
