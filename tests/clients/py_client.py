"""A real MCP client (the official Python SDK) driven by the Rust tests.

usage: py_client.py URL TOKEN MODE STEPS_JSON [ELICIT]
  MODE: auto (negotiates 2026-07-28, stateless) or legacy (initialize + session)
  ELICIT: approve | decline — declare form elicitation and answer every request so
  STEPS_JSON: [{"op": "list"} | {"op": "call", "tool": T, "args": {...}}, ...]
    and for resources and prompts: {"op": "resources"} | {"op": "templates"} |
    {"op": "prompts"} | {"op": "read", "uri": U} | {"op": "prompt", "name": N, "args": {...}} |
    {"op": "complete", "ref": {"type": "ref/prompt", "name": N} | {"type": "ref/resource", "uri": U},
     "argument": {"name": A, "value": V}, "context": {...}} |
    {"op": "listen", "uris": [U...], "prompts": bool, "call": {"tool": T, "args": {...}}}
     (2026-07-28: the first event within 15 s, after the optional call)
Prints one JSON object: {"protocol": ..., "results": [...]}; each result is
{"tools": [names]} or {"content": ..., "is_error": bool} or {"error": {...}},
{"resources"|"templates"|"prompts": [names]}, {"contents": [...]}, {"messages": [...]},
{"values": [...]}, {"updated": uri} or {"event": name}.
"""

import asyncio
import json
import sys

import anyio
import httpx2
from mcp import Client, MCPError, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import Implementation, PromptReference, ResourceTemplateReference


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
                    elif step["op"] == "resources":
                        listed_r = await client.list_resources()
                        results.append({"resources": sorted(str(r.uri) for r in listed_r.resources)})
                    elif step["op"] == "templates":
                        listed_t = await client.list_resource_templates()
                        results.append({"templates": sorted(t.uri_template for t in listed_t.resource_templates)})
                    elif step["op"] == "prompts":
                        listed_p = await client.list_prompts()
                        results.append({"prompts": sorted(p.name for p in listed_p.prompts)})
                    elif step["op"] == "read":
                        read = await client.read_resource(step["uri"])
                        results.append({"contents": [c.model_dump(mode="json", exclude_none=True) for c in read.contents]})
                    elif step["op"] == "prompt":
                        got = await client.get_prompt(step["name"], step.get("args"))
                        results.append(
                            {"messages": [m.content.model_dump(mode="json", exclude_none=True) for m in got.messages]}
                        )
                    elif step["op"] == "complete":
                        ref = step["ref"]
                        reference = (
                            PromptReference(type="ref/prompt", name=ref["name"])
                            if ref["type"] == "ref/prompt"
                            else ResourceTemplateReference(type="ref/resource", uri=ref["uri"])
                        )
                        done = await client.complete(reference, step["argument"], step.get("context"))
                        results.append({"values": done.completion.values})
                    elif step["op"] == "listen":
                        async with client.listen(
                            resource_subscriptions=step.get("uris", []),
                            prompts_list_changed=step.get("prompts", False),
                        ) as sub:
                            if "call" in step:
                                await client.call_tool(step["call"]["tool"], step["call"].get("args", {}))
                            with anyio.fail_after(15):
                                async for event in sub:
                                    uri = getattr(event, "uri", None)
                                    results.append({"updated": str(uri)} if uri else {"event": type(event).__name__})
                                    break
                except MCPError as e:
                    err = e.error
                    results.append({"error": {"code": err.code, "message": err.message, "data": err.data}})
            print(json.dumps({"protocol": client.protocol_version, "results": results, "asked": ASKED}))


asyncio.run(main())
