"""A deliberately misbehaving MCP server over stdio, for fault tests.

Speaks plain JSON-RPC 2.0 lines (MCP stdio framing). Tools:
  echo(message)   read   answers, and appends the message to $FAULTY_LOG
  crash()         write  the process exits mid-call
  hang()          write  never answers
  garbage()       write  answers with bytes that are not JSON-RPC
Each start appends "start" to $FAULTY_LOG, so tests can count restarts.
"""

import json
import os
import sys
import time

LOG = os.environ.get("FAULTY_LOG")


def log(line: str) -> None:
    if LOG:
        with open(LOG, "a") as f:
            f.write(line + "\n")


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


TOOLS = [
    {
        "name": "echo",
        "description": "Echo a message",
        "inputSchema": {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]},
        "annotations": {"readOnlyHint": True},
    },
    {"name": "crash", "description": "Exit mid-call", "inputSchema": {"type": "object"}},
    {"name": "hang", "description": "Never answer", "inputSchema": {"type": "object"}},
    {"name": "garbage", "description": "Answer with junk", "inputSchema": {"type": "object"}},
]

log("start")
for raw in sys.stdin:
    try:
        msg = json.loads(raw)
    except ValueError:
        continue
    method, ident = msg.get("method"), msg.get("id")
    if ident is None:
        continue
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": ident, "result": {
            "protocolVersion": msg["params"].get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "faulty", "version": "1"},
        }})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": ident, "result": {"tools": TOOLS}})
    elif method == "tools/call":
        name = msg["params"]["name"]
        args = msg["params"].get("arguments") or {}
        if name == "echo":
            log("echo " + args.get("message", ""))
            send({"jsonrpc": "2.0", "id": ident, "result": {"content": [{"type": "text", "text": args.get("message", "")}]}})
        elif name == "crash":
            os._exit(3)
        elif name == "hang":
            time.sleep(3600)
        elif name == "garbage":
            sys.stdout.write("\x00\x01 this is not json {{{\n")
            sys.stdout.flush()
        else:
            send({"jsonrpc": "2.0", "id": ident, "error": {"code": -32602, "message": "unknown tool"}})
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": ident, "result": {}})
    else:
        send({"jsonrpc": "2.0", "id": ident, "error": {"code": -32601, "message": "method not found"}})
