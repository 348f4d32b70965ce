"""A real MCP client (the official Python SDK) driven by the Rust tests.

usage: py_client.py URL TOKEN MODE STEPS_JSON [ELICIT]
  MODE: auto (negotiates 2026-07-28, stateless) or legacy (initialize + session)
  ELICIT: approve | decline — declare form elicitation and answer every request so
  STEPS_JSON: [{"op": "list"} | {"op": "call", "tool": T, "args": {...}}, ...]
Prints one JSON object: {"protocol": ..., "results": [...]}; each result is
{"tools": [names]} or {"content": ..., "is_error": bool} or {"error": {...}}.
"""

import asyncio
import json
import sys

import httpx2
from mcp import Client, MCPError, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import Implementation


ASKED: list[str] = []


def elicitation_answer(choice: str):  # type: ignore[no-untyped-def]
    async def answer(context, params):  # type: ignore[no-untyped-def]
        ASKED.append(params.message)
        if choice == "approve":
            return types.ElicitResult(action="accept", content={"approve": True})
        return types.ElicitResult(action="decline")

    return answer


async def main() -> None:
    url, token, mode, steps = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    elicit = sys.argv[5] if len(sys.argv) > 5 else None
    http: httpx2.AsyncClient = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
    results = []
    async with http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(
            transport,
            mode=mode,
            client_info=Implementation(name="py-test-client", version="1.0"),
            elicitation_callback=elicitation_answer(elicit) if elicit else None,
        ) as client:
            for step in steps:
                try:
                    if step["op"] == "list":
                        listed = await client.list_tools()
                        results.append({"tools": sorted(t.name for t in listed.tools)})
                    elif step["op"] == "call":
                        out = await client.call_tool(step["tool"], step.get("args", {}))
                        texts = [c.text for c in out.content if getattr(c, "type", "") == "text"]
                        results.append(
                            {"content": texts, "is_error": bool(out.is_error), "structured": out.structured_content}
                        )
                except MCPError as e:
                    err = e.error
                    results.append({"error": {"code": err.code, "message": err.message, "data": err.data}})
            print(json.dumps({"protocol": client.protocol_version, "results": results, "asked": ASKED}))


asyncio.run(main())
