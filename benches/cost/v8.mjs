// A proxy-wasm (ABI 0.2.1) host in Node, to run the filter's .wasm under V8 as Envoy does
// (TurboFan only: Liftoff off) and time it per request, or profile it with `node --cpu-prof`.
// It replays one case of `benches/examples/cost.rs` (`cost dump <case> <dir>`) with the stream
// sequence of the test harness's wasmtime host (`wasm_stream` in benches/src/lib.rs):
// on_context_create, on_request_headers, on_request_body (end of stream), then for a request that
// went upstream on_response_headers and on_response_body, then on_log, on_done, on_delete.
// The hostcalls answer as the harness's do (test-harness/src/imports/), for the calls this path
// makes; the other imports return an error status, and every call is counted by name.
//
//   node benches/cost/v8.mjs <portcullis.wasm> <dump dir> [--n N] [--warmup W] [--reps R]
//
// Prints the median over R repetitions of (time of N requests) / N, measured after W warm-up
// requests (not timed), and the hostcalls per request. Under `node --cpu-prof`, the timed
// requests are the samples under `measure` (benches/cost/v8-profile.mjs reads them).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';

// Envoy's V8 compiles Wasm with TurboFan only. Set before the module is compiled.
setFlagsFromString('--no-liftoff');

const args = process.argv.slice(2);
const flag = (name, dflt) => {
  const i = args.indexOf(name);
  return i < 0 ? dflt : Number(args.splice(i, 2)[1]);
};
const N = flag('--n', 20000);
const WARMUP = flag('--warmup', 5000);
const REPS = flag('--reps', 5);
const [wasmPath, dumpDir] = args;
if (!wasmPath || !dumpDir || WARMUP < 2000) {
  console.error('usage: v8.mjs <portcullis.wasm> <dump dir> [--n N] [--warmup W>=2000] [--reps R]');
  process.exit(2);
}

// proxy_status_t values and WASI errno values the hostcalls return.
const OK = 0, NOT_FOUND = 1, BAD_ARGUMENT = 2, INVALID_MEMORY_ACCESS = 6, CAS_MISMATCH = 8;
const UNIMPLEMENTED = 12;
const ERRNO_BADF = 8, ERRNO_FAULT = 21, ERRNO_INVAL = 28, ERRNO_NOSYS = 52, ERRNO_NOTSUP = 58;
// proxy_log_level_t: info, the harness's (and Envoy's) default; warn and above are kept.
const LOG_LEVEL_INFO = 2, LOG_LEVEL_WARN = 3;
// The harness's clock: 1800000000000 ms since the epoch, standing still; monotonic 1 s.
const REALTIME_NS = 1_800_000_000_000n * 1_000_000n, MONOTONIC_NS = 1_000_000_000n;
const PLUGIN_NAME = 'portcullis'; // plugin_name, plugin_root_id and plugin_vm_id
const ROOT = 1;

// Bytes the host keeps (header names and values, properties, shared data) are byte strings:
// one char per byte (latin1). Reading them out of and into Wasm memory allocates no
// ArrayBuffer, which costs ~0.5 µs in V8 and would be the host's time, not the filter's.
const bytes = (text) => Buffer.from(text, 'utf8').toString('latin1');

// --- The case -----------------------------------------------------------------------------
const readJson = (f) => JSON.parse(readFileSync(join(dumpDir, f), 'utf8'));
const lower = (pairs) => pairs.map(([k, v]) => [bytes(k.toLowerCase()), bytes(v)]);
const input = {
  config: readFileSync(join(dumpDir, 'config.json')),
  requestHeaders: lower(readJson('request_headers.json')),
  requestBody: new Uint8Array(readFileSync(join(dumpDir, 'request_body'))),
  responseHeaders: lower(readJson('response_headers.json')),
  responseBody: new Uint8Array(readFileSync(join(dumpDir, 'response_body'))),
  forwarded: readJson('expect.json').forwarded,
};

