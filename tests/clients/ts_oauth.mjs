// The official TypeScript SDK's OAuth client against mcpgate, unattended.
//
// usage: node ts_oauth.mjs MCP_URL SIGNIN_LINK SLEEP_SECS
//
// The SDK gets the 401, discovers both metadata documents, registers itself
// (RFC 7591), and hands us the authorization URL (PKCE S256, `resource`); the
// browser stand-in below opens the one-time sign-in link, reads the consent
// page and presses Allow; the SDK exchanges the code. After listing tools it
// waits SLEEP_SECS (longer than the gateway's access tokens live), calls a
// tool — the 401 makes the SDK refresh — and prints one JSON object.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const peers = process.env.MCPGATE_PEERS || path.join(here, '..', '..', '.peers');
const sdk = (p) => import(pathToFileURL(
  path.join(peers, 'node', 'node_modules', '@modelcontextprotocol', 'sdk', 'dist', 'esm', p),
).href);
const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { UnauthorizedError } = await sdk('client/auth.js');

const [url, link, sleepSecs] = process.argv.slice(2);
const REDIRECT = 'http://127.0.0.1:53683/callback';

// A browser: cookies by name, redirects shown, not followed.
const cookies = new Map();
async function browse(target, init = {}) {
  const headers = { ...(init.headers || {}), cookie: [...cookies].map(([k, v]) => `${k}=${v}`).join('; ') };
  const res = await fetch(target, { ...init, headers, redirect: 'manual' });
  for (const set of res.headers.getSetCookie()) {
    const [pair, ...attrs] = set.split(';');
    const [name, value] = [pair.slice(0, pair.indexOf('=')), pair.slice(pair.indexOf('=') + 1)];
    if (attrs.some((a) => a.trim().toLowerCase() === 'max-age=0')) cookies.delete(name);
    else cookies.set(name, value);
  }
  return { status: res.status, location: res.headers.get('location'), body: await res.text() };
}
const form = (fields) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(fields).toString(),
});

class Provider {
  constructor() { this.history = []; this.pages = []; }
  get redirectUrl() { return REDIRECT; }
  get clientMetadata() {
    return {
      client_name: 'ts-sdk-oauth-test',
      redirect_uris: [REDIRECT],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  clientInformation() { return this.client; }
  saveClientInformation(info) { this.client = info; }
  tokens() { return this.current; }
  saveTokens(tokens) { this.current = tokens; this.history.push(tokens); }
  saveCodeVerifier(verifier) { this.verifier = verifier; }
  codeVerifier() { return this.verifier; }
  async redirectToAuthorization(authorizationUrl) {
    const origin = new URL(authorizationUrl).origin;
    let page = await browse(authorizationUrl.toString());
    this.pages.push(`authorize:${page.status}`);
    if (page.status === 401) {
      const shown = await browse(link);
      this.pages.push(`signin-page:${shown.status}`);
      page = await browse(`${origin}/oauth/signin`, form({ link: new URL(link).searchParams.get('link') }));
      this.pages.push(`signin:${page.status}`);
    }
    const ticket = /name=ticket value="([^"]+)"/.exec(page.body);
    if (page.status !== 200 || !ticket) throw new Error(`no consent page: ${page.status} ${page.body.slice(0, 300)}`);
    const answer = await browse(`${origin}/oauth/consent`, form({ ticket: ticket[1], decision: 'approve' }));
    this.pages.push(`consent:${answer.status}`);
    const back = new URL(answer.location);
    if (!answer.location.startsWith(REDIRECT)) throw new Error(`not sent back: ${answer.location}`);
    this.iss = back.searchParams.get('iss');
    this.code = back.searchParams.get('code');
  }
}

const provider = new Provider();
const client = new Client({ name: 'ts-oauth-test', version: '1.0' });
let transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
try {
  await client.connect(transport);
} catch (e) {
  if (!(e instanceof UnauthorizedError)) throw e;
  // The app's redirect URI received the code: hand it to the SDK, reconnect.
  await transport.finishAuth(provider.code);
  transport = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  await client.connect(transport);
}
const listed = await client.listTools();
const firstAccess = provider.current.access_token;
await new Promise((resolve) => setTimeout(resolve, Number(sleepSecs) * 1000));
const called = await client.callTool({ name: 'gateway_my_activity', arguments: {} });
console.log(JSON.stringify({
  tools: listed.tools.map((t) => t.name).sort(),
  call_after_refresh_is_error: Boolean(called.isError),
  client_id: provider.client?.client_id,
  token_sets: provider.history.length,
  first_access: firstAccess,
  last_access: provider.current.access_token,
  iss: provider.iss,
  pages: provider.pages,
}));
await client.close();
