"""An MCP server that shows what trace context a call arrived with, for
tests/traces.rs (`_meta` keys of SEP-414, and HTTP headers).

Over stdio (no argument): plain JSON-RPC 2.0 lines. With `http`: a minimal
Streamable HTTP server on 127.0.0.1 (a free port, printed as `port <n>`),
answering each POST with JSON, 202 for notifications, 405 for GET. One tool:
  lookup(query)   read   answers with {"meta": <the request's _meta>,
                         "traceparent": <the HTTP header, over http>}
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOOLS = [
    {
        "name": "lookup",
        "description": "Look something up",
        "inputSchema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
        "annotations": {"readOnlyHint": True},
    },
]


def answer(msg: dict, traceparent: str | None) -> dict | None:
    """The answer to one JSON-RPC message (None for a notification)."""
    method, ident = msg.get("method"), msg.get("id")
    if ident is None:
        return None
    if method == "initialize":
        result = {
            "protocolVersion": msg["params"].get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "meta", "version": "1"},
        }
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call":
        seen = {"meta": msg["params"].get("_meta") or {}, "traceparent": traceparent}
        result = {"content": [{"type": "text", "text": json.dumps(seen)}]}
    elif method == "ping":
        result = {}
    else:
        return {"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": "method not found"}}
    return {"jsonrpc": "2.0", "id": ident, "result": result}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (the http.server convention)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        reply = answer(json.loads(body), self.headers.get("traceparent"))
        if reply is None:
            self.send_response(202)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(405)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_DELETE(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


if sys.argv[1:] == ["http"]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"port {server.server_address[1]}", flush=True)
    server.serve_forever()
else:
    for raw in sys.stdin:
        try:
            reply = answer(json.loads(raw), None)
        except ValueError:
            continue
        if reply is not None:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