// --- Host state ---------------------------------------------------------------------------
let memory, malloc, ex;
let mem = Buffer.alloc(0), dv = new DataView(new ArrayBuffer(0)); // views of Wasm memory
let phase = 'idle'; // 'start' | 'configure' | 'stream' | 'log' | 'lifecycle'
let current = null; // the stream of the running callback (null: the root context)
const streams = new Map();
const shared = new Map(); // key -> { value, cas }
let lastCas = 0;
const metrics = new Map(); // id -> { kind, value }
let nextMetric = 0;
let rng = 0x5eedn;
const deferred = []; // work Envoy does after the callback returns
const warnings = []; // log lines at warn or above, for an error message

// Views of the module's memory, renewed after it grew: growing detaches the old buffer, whose
// views then have length 0 (cheaper to test than reading `memory.buffer` on every access).
function views() {
  if (mem.length === 0) {
    mem = Buffer.from(memory.buffer);
    dv = new DataView(memory.buffer);
  }
}
const inMemory = (ptr, len) => ptr + len <= mem.length;
// The `len` bytes at `ptr` as a byte string, or null when outside memory.
function read(ptr, len) {
  views();
  ptr >>>= 0; len >>>= 0;
  return inMemory(ptr, len) ? mem.toString('latin1', ptr, ptr + len) : null;
}
function writeU32(ptr, v) {
  views();
  ptr >>>= 0;
  if (!inMemory(ptr, 4)) return false;
  dv.setUint32(ptr, v, true);
  return true;
}
function writeU64(ptr, v) {
  views();
  ptr >>>= 0;
  if (!inMemory(ptr, 8)) return false;
  dv.setBigUint64(ptr, v, true);
  return true;
}
// A block of `size` bytes from the module's allocator, or 0.
function allocate(size) {
  const addr = malloc(size) >>> 0;
  views();
  return addr !== 0 && inMemory(addr, size) ? addr : 0;
}
// Hands `data` (a byte string or a Uint8Array) to the module as hosts do: a block from its
// allocator, then the block's address and size at `ptrPtr` / `sizePtr`; empty data is address
// 0, size 0.
function copyOut(data, ptrPtr, sizePtr) {
  let addr = 0;
  if (data.length > 0) {
    addr = allocate(data.length);
    if (addr === 0) return INVALID_MEMORY_ACCESS;
    if (typeof data === 'string') mem.write(data, addr, 'latin1');
    else mem.set(data, addr);
  }
  return writeU32(ptrPtr, addr) && writeU32(sizePtr, data.length) ? OK : INVALID_MEMORY_ACCESS;
}

// A header map in the ABI's format, written straight into a block of the module's: count,
// (key length, value length) per entry, then each key and value NUL-terminated; integers
// little-endian u32. An empty map is zero bytes.
function copyOutPairs(pairs, ptrPtr, sizePtr) {
  let size = 0;
  if (pairs.length > 0) {
    size = 4 + 8 * pairs.length;
    for (const [k, v] of pairs) size += k.length + v.length + 2;
  }
  const addr = size > 0 ? allocate(size) : 0;
  if (size > 0 && addr === 0) return INVALID_MEMORY_ACCESS;
  if (size > 0) {
    dv.setUint32(addr, pairs.length, true);
    let at = addr + 4 + 8 * pairs.length;
    pairs.forEach(([k, v], i) => {
      dv.setUint32(addr + 4 + 8 * i, k.length, true);
      dv.setUint32(addr + 8 + 8 * i, v.length, true);
      mem.write(k, at, 'latin1'); at += k.length; mem[at++] = 0;
      mem.write(v, at, 'latin1'); at += v.length; mem[at++] = 0;
    });
  }
  return writeU32(ptrPtr, addr) && writeU32(sizePtr, size) ? OK : INVALID_MEMORY_ACCESS;
}

// One direction of a stream, as the host sees it.
function direction() {
  return {
    headers: [], headersSeen: false, headersAccessible: false, body: new Uint8Array(0),
    bodyAccessible: false, buffering: false, endSeen: false, endForwarded: false,
  };
}

