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
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// Installed by scripts/install-peers.sh into <peers>/node (MCPGATE_PEERS, else ./.peers).
const here = path.dirname(fileURLToPath(import.meta.url));
const peers = process.env.MCPGATE_PEERS || path.join(here, '..', '..', '.peers');
const { default: Provider } = await import(
  pathToFileURL(path.join(peers, 'node', 'node_modules', 'oidc-provider', 'lib', 'index.js')).href
);

const [redirectUri, clientSecret] = process.argv.slice(2);
const accounts = {
  alice: { email: 'alice@example.com', email_verified: true, groups: ['engineering'] },
  mallory: { email: 'mallory@example.com', email_verified: true, groups: ['engineering'] },
  unverified: { email: 'alice@example.com', email_verified: false, groups: ['engineering'] },
  contractor: { email: 'bob@example.com', email_verified: true, groups: ['contractors'] },
};

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
    cookies: { keys: ['test-cookie-key'] },
    async findAccount(ctx, id) {
      const claims = accounts[id];
      if (!claims) return undefined;
      return { accountId: id, async claims() { return { sub: id, ...claims }; } };
    },
  });
  server.on('request', provider.callback());
  console.log(JSON.stringify({ issuer }));
});
