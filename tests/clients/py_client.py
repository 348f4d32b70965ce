"""A real MCP client (the official Python SDK) driven by the Rust tests.

usage: py_client.py URL TOKEN MODE STEPS_JSON
  MODE: auto (negotiates 2026-07-28, stateless) or legacy (initialize + session)
  STEPS_JSON: [{"op": "list"} | {"op": "call", "tool": T, "args": {...}}, ...]
Prints one JSON object: {"protocol": ..., "results": [...]}; each result is
{"tools": [names]} or {"content": ..., "is_error": bool} or {"error": {...}}.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import Implementation


async def main() -> None:
    url, token, mode, steps = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    http: httpx2.AsyncClient = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    results = []
    async with http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(
            transport,
            mode=mode,
            client_info=Implementation(name="py-test-client", version="1.0"),
        ) as client:
            for step in steps:
                try:
                    if step["op"] == "list":
                        listed = await client.list_tools()
                        results.append({"tools": sorted(t.name for t in listed.tools)})
                    elif step["op"] == "call":
                        out = await client.call_tool(step["tool"], step.get("args", {}))
                        texts = [c.text for c in out.content if getattr(c, "type", "") == "text"]
                        results.append({"content": texts, "is_error": bool(out.is_error)})
                except MCPError as e:
                    err = e.error
                    results.append({"error": {"code": err.code, "message": err.message, "data": err.data}})
            print(json.dumps({"protocol": client.protocol_version, "results": results}))


asyncio.run(main())