// Headers (if held) and the buffered body go on; the filter loses access to both.
function release(d) {
  d.headersAccessible = false;
  d.bodyAccessible = false;
  d.buffering = false;
  if (d.endSeen) d.endForwarded = true;
}

// Map ids 0..3: request headers, request trailers, response headers, response trailers. No
// trailers ever arrive here: readable as empty, never writable. Other maps do not exist.
function headerMap(map) {
  if (current === null || (map !== 0 && map !== 2)) return null;
  return map === 0 ? current.req : current.resp;
}
function readableMap(map) {
  const d = headerMap(map);
  if (d === null) return null;
  return (phase === 'log' ? d.headersSeen : d.headersAccessible) ? d.headers : null;
}
function writableMap(map) {
  const d = headerMap(map);
  return d !== null && phase !== 'log' && d.headersAccessible ? d.headers : null;
}

// --- Hostcalls ----------------------------------------------------------------------------
const calls = {}; // name -> count; every import has a slot (see instantiate)

const env = {
  proxy_log(level, ptr, len) {
    calls.proxy_log++;
    if (level < 0 || level > 5) return BAD_ARGUMENT;
    const message = read(ptr, len);
    if (message === null) return INVALID_MEMORY_ACCESS;
    if (level >= LOG_LEVEL_WARN) warnings.push(Buffer.from(message, 'latin1').toString());
    return OK;
  },
  proxy_get_log_level(ret) {
    calls.proxy_get_log_level++;
    return writeU32(ret, LOG_LEVEL_INFO) ? OK : INVALID_MEMORY_ACCESS;
  },
  proxy_get_current_time_nanoseconds(ret) {
    calls.proxy_get_current_time_nanoseconds++;
    return writeU64(ret, REALTIME_NS) ? OK : INVALID_MEMORY_ACCESS;
  },
  // No timer is driven here: the request path is measured, not on_tick.
  proxy_set_tick_period_milliseconds() {
    calls.proxy_set_tick_period_milliseconds++;
    return OK;
  },
  proxy_set_effective_context(ctx) {
    calls.proxy_set_effective_context++;
    if (ctx === ROOT) current = null;
    else if (streams.has(ctx)) current = streams.get(ctx);
    else return BAD_ARGUMENT;
    return OK;
  },
  // As the harness: the plugin built-ins, then filter state `wasm.<x>` for a one-segment path.
  proxy_get_property(pathPtr, pathLen, retPtr, retLen) {
    calls.proxy_get_property++;
    const path = read(pathPtr, pathLen);
    if (path === null) return INVALID_MEMORY_ACCESS;
    if (path.length === 0 || path.includes('\0')) return NOT_FOUND;
    let value;
    if (path === 'plugin_name' || path === 'plugin_root_id' || path === 'plugin_vm_id') {
      value = PLUGIN_NAME;
    } else {
      value = current?.filterState.get(`wasm.${path}`);
      if (value === undefined) return NOT_FOUND;
    }
    return copyOut(value, retPtr, retLen);
  },
  proxy_set_property(pathPtr, pathLen, valuePtr, valueLen) {
    calls.proxy_set_property++;
    const path = read(pathPtr, pathLen);
    const value = read(valuePtr, valueLen);
    if (path === null || value === null) return INVALID_MEMORY_ACCESS;
    if (current === null) return NOT_FOUND;
    current.filterState.set(`wasm.${path}`, value);
    return OK;
  },
  proxy_get_shared_data(keyPtr, keyLen, retPtr, retLen, retCas) {
    calls.proxy_get_shared_data++;
    const key = read(keyPtr, keyLen);
    if (key === null) return INVALID_MEMORY_ACCESS;
    const entry = shared.get(key);
    if (entry === undefined) return NOT_FOUND;
    const status = copyOut(entry.value, retPtr, retLen);
    if (status !== OK) return status;
    return writeU32(retCas, entry.cas) ? OK : INVALID_MEMORY_ACCESS;
  },
  // A non-zero `cas` must match the stored token when the key exists; every write (even a
  // refused one, as in the harness) takes a new token.
  proxy_set_shared_data(keyPtr, keyLen, valuePtr, valueLen, cas) {
    calls.proxy_set_shared_data++;
    const key = read(keyPtr, keyLen);
    const value = read(valuePtr, valueLen);
    if (key === null || value === null) return INVALID_MEMORY_ACCESS;
    lastCas = (lastCas + 1) >>> 0 || 1;
    const entry = shared.get(key);
    if (entry !== undefined && cas !== 0 && cas >>> 0 !== entry.cas) return CAS_MISMATCH;
    shared.set(key, { value, cas: lastCas });
    return OK;
  },
  // Metric ids carry the kind in their low two bits (0 counter, 1 gauge, 2 histogram).
  proxy_define_metric(kind, namePtr, nameLen, retId) {
    calls.proxy_define_metric++;
    if (kind < 0 || kind > 2) return BAD_ARGUMENT;
    if (read(namePtr, nameLen) === null) return INVALID_MEMORY_ACCESS;
    const id = ((++nextMetric << 2) | kind) >>> 0;
    metrics.set(id, { kind, value: 0n });
    return writeU32(retId, id) ? OK : INVALID_MEMORY_ACCESS;
  },
  proxy_increment_metric(id, delta) {
    calls.proxy_increment_metric++;
    const m = metrics.get(id >>> 0);
    if (m === undefined) return NOT_FOUND;
    if (m.kind === 2 || (m.kind === 0 && delta <= 0n)) return BAD_ARGUMENT;
    m.value += delta;
    return OK;
  },
  proxy_record_metric(id, value) {
    calls.proxy_record_metric++;
    const m = metrics.get(id >>> 0);
    if (m === undefined) return NOT_FOUND;
    m.value = m.kind === 1 ? value : m.value + value;
    return OK;
  },
  proxy_get_metric(id, ret) {
    calls.proxy_get_metric++;
    const m = metrics.get(id >>> 0);
    if (m === undefined || m.kind === 2) return m === undefined ? NOT_FOUND : BAD_ARGUMENT;
    return writeU64(ret, BigInt.asUintN(64, m.value)) ? OK : INVALID_MEMORY_ACCESS;
  },
  // An unavailable map reads as empty (Envoy).
  proxy_get_header_map_pairs(map, retPtr, retLen) {
    calls.proxy_get_header_map_pairs++;
    if (map < 0 || map > 7) return BAD_ARGUMENT;
    return copyOutPairs(readableMap(map) ?? [], retPtr, retLen);
  },
  proxy_get_header_map_value(map, keyPtr, keyLen, retPtr, retLen) {
    calls.proxy_get_header_map_value++;
    if (map < 0 || map > 7) return BAD_ARGUMENT;
    const key = read(keyPtr, keyLen);
    if (key === null) return INVALID_MEMORY_ACCESS;
    const pairs = readableMap(map);
    if (pairs === null) return phase === 'log' ? NOT_FOUND : BAD_ARGUMENT;
    const entry = pairs.find(([k]) => k === key.toLowerCase());
    return entry === undefined ? NOT_FOUND : copyOut(entry[1], retPtr, retLen);
  },
  proxy_add_header_map_value(map, keyPtr, keyLen, valuePtr, valueLen) {
    calls.proxy_add_header_map_value++;
    return editHeader(map, keyPtr, keyLen, valuePtr, valueLen, (pairs, key, value) => {
      pairs.push([key, value]);
    });
  },
  // Sets the first entry of the key and drops the others, or appends.
  proxy_replace_header_map_value(map, keyPtr, keyLen, valuePtr, valueLen) {
    calls.proxy_replace_header_map_value++;
    return editHeader(map, keyPtr, keyLen, valuePtr, valueLen, (pairs, key, value) => {
      const first = pairs.findIndex(([k]) => k === key);
      if (first < 0) {
        pairs.push([key, value]);
        return;
      }
      pairs[first][1] = value;
      for (let i = pairs.length - 1; i > first; i--) if (pairs[i][0] === key) pairs.splice(i, 1);
    });
  },
  proxy_remove_header_map_value(map, keyPtr, keyLen) {
    calls.proxy_remove_header_map_value++;
    if (map < 0 || map > 7) return BAD_ARGUMENT;
    const key = read(keyPtr, keyLen);
    if (key === null) return INVALID_MEMORY_ACCESS;
    const pairs = writableMap(map);
    if (pairs === null) return BAD_ARGUMENT;
    const lowered = key.toLowerCase();
    for (let i = pairs.length - 1; i >= 0; i--) if (pairs[i][0] === lowered) pairs.splice(i, 1);
    return OK;
  },
  // Buffer ids: 0 request body, 1 response body, 6 VM configuration, 7 plugin configuration
  // (only while configuring); the other buffers are empty or absent as in the harness.
  proxy_get_buffer_bytes(kind, start, maxSize, retPtr, retLen) {
    calls.proxy_get_buffer_bytes++;
    const data = bufferData(kind);
    if (typeof data === 'number') return data;
    start >>>= 0;
    if (start > data.length) return BAD_ARGUMENT;
    const slice = data.subarray(start, Math.min(data.length, start + (maxSize >>> 0)));
    return slice.length === 0 ? OK : copyOut(slice, retPtr, retLen);
  },
  proxy_get_buffer_status(kind, retSize, retFlags) {
    calls.proxy_get_buffer_status++;
    const data = bufferData(kind);
    if (typeof data === 'number') return data;
    return writeU32(retSize, data.length) && writeU32(retFlags, 0) ? OK : INVALID_MEMORY_ACCESS;
  },
  // Envoy's semantics: start 0 replaces the first `size` bytes, start past the end appends.
  proxy_set_buffer_bytes(kind, start, size, ptr, len) {
    calls.proxy_set_buffer_bytes++;
    const text = read(ptr, len);
    if (text === null) return INVALID_MEMORY_ACCESS;
    const data = Buffer.from(text, 'latin1');
    const d = current && (kind === 0 ? current.req : kind === 1 ? current.resp : null);
    if (!d || !d.bodyAccessible) return BAD_ARGUMENT;
    start >>>= 0;
    if (start === 0) {
      const rest = d.body.subarray(Math.min(size >>> 0, d.body.length));
      d.body = concat(data, rest);
    } else if (start >= d.body.length) {
      d.body = concat(d.body, data);
    } else {
      return BAD_ARGUMENT;
    }
    return OK;
  },
  // Resumes after the callback returns; access to that direction ends at once (Envoy).
  proxy_continue_stream(kind) {
    calls.proxy_continue_stream++;
    if (kind < 0 || kind > 3) return BAD_ARGUMENT;
    if (kind > 1) return kind === 2 ? OK : UNIMPLEMENTED;
    if (current === null) return OK;
    const d = kind === 0 ? current.req : current.resp;
    d.headersAccessible = d.bodyAccessible = false;
    deferred.push({ stream: current, resume: kind === 0 ? 'req' : 'resp' });
    return OK;
  },
  proxy_send_local_response(status, dPtr, dLen, bodyPtr, bodyLen, hPtr, hLen) {
    calls.proxy_send_local_response++;
    const body = read(bodyPtr, bodyLen);
    const headers = read(hPtr, hLen);
    if (read(dPtr, dLen) === null || body === null || headers === null) {
      return INVALID_MEMORY_ACCESS;
    }
    if (current === null || current.localRequested) {
      throw new Error('proxy_send_local_response outside a stream, or twice');
    }
    current.localRequested = true;
    deferred.push({ stream: current, reply: { status, body, headers: parsePairs(headers) } });
    return OK;
  },
};

