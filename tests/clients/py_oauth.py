"""The official Python SDK's OAuth client provider against mcpgate, unattended.

usage: py_oauth.py MCP_URL SIGNIN_LINK SLEEP_SECS [CERT_PEM KEY_PEM]

With CERT_PEM and KEY_PEM the client registers by Client ID Metadata Document
instead: this script serves its document over HTTPS on loopback with that
certificate, and the client's `client_id` is the document's URL.

The SDK does everything a real client does: it gets the 401, discovers the
protected resource and authorization server metadata, registers itself (RFC
7591), sends the person to /oauth/authorize with PKCE S256 and `resource`, and
exchanges the code. The "person" is this script's browser stand-in: an HTTP
client with a cookie jar that opens the one-time sign-in link, reads the
consent page and presses Allow. After listing tools it waits SLEEP_SECS (the
gateway's access tokens are configured to outlive less than that), calls a
tool — the SDK refreshes its token — and prints one JSON object.

With the environment variable PY_OAUTH_STEP_UP set to {"tool": T, "arguments":
A}, the client calls T(A) after listing tools: against a gateway whose 401
challenges for a narrower scope (oauth.default_scope: mcp:read), the gateway's
403 insufficient_scope makes the SDK authorize again with the scope the 403
names (the browser is still signed in: straight to consent), and the call is
retried with the new token. The token sets' scopes are printed.
"""

import asyncio
import http.server
import json
import os
import re
import ssl
import sys
import threading
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from mcp.types import Implementation

REDIRECT = "http://127.0.0.1:53682/callback"


class Memory:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None
        self.history: list[OAuthToken] = []

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.history.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Browser:
    """Follows the sign-in and consent pages the way a person would."""

    def __init__(self, link: str) -> None:
        self.link = link
        self.http = httpx2.AsyncClient(follow_redirects=False, timeout=30)
        self.result: AuthorizationCodeResult | None = None
        self.pages: list[str] = []

    async def open(self, authorize_url: str) -> None:
        page = await self.http.get(authorize_url)
        self.pages.append(f"authorize:{page.status_code}")
        if page.status_code == 401:
            # Not signed in: use the one-time link (its page, then its button).
            query = parse_qs(urlparse(self.link).query)
            shown = await self.http.get(self.link)
            self.pages.append(f"signin-page:{shown.status_code}")
            origin = f"{urlparse(self.link).scheme}://{urlparse(self.link).netloc}"
            page = await self.http.post(f"{origin}/oauth/signin", data={"link": query["link"][0]})
            self.pages.append(f"signin:{page.status_code}")
        if page.status_code != 200 or "Allow access" not in page.text:
            raise RuntimeError(f"no consent page: {page.status_code} {page.text[:300]}")
        ticket = re.search(r'name=ticket value="([^"]+)"', page.text)
        if ticket is None:
            raise RuntimeError("consent page without a ticket")
        origin = f"{urlparse(authorize_url).scheme}://{urlparse(authorize_url).netloc}"
        answer = await self.http.post(
            f"{origin}/oauth/consent", data={"ticket": ticket.group(1), "decision": "approve"}
        )
        self.pages.append(f"consent:{answer.status_code}")
        location = answer.headers.get("location", "")
        if not location.startswith(REDIRECT):
            raise RuntimeError(f"consent did not send us back: {answer.status_code} {location}")
        params = parse_qs(urlparse(location).query)
        self.result = AuthorizationCodeResult(
            code=params["code"][0], state=params.get("state", [None])[0], iss=params.get("iss", [None])[0]
        )

    async def callback(self) -> AuthorizationCodeResult:
        assert self.result is not None
        return self.result


def serve_document(cert: str, key: str, document: dict[str, object]) -> str:
    """Serve `document` (its client_id filled in) over HTTPS; return its URL."""
    body: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body[0])))
            self.end_headers()
            self.wfile.write(body[0])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    url = f"https://127.0.0.1:{server.server_address[1]}/oauth/client.json"
    body.append(json.dumps({**document, "client_id": url}).encode())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return url


async def main() -> None:
    url, link, sleep_secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
    metadata_url = None
    if len(sys.argv) > 5:
        metadata_url = serve_document(
            sys.argv[4],
            sys.argv[5],
            {
                "client_name": "py-sdk-cimd-test",
                "redirect_uris": [REDIRECT],
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "none",
            },
        )
    step_up = json.loads(os.environ["PY_OAUTH_STEP_UP"]) if os.environ.get("PY_OAUTH_STEP_UP") else None
    storage = Memory()
    browser = Browser(link)
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="py-sdk-oauth-test",
            redirect_uris=[REDIRECT],  # type: ignore[list-item]
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.open,
        callback_handler=browser.callback,
        client_metadata_url=metadata_url,
    )
    out: dict[str, object] = {}
    async with httpx2.AsyncClient(auth=provider, timeout=30) as http:
        async with Client(
            streamable_http_client(url, http_client=http),
            client_info=Implementation(name="py-oauth-test", version="1.0"),
        ) as client:
            first = await client.list_tools()
            out["tools"] = sorted(t.name for t in first.tools)
            out["first_access"] = storage.tokens.access_token if storage.tokens else None
            if step_up:
                stepped = await client.call_tool(step_up["tool"], step_up["arguments"])
                out["step_up_is_error"] = bool(stepped.is_error)
                out["scopes"] = [t.scope for t in storage.history]
            await asyncio.sleep(sleep_secs)
            # A call, not a second list: 2026-07-28 clients cache tool lists.
            called = await client.call_tool("gateway_my_activity", {})
            out["call_after_refresh_is_error"] = bool(called.is_error)
    out["client_id"] = storage.client.client_id if storage.client else None
    out["metadata_url"] = metadata_url
    out["token_sets"] = len(storage.history)
    out["last_access"] = storage.tokens.access_token if storage.tokens else None
    out["last_refresh"] = storage.tokens.refresh_token if storage.tokens else None
    out["pages"] = browser.pages
    print(json.dumps(out))


asyncio.run(main())
