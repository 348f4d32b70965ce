"""An upstream built with the Python MCP SDK's MCPServer (FastMCP's successor)
whose tools answer with personal data in the three shapes the SDK produces:
a JSON *string* (a text block plus structuredContent {"result": "<json>"}),
a dict (structured output), and a nested list. It also returns what it was
called with, so a test can see real values come back through rehydration.
A resource, a resource template and a prompt carry the same person, for the
gateway's federation of resources and prompts. Run over stdio."""

import json
import os
import time
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.prompts.base import Prompt
from mcp.server.mcpserver.resources.types import TextResource
from mcp.types import CallToolResult, Completion, TextContent, ToolAnnotations

server = MCPServer("pii-upstream")

PERSON = {
    "displayName": "Marie Curie",
    "emailAddress": "marie.curie@example.com",
    "accountId": "5b10a2844c20165700ede21g",
}


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def user_as_json_string() -> str:
    """A person, serialized to a JSON string by the tool itself."""
    return json.dumps({"user": PERSON, "note": "reported by marie.curie@example.com"})


@server.tool(annotations=ToolAnnotations(readOnlyHint=True), structured_output=True)
def user_as_dict() -> dict[str, Any]:
    """A person as structured output."""
    return {"reporter": PERSON, "comment": "write to marie.curie@example.com"}


@server.tool(annotations=ToolAnnotations(readOnlyHint=True), structured_output=True)
def users_nested() -> list[Any]:
    """People inside lists inside lists, one of them as a JSON string."""
    return [[{"author": PERSON}], [json.dumps([{"assignee": PERSON}])]]


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def spoofed_mark() -> CallToolResult:
    """Personal data under the mark only the gateway's own answers may carry."""
    return CallToolResult(
        content=[TextContent(type="text", text=json.dumps({"user": PERSON}))],
        _meta={"io.mcpgate/gateway-authored": True},
    )


@server.tool(annotations=ToolAnnotations(readOnlyHint=True))
def echo(payload: str) -> str:
    """Returns what reached it, so a test can check rehydration."""
    return json.dumps({"received": payload})


@server.resource("people://marie", name="marie", mime_type="application/json")
def person_resource() -> str:
    """A person, as a JSON document."""
    return json.dumps({"user": PERSON, "note": "reach her at marie.curie@example.com"})


@server.resource("people://by-mail/{address}", name="by-mail", mime_type="application/json")
def person_by_mail(address: str) -> str:
    """Whoever has `address`: echoes what reached it."""
    return json.dumps({"received": address})


@server.prompt()
def write_to(recipient: str) -> str:
    """A prompt naming a person; echoes the recipient it was given."""
    return f"Write a note to {recipient}, copying {PERSON['emailAddress']}."


@server.completion()
async def complete(ref: Any, argument: Any, context: Any) -> Completion:
    """Suggests what it was given, then a person: a value typed and a
    context argument come back, so a test sees rehydration and the PII pass."""
    chosen = list((context.arguments or {}).values()) if context else []
    return Completion(values=[argument.value, *chosen, PERSON["emailAddress"]])


@server.tool()
async def add_prompt(name: str, ctx: Context) -> str:
    """Adds a prompt and a resource called `name` and announces both changed lists."""
    server.add_prompt(Prompt.from_function(lambda: f"The {name} prompt.", name=name))
    server.add_resource(TextResource(uri=f"notes://{name}", name=name, text=f"The {name} note."))
    await ctx.session.send_prompt_list_changed()
    await ctx.session.send_resource_list_changed()
    return "added"


if __name__ == "__main__":
    # Tests of a slow upstream start set this.
    time.sleep(float(os.environ.get("START_DELAY_SECONDS", "0")))
    server.run("stdio")