function editHeader(map, keyPtr, keyLen, valuePtr, valueLen, edit) {
  if (map < 0 || map > 7) return BAD_ARGUMENT;
  const key = read(keyPtr, keyLen);
  const value = read(valuePtr, valueLen);
  if (key === null || value === null) return INVALID_MEMORY_ACCESS;
  const pairs = writableMap(map);
  if (pairs === null) return BAD_ARGUMENT;
  edit(pairs, key.toLowerCase(), value);
  return OK;
}

// A buffer's bytes, or the status for a buffer Envoy does not have.
function bufferData(kind) {
  if (kind === 0 || kind === 1) {
    const d = current && (kind === 0 ? current.req : current.resp);
    return d && d.bodyAccessible ? d.body : new Uint8Array(0);
  }
  if (kind === 6) return new Uint8Array(0);
  if (kind === 7) return phase === 'configure' ? input.config : NOT_FOUND;
  if (kind === 2 || kind === 3 || kind === 5) return new Uint8Array(0);
  return kind === 4 || kind === 8 ? NOT_FOUND : BAD_ARGUMENT;
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

// A header map in the ABI's format (a byte string) as pairs, keys lowercased: a local response's.
function parsePairs(map) {
  if (map.length <= 1) return [];
  const u32 = (at) => Buffer.from(map.slice(at, at + 4), 'latin1').readUInt32LE();
  const count = u32(0);
  const out = [];
  let at = 4 + 8 * count;
  for (let i = 0; i < count; i++) {
    const kl = u32(4 + 8 * i), vl = u32(8 + 8 * i);
    const key = map.slice(at, at + kl).toLowerCase();
    at += kl + 1;
    out.push([key, map.slice(at, at + vl)]);
    at += vl + 1;
  }
  return out;
}

// WASI as Envoy provides it: stdout/stderr to our stderr, no environment or arguments, the
// harness's clocks and deterministic randomness (splitmix64, seed 0x5eed).
const wasi = {
  fd_write(fd, iovs, iovsLen, retWritten) {
    calls.fd_write++;
    if (fd !== 1 && fd !== 2) return ERRNO_BADF;
    views();
    let written = 0;
    for (let i = 0; i < iovsLen; i++) {
      const at = (iovs >>> 0) + 8 * i;
      if (!inMemory(at, 8)) return ERRNO_FAULT;
      const chunk = read(dv.getUint32(at, true), dv.getUint32(at + 4, true));
      if (chunk === null) return ERRNO_FAULT;
      process.stderr.write(Buffer.from(chunk, 'latin1'));
      written += chunk.length;
    }
    return writeU32(retWritten, written) ? 0 : ERRNO_FAULT;
  },
  environ_sizes_get(retCount, retSize) {
    calls.environ_sizes_get++;
    return writeU32(retCount, 0) && writeU32(retSize, 0) ? 0 : ERRNO_FAULT;
  },
  environ_get() {
    calls.environ_get++;
    return 0;
  },
  args_sizes_get(retArgc, retSize) {
    calls.args_sizes_get++;
    return writeU32(retArgc, 0) && writeU32(retSize, 0) ? 0 : ERRNO_FAULT;
  },
  args_get() {
    calls.args_get++;
    return 0;
  },
  clock_time_get(clock, precision, ret) {
    calls.clock_time_get++;
    if (clock !== 0 && clock !== 1) return ERRNO_NOTSUP;
    return writeU64(ret, clock === 0 ? REALTIME_NS : MONOTONIC_NS) ? 0 : ERRNO_FAULT;
  },
  random_get(buf, len) {
    calls.random_get++;
    if (len >>> 0 > 65536) return ERRNO_INVAL;
    const out = new Uint8Array(Math.ceil((len >>> 0) / 8) * 8);
    const d = new DataView(out.buffer);
    for (let i = 0; i < out.length; i += 8) {
      rng = BigInt.asUintN(64, rng + 0x9e3779b97f4a7c15n);
      let z = rng;
      z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
      z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
      d.setBigUint64(i, z ^ (z >> 31n), true);
    }
    views();
    if (!inMemory(buf >>> 0, len >>> 0)) return ERRNO_FAULT;
    mem.set(out.subarray(0, len >>> 0), buf >>> 0);
    return 0;
  },
  fd_prestat_get() {
    calls.fd_prestat_get++;
    return ERRNO_BADF;
  },
  sched_yield() {
    calls.sched_yield++;
    return 0;
  },
  proc_exit(code) {
    calls.proc_exit++;
    throw new Error(`the module called proc_exit(${code})`);
  },
};

// --- Driving the module -------------------------------------------------------------------
function instantiate(wasm) {
  const module = new WebAssembly.Module(wasm);
  const imports = { env: {}, wasi_snapshot_preview1: {} };
  for (const { module: m, name, kind } of WebAssembly.Module.imports(module)) {
    if (kind !== 'function') throw new Error(`unexpected import ${m}.${name} (${kind})`);
    calls[name] = 0;
    const table = m === 'env' ? env : m === 'wasi_snapshot_preview1' ? wasi : null;
    if (table === null) throw new Error(`unexpected import module ${m}.${name}`);
    // Not on this path (gRPC, queues, http_call, ...): an error status, counted.
    const status = m === 'env' ? UNIMPLEMENTED : ERRNO_NOSYS;
    imports[m][name] = table[name] ?? (() => { calls[name]++; return status; });
  }
  const instance = new WebAssembly.Instance(module, imports);
  ex = instance.exports;
  memory = ex.memory;
  malloc = ex.proxy_on_memory_allocate ?? ex.malloc;
  if (!ex.proxy_abi_version_0_2_1) throw new Error('not a proxy-wasm 0.2.1 module');
}

// Calls an export (when the module has it) in phase `ph` with `stream` current (null: root).
function call(name, ph, stream, ...params) {
  const f = ex[name];
  if (f === undefined) return undefined;
  const saved = [phase, current];
  phase = ph;
  current = stream;
  try {
    return f(...params);
  } finally {
    [phase, current] = saved;
  }
}

function start() {
  if (ex._initialize) call('_initialize', 'start', null);
  else if (ex._start) call('_start', 'start', null);
  call('proxy_on_context_create', 'lifecycle', null, ROOT, 0);
  if (call('proxy_on_vm_start', 'lifecycle', null, ROOT, 0) === 0) fail('proxy_on_vm_start');
  if (call('proxy_on_configure', 'configure', null, ROOT, input.config.length) === 0) {
    fail('proxy_on_configure');
  }
  settle();
}

function fail(what) {
  throw new Error(`${what} failed${warnings.length ? `: ${warnings.slice(-8).join('\n  ')}` : ''}`);
}

let nextId = 2;
function newStream() {
  const s = {
    id: nextId++, req: direction(), resp: direction(), filterState: new Map(),
    localRequested: false, localResponse: null, finished: false,
  };
  streams.set(s.id, s);
  call('proxy_on_context_create', 'lifecycle', s, s.id, ROOT);
  settle();
  return s;
}

// Headers or a body chunk arrive in one direction; the callback runs; Envoy acts on its answer.
function deliver(s, which, headers, body, endOfStream) {
  const d = s[which];
  let n, name;
  if (headers) {
    d.headers = headers.map(([k, v]) => [k, v]); // the filter's edits change the entries
    d.headersSeen = d.headersAccessible = true;
    n = headers.length;
    name = which === 'req' ? 'proxy_on_request_headers' : 'proxy_on_response_headers';
  } else {
    d.body = d.buffering ? concat(d.body, body) : body;
    d.bodyAccessible = true;
    n = d.body.length;
    name = which === 'req' ? 'proxy_on_request_body' : 'proxy_on_response_body';
  }
  d.endSeen = endOfStream;
  const action = call(name, 'stream', s, s.id, n, endOfStream ? 1 : 0) ?? 0;
  if (action !== 0 && action !== 1) throw new Error(`${name} returned ${action}`);
  if (!s.localRequested && !s.finished) {
    if (action === 0 && headers) {
      d.headersAccessible = false;
      if (d.endSeen) d.endForwarded = true;
    } else if (action === 0) {
      release(d);
    } else if (!headers) {
      d.buffering = true;
    }
    if (which === 'resp' && d.endForwarded) finish(s);
  }
  settle();
}

function settle() {
  while (deferred.length > 0) {
    const work = deferred.shift();
    if (work.resume && !work.stream.finished && !work.stream.localResponse) {
      release(work.stream[work.resume]);
      if (work.resume === 'resp' && work.stream.resp.endForwarded) finish(work.stream);
    } else if (work.reply) {
      localReply(work.stream, work.reply);
    }
  }
}

// Envoy's sendLocalReply before any upstream response: the reply goes through the filter's
// own response callbacks, then the stream ends.
function localReply(s, reply) {
  if (s.finished || s.resp.headersSeen) throw new Error('local reply after the response started');
  for (const k of ['headersAccessible', 'bodyAccessible', 'buffering']) s.req[k] = false;
  const headers = [[':status', String(reply.status)], ...reply.headers];
  if (reply.body.length > 0) {
    headers.push(['content-length', String(reply.body.length)]);
    if (!headers.some(([k]) => k === 'content-type')) {
      headers.push(['content-type', 'text/plain']);
    }
  }
  const empty = reply.body.length === 0;
  Object.assign(s.resp, { headers, headersSeen: true, headersAccessible: true, endSeen: empty });
  call('proxy_on_response_headers', 'stream', s, s.id, headers.length, empty ? 1 : 0);
  s.resp.headersAccessible = false;
  if (!empty) {
    Object.assign(s.resp, { body: Buffer.from(reply.body, 'latin1'), bodyAccessible: true });
    call('proxy_on_response_body', 'stream', s, s.id, reply.body.length, 1);
    s.resp.bodyAccessible = false;
  }
  s.localResponse = reply;
  finish(s);
}

// The stream is over: on_log, on_done, on_delete (Envoy's order).
function finish(s) {
  if (s.finished) return;
  s.finished = true;
  call('proxy_on_log', 'log', s, s.id);
  if (call('proxy_on_done', 'lifecycle', s, s.id) === 0) {
    throw new Error('proxy_on_done returned false: proxy_done is not modelled here');
  }
  call('proxy_on_delete', 'lifecycle', s, s.id);
}

// One request, as `wasm_stream`: returns whether it went upstream.
function runStream() {
  const s = newStream();
  const noBody = input.requestBody.length === 0;
  deliver(s, 'req', input.requestHeaders, null, noBody);
  if (!noBody && !s.finished && !s.req.endForwarded) {
    deliver(s, 'req', null, input.requestBody, true);
  }
  const forwarded = s.req.endForwarded && s.localResponse === null;
  if (forwarded) {
    deliver(s, 'resp', input.responseHeaders, null, false);
    deliver(s, 'resp', null, input.responseBody, true);
  }
  if (!s.finished) throw new Error('the stream did not end');
  streams.delete(s.id);
  warnings.length = 0;
  return forwarded;
}

// --- Main ---------------------------------------------------------------------------------
instantiate(readFileSync(wasmPath));
start();
if (runStream() !== input.forwarded) {
  fail(`the policy's answer changed (expected forwarded=${input.forwarded})`);
}
for (let i = 0; i < WARMUP; i++) runStream();

// The timed requests; µs per request.
function measure() {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < N; i++) runStream();
  return Number(process.hrtime.bigint() - t0) / 1000 / N;
}

const before = { ...calls };
const perRequest = [];
for (let r = 0; r < REPS; r++) perRequest.push(measure());
const sorted = [...perRequest].sort((a, b) => a - b);
const median = sorted[Math.floor(sorted.length / 2)];
console.log(`V8 ${process.versions.v8} (TurboFan only): ${median.toFixed(2)} µs per request, `
  + `median of ${REPS} x ${N} after ${WARMUP} warm-up [${perRequest.map((t) => t.toFixed(2)).join(' ')}]`);
const per = Object.keys(calls)
  .map((name) => [name, (calls[name] - before[name]) / (REPS * N)])
  .filter(([, c]) => c > 0);
const total = per.reduce((a, [, c]) => a + c, 0);
console.log(`hostcalls per request (total ${total.toFixed(2)}): `
  + per.map(([name, c]) => `${name}=${+c.toFixed(2)}`).join(' '));
