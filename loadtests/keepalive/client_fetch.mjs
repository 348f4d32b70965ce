// An independent keep-alive client: Node's fetch (undici, the TypeScript
// SDK's transport): one `initialize` (2025-11-25 era, Mcp-Session-Id), then
// `tools/call` in a loop. Prints one JSON line: calls, errors, p50/p99 ms.
// Usage: node client_fetch.mjs URL TOOL CALLS [TOKEN] [ACTION]
const [url, tool, callsText, token, action] = process.argv.slice(2);
const calls = Number(callsText);
const headers = { accept: "application/json, text/event-stream", "content-type": "application/json" };
if (token) headers.authorization = `Bearer ${token}`;

function answer(body, contentType) {
  if (contentType.startsWith("application/json")) return JSON.parse(body);
  const data = body.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).filter(Boolean);
  return JSON.parse(data[data.length - 1]);
}

const init = await fetch(url, {
  method: "POST",
  headers,
  body: JSON.stringify({
    jsonrpc: "2.0", id: 0, method: "initialize",
    params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "fetch-bench", version: "1" } },
  }),
});
const session = init.headers.get("mcp-session-id");
await init.text();
const extra = { ...headers, "mcp-protocol-version": "2025-11-25" };
if (session) extra["mcp-session-id"] = session;
await (await fetch(url, { method: "POST", headers: extra, body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }) })).text();

const took = [];
let errors = 0;
for (let n = 0; n < calls; n++) {
  const args = { message: `m${n}` };
  if (action) args.action = action;
  const t0 = performance.now();
  const r = await fetch(url, {
    method: "POST",
    headers: extra,
    body: JSON.stringify({ jsonrpc: "2.0", id: n + 1, method: "tools/call", params: { name: tool, arguments: args } }),
  });
  const body = await r.text();
  took.push(performance.now() - t0);
  const reply = answer(body, r.headers.get("content-type") ?? "");
  if (reply?.result?.content?.[0]?.text !== `m${n}`) errors++;
}
took.sort((a, b) => a - b);
const at = (p) => Math.round(took[Math.round(p * (took.length - 1))] * 1000) / 1000;
console.log(JSON.stringify({ client: "node-fetch", calls, errors, p50_ms: at(0.5), p99_ms: at(0.99) }));
