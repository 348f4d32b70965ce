"""A synchronous handle on the gateway's tools for Windmill scripts.

The official ``mcp`` SDK is asynchronous; Windmill scripts usually are not. The
handle runs one MCP client on its own event loop thread and exposes each tool
the gateway offers to this job as a method: ``gw.slack_write_actions(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import Implementation, TextContent

from .errors import CallRefused, ExchangeRefused, GatewayError, ToolFailed

T = TypeVar("T")

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:token-exchange"
SUBJECT_TOKEN_TYPE = "urn:mcpgate:params:oauth:token-type:windmill-job-token"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
DEFAULT_RESOURCE = "f/mcpgate/gateway"

Declaration = Sequence[Mapping[str, Sequence[str]]]


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    return url[: -len("/mcp")] if url.endswith("/mcp") else url


def gateway_settings(env: Mapping[str, str]) -> tuple[str, str]:
    """The gateway's URL and this flow's service-account token: from
    ``MCPGATE_URL``/``MCPGATE_TOKEN``, else the Windmill resource named by
    ``MCPGATE_RESOURCE`` (fields ``url`` and ``token``)."""
    url, token = env.get("MCPGATE_URL"), env.get("MCPGATE_TOKEN")
    if url and token:
        return _base_url(url), token
    resource_path = env.get("MCPGATE_RESOURCE", DEFAULT_RESOURCE)
    try:
        import wmill  # only inside Windmill workers
    except ImportError:
        raise GatewayError(
            "set MCPGATE_URL and MCPGATE_TOKEN, or run inside Windmill with a "
            f"resource '{resource_path}' holding the gateway's url and token"
        ) from None
    resource = wmill.get_resource(resource_path)
    try:
        return _base_url(str(resource["url"])), str(resource["token"])
    except (KeyError, TypeError):
        raise GatewayError(f"Windmill resource '{resource_path}' needs fields 'url' and 'token'") from None


def exchange_job_token(
    base_url: str, actor_token: str, declaration: Declaration, env: Mapping[str, str], timeout: float = 30.0
) -> dict[str, Any]:
    """RFC 8693 token exchange: this job's ``WM_TOKEN`` for a grant acting as the flow's owner."""
    missing = [name for name in ("WM_TOKEN", "WM_JOB_ID", "WM_WORKSPACE") if not env.get(name)]
    if missing:
        raise GatewayError(f"not running in a Windmill job: {', '.join(missing)} not set")
    fields = {
        "grant_type": GRANT_TYPE,
        "subject_token": env["WM_TOKEN"],
        "subject_token_type": SUBJECT_TOKEN_TYPE,
        "actor_token": actor_token,
        "actor_token_type": ACCESS_TOKEN_TYPE,
        "workspace": env["WM_WORKSPACE"],
        "job_id": env["WM_JOB_ID"],
        "gateway_services": json.dumps([{k: list(v) for k, v in entry.items()} for entry in declaration]),
    }
    if env.get("WM_FLOW_JOB_ID"):
        fields["flow_job_id"] = env["WM_FLOW_JOB_ID"]
    request = urllib.request.Request(
        f"{base_url}/oauth/token",
        data=urllib.parse.urlencode(fields).encode(),
        headers={"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (operator's URL)
            body: dict[str, Any] = json.loads(response.read())
            return body
    except urllib.error.HTTPError as e:
        try:
            error = json.loads(e.read())
        except ValueError:
            raise GatewayError(f"token exchange failed with HTTP {e.code}") from None
        raise ExchangeRefused(
            str(error.get("reason", error.get("error", "refused"))),
            str(error.get("error_description", "")),
            oauth_error=error.get("error"),
        ) from None
    except urllib.error.URLError as e:
        raise GatewayError(f"the gateway at {base_url} did not answer: {e.reason}") from None


class Gateway:
    """The gateway's tools as methods. Use as a context manager, or ``close()``."""

    def __init__(
        self, base_url: str, token: str, *, grant_id: str | None = None, scope: str | None = None
    ) -> None:
        self.base_url = base_url
        self.grant_id = grant_id
        self.scope = scope
        self._token = token
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcpgate-client", daemon=True)
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()
        try:
            self._client: Client = self._run(self._open())
            listed = self._run(self._client.list_tools())
        except BaseException:
            self.close()
            raise
        self.tools: dict[str, str] = {tool.name: tool.description or "" for tool in listed.tools}

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _open(self) -> Client:
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {self._token}"})
        await self._stack.enter_async_context(http)
        transport = streamable_http_client(f"{self.base_url}/mcp", http_client=http)
        client = Client(transport, client_info=Implementation(name="mcpgate-python", version="0.1.0"))
        return await self._stack.enter_async_context(client)

    def call(self, tool: str, /, **arguments: Any) -> Any:
        """Call ``tool``; returns its structured result, else its text (JSON-decoded when it is JSON)."""
        try:
            result = self._run(self._client.call_tool(tool, arguments))
        except MCPError as e:
            data = e.error.data if isinstance(e.error.data, dict) else {}
            reason = data.get("reason")
            if reason:
                raise CallRefused(str(reason), e.error.message) from None
            raise GatewayError(f"{tool}: {e.error.message}") from None
        texts = [c.text for c in result.content if isinstance(c, TextContent)]
        text = "".join(texts)
        if result.is_error:
            raise ToolFailed(tool, text)
        if result.structured_content is not None:
            return result.structured_content
        try:
            return json.loads(text)
        except ValueError:
            return text

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or "tools" not in self.__dict__:
            raise AttributeError(name)
        if name not in self.tools:
            offered = ", ".join(sorted(self.tools))
            raise AttributeError(f"the gateway offers no tool '{name}' to this job (it offers: {offered})")
        return functools.partial(self.call, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.__dict__.get("tools", {})))

    def close(self) -> None:
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                self._run(self._stack.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def connect(
    gateway_services: Declaration | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Gateway:
    """Connect to the gateway from a Windmill job.

    With ``gateway_services`` (``[{"bigquery": ["read"]}, {"slack": ["write"]}]``)
    the job's token is exchanged for a grant acting as the flow's owner; without,
    the job connects as its service account.
    """
    env = os.environ if env is None else env
    if url is None or token is None:
        found_url, found_token = gateway_settings(env)
        url, token = url or found_url, token or found_token
    base = _base_url(url)
    if not gateway_services:
        return Gateway(base, token)
    issued = exchange_job_token(base, token, gateway_services, env)
    return Gateway(
        base, str(issued["access_token"]), grant_id=issued.get("grant_id"), scope=issued.get("scope")
    )
