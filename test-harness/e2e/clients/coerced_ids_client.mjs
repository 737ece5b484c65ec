// The official MCP TypeScript SDK against the hostile server (test_hostile_responses.py), every
// answer's id written another way the SDK still ties to its request (the server's shape
// `answer_id`: "7", 7.0, "0x7", " 7 "). Lists the tools and calls `dump_env` and `fetch_page`,
// then prints one JSON line: what the SDK handed the application for each.
//
//   node coerced_ids_client.mjs --url http://127.0.0.1:P/mcp --shape '{"answer_id":"string"}'
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

function arg(name) {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`--${name} is required`);
  return process.argv[i + 1];
}

const transport = new StreamableHTTPClientTransport(new URL(arg("url")), {
  requestInit: { headers: { "x-hostile-shape": arg("shape"), "x-case": "ts-coerced-ids" } },
});
const client = new Client({ name: "coerced-ids", version: "1.0.0" });
const out = {};
const outcome = async (call) => {
  try {
    return { result: await call() };
  } catch (e) {
    return { error: { code: e?.code ?? null, message: String(e?.message ?? e) } };
  }
};
await client.connect(transport);
const listed = await outcome(() => client.listTools());
out.tools = listed.result ? listed.result.tools.map((t) => t.name) : listed;
out.dump_env = await outcome(() => client.callTool({ name: "dump_env", arguments: {} }));
out.fetch_page = await outcome(() =>
  client.callTool({ name: "fetch_page", arguments: { url: "https://docs.example/notes" } }));
await client.close();
console.log(JSON.stringify(out));
