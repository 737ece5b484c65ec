// TypeScript-SDK driver of the real-client matrix (test_real_clients.py, docs/clients.md): the
// official MCP TypeScript SDK (npm `@modelcontextprotocol/sdk`, Streamable HTTP) connects to each
// target URL in turn, runs the named steps and prints one JSON line per step
// ({"target", "step", "result" | "error" | "hang", "ms"}), then one line with what the client
// wrote through console.warn / console.error and process warnings for that target.
//
//   node ts_client.mjs --server everything|fastmcp --target direct=http://127.0.0.1:P/mcp \
//       [--target ...] --steps list,call,... [--timeout S]
//
// Every step is bounded by --timeout (a hang is reported, never waited out). What a step calls on
// each server is in steps.json (shared with py_client.py); the output is raw, the test normalizes.
import { readFileSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CreateMessageRequestSchema, ElicitRequestSchema, ListRootsRequestSchema,
  ResourceUpdatedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

const STEPS = JSON.parse(readFileSync(new URL("./steps.json", import.meta.url), "utf8"));
const ROOTS = [{ uri: "file:///work/repo", name: "repo" }];
const SAMPLED = "hi from the matrix model";
const ELICITED = { name: "Ada Lovelace" };

// Everything the client says on the console or as a process warning is a finding.
const said = [];
for (const level of ["warn", "error"]) {
  console[level] = (...args) => said.push(`console.${level}: ${args.map(String).join(" ")}`);
}
process.on("warning", (w) => said.push(`process warning: ${w.name}: ${w.message}`));

class HangError extends Error {}

function bounded(promise, ms) {
  let timer;
  const limit = new Promise((_, reject) => { timer = setTimeout(() => reject(new HangError()), ms); });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

// A seeded, incompressible data: URI of `kib` KiB (everything's large step; xorshift32).
function dataUri(kib) {
  const bytes = Buffer.alloc(kib * 1024);
  let x = 22;
  for (let i = 0; i < bytes.length; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    bytes[i] = x & 0xff;
  }
  return "data:application/octet-stream;base64," + bytes.toString("base64");
}

// What a raw answer says: the JSON-RPC error code of a JSON (or first SSE) message, or "result".
function jsonRpcCode(text) {
  const data = text.trimStart().startsWith("{") ? text : (text.match(/^data: ?(.*)$/m) ?? [])[1];
  try {
    const message = JSON.parse(data);
    return message.error ? message.error.code : "result";
  } catch {
    return null;
  }
}

function errorOf(e) {
  if (e instanceof HangError) return null;
  if (typeof e?.code === "number") {
    const out = { code: e.code, message: e.message };
    if (e.data && typeof e.data === "object") {
      out.data = Object.fromEntries(["decision", "rule"].filter((k) => k in e.data).map((k) => [k, e.data[k]]));
    }
    return out;
  }
  return { type: e?.name ?? typeof e, message: String(e?.message ?? e).slice(0, 300) };
}

class Driver {
  constructor(url, timeoutMs) {
    this.url = url;
    this.timeoutMs = timeoutMs;
    this.deletes = [];
    this.updates = new Set();
    this.onUpdate = () => {};
    const record = async (input, init) => {
      const response = await fetch(input, init);
      if ((init?.method ?? "GET") === "DELETE") this.deletes.push(response.status);
      return response;
    };
    this.transport = new StreamableHTTPClientTransport(new URL(url), { fetch: record });
    this.client = new Client({ name: "matrix-ts", version: "1.0.0" },
      { capabilities: { sampling: {}, elicitation: {}, roots: { listChanged: true } } });
    this.client.setRequestHandler(CreateMessageRequestSchema, async () => (
      { role: "assistant", model: "matrix-model", content: { type: "text", text: SAMPLED } }));
    this.client.setRequestHandler(ElicitRequestSchema, async () => ({ action: "accept", content: ELICITED }));
    this.client.setRequestHandler(ListRootsRequestSchema, async () => ({ roots: ROOTS }));
    this.client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => {
      this.updates.add(n.params.uri);
      this.onUpdate();
    });
  }

  connect() { return this.client.connect(this.transport); }

  async call(tool, args, options = {}) {
    const result = await this.client.callTool({ name: tool, arguments: args }, undefined,
      { timeout: this.timeoutMs, ...options });
    return { content: result.content, isError: Boolean(result.isError) };
  }
}

async function runStep(d, server, step) {
  const spec = STEPS[server][step] ?? {};
  switch (step) {
    case "list":
      return (await d.client.listTools()).tools.map((t) => t.name).sort();
    case "call": case "denied": case "sampling": case "elicitation": case "roots":
      return d.call(spec.tool, spec.args);
    case "progress": {
      const seen = [];
      const result = await d.call(spec.tool, spec.args, { onprogress: (p) => seen.push([p.progress, p.total]) });
      return { progress: seen, result };
    }
    case "cancel": {
      const args = { ...spec.args };
      const tag = Math.random().toString(16).slice(2, 10);
      if (spec.check_tool) args.tag = tag;
      const abort = new AbortController();
      const timer = setTimeout(() => abort.abort("matrix cancel"), 800);
      let cancelled = false;
      try {
        await d.call(spec.tool, args, { signal: abort.signal });
      } catch (e) {
        cancelled = abort.signal.aborted;
        if (!cancelled) throw e;
      } finally {
        clearTimeout(timer);
      }
      const out = { cancelled };
      if (spec.check_tool) {
        const seen = await d.call(spec.check_tool, { tag });
        out.server = seen.content[0].text.replace(tag, "<tag>");
      }
      out.after = await d.call(STEPS[server].call.tool, STEPS[server].call.args);
      return out;
    }
    case "subscribe": {
      await d.client.subscribeResource({ uri: spec.uri });
      const heard = new Promise((resolve) => { d.onUpdate = resolve; });
      const tool = await d.call(spec.tool, spec.args);
      await Promise.race([heard, new Promise((r) => setTimeout(r, 5000))]);
      if (server === "everything") await d.call(spec.tool, spec.args); // stop the 5 s updates
      await d.client.unsubscribeResource({ uri: spec.uri });
      return { tool, updated: [...d.updates].sort() };
    }
    case "large": {
      const args = { ...spec.args };
      if (spec.data_uri_kib) args.data = dataUri(spec.data_uri_kib);
      return d.call(spec.tool, args);
    }
    case "delete": {
      const sid = d.transport.sessionId;
      await d.transport.terminateSession();
      await d.client.close();
      let probe = null;
      if (sid) {
        const r = await fetch(d.url, {
          method: "POST",
          headers: { "mcp-session-id": sid, "content-type": "application/json",
                     accept: "application/json, text/event-stream", "mcp-protocol-version": "2025-11-25" },
          body: JSON.stringify({ jsonrpc: "2.0", id: 99, method: "tools/list" }),
        });
        probe = { status: r.status, answer: jsonRpcCode(await r.text()) };
      }
      return { had_session: Boolean(sid), delete_statuses: d.deletes, after_delete: probe };
    }
    default:
      throw new Error(`unknown step ${step}`);
  }
}

function emit(target, step, t0, fields) {
  process.stdout.write(JSON.stringify({ target, step, ms: Date.now() - t0, ...fields }) + "\n");
}

async function runTarget(server, name, url, steps, timeoutMs) {
  said.length = 0;
  process.stderr.write(`== target ${name}\n`);
  const d = new Driver(url, timeoutMs);
  let t0 = Date.now();
  try {
    await bounded(d.connect(), timeoutMs);
  } catch (e) {
    const error = errorOf(e);
    emit(name, "connect", t0, error ? { error } : { hang: true });
    steps = [];
  }
  for (const step of steps) {
    t0 = Date.now();
    try {
      emit(name, step, t0, { result: await bounded(runStep(d, server, step), timeoutMs) });
    } catch (e) {
      const error = errorOf(e);
      emit(name, step, t0, error ? { error } : { hang: true });
    }
  }
  t0 = Date.now();
  try {
    await bounded(d.client.close(), timeoutMs);
  } catch (e) {
    const error = errorOf(e);
    emit(name, "close", t0, error ? { error } : { hang: true });
  }
  process.stdout.write(JSON.stringify({ target: name, warnings: [...said] }) + "\n");
}

function parse(argv) {
  const out = { targets: [], timeout: 15 };
  for (let i = 0; i < argv.length; i += 2) {
    const [key, value] = [argv[i], argv[i + 1]];
    if (key === "--server") out.server = value;
    else if (key === "--target") out.targets.push(value);
    else if (key === "--steps") out.steps = value.split(",").filter(Boolean);
    else if (key === "--timeout") out.timeout = Number(value);
    else throw new Error(`unknown argument ${key}`);
  }
  if (!STEPS[out.server] || !out.targets.length || !out.steps) {
    throw new Error("usage: ts_client.mjs --server NAME --target NAME=URL --steps a,b [--timeout S]");
  }
  return out;
}

const args = parse(process.argv.slice(2));
for (const target of args.targets) {
  const at = target.indexOf("=");
  await runTarget(args.server, target.slice(0, at), target.slice(at + 1), args.steps, args.timeout * 1000);
}
// Exit once stdout is flushed (a pipe is written asynchronously; the SDK may keep timers alive).
await new Promise((resolve) => process.stdout.write("", resolve));
process.exit(0);
