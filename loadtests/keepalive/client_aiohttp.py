"""An independent keep-alive client (aiohttp, one connection reused): one
`initialize` (2025-11-25 era, Mcp-Session-Id), then `tools/call` in a loop.
Prints one JSON line: calls, errors, p50/p99 ms.
Usage: client_aiohttp.py URL TOOL CALLS [TOKEN] [ACTION]"""

import asyncio
import json
import statistics
import sys
import time

import aiohttp


def answer(body: str, content_type: str) -> dict:
    """The JSON-RPC answer in a JSON body or in the last SSE `data:` event."""
    if content_type.startswith("application/json"):
        return json.loads(body)
    data = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
    return json.loads([d for d in data if d][-1])


async def main() -> None:
    url, tool, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
    token = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] else None
    action = sys.argv[5] if len(sys.argv) > 5 else None
    headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:
        init = {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "aiohttp-bench", "version": "1"},
            },
        }
        async with http.post(url, json=init) as r:
            session = r.headers.get("mcp-session-id")
            await r.text()
        extra = {"mcp-session-id": session} if session else {}
        extra["mcp-protocol-version"] = "2025-11-25"
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with http.post(url, json=note, headers=extra) as r:
            await r.read()
        took, errors = [], 0
        for n in range(calls):
            arguments = {"message": f"m{n}"}
            if action:
                arguments["action"] = action
            call = {
                "jsonrpc": "2.0",
                "id": n + 1,
                "method": "tools/call",
                "params": {"name": tool, "arguments": arguments},
            }
            t0 = time.perf_counter()
            async with http.post(url, json=call, headers=extra) as r:
                body = await r.text()
                ctype = r.headers.get("content-type", "")
            took.append((time.perf_counter() - t0) * 1000)
            reply = answer(body, ctype)
            text = reply.get("result", {}).get("content", [{}])[0].get("text")
            if text != f"m{n}":
                errors += 1
        took.sort()
        print(
            json.dumps(
                {
                    "client": "aiohttp",
                    "calls": calls,
                    "errors": errors,
                    "p50_ms": round(statistics.median(took), 3),
                    "p99_ms": round(took[int(0.99 * (len(took) - 1))], 3),
                }
            )
        )


asyncio.run(main())
