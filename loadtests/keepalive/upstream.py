"""An echo upstream built with the Python MCP SDK (MCPServer, Streamable HTTP),
as in the issue's measurement. Usage: upstream.py PORT"""

import sys

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

server = MCPServer("echo-upstream")


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def echo(message: str) -> str:
    """Returns the message."""
    return message


if __name__ == "__main__":
    server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
