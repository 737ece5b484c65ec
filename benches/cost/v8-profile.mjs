// Where the time of the timed requests of benches/cost/v8.mjs goes under V8, per function:
// reads the .cpuprofile of `node --cpu-prof benches/cost/v8.mjs ...` (a tree of call frames
// with a sample count each) and keeps the samples under `measure` (warm-up and start-up left out).
//
//   node benches/cost/v8-profile.mjs <file.cpuprofile> [--top 40]
//
// Shares are of those samples: the filter's Wasm (named from the module's name section: build
// with CARGO_PROFILE_RELEASE_STRIP=false), the host's JS ([js]) and V8's own code, e.g. the
// JS<->Wasm call wrappers ([v8]). Self: the function was running. Inclusive: it was on the stack
// (counted once per sample, recursion or not). Groups: inclusive, any frame of the group on the
// stack; also as a share of the samples in the filter's own Wasm code, host time left out.

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const topAt = args.indexOf('--top');
const TOP = topAt < 0 ? 40 : Number(args.splice(topAt, 2)[1]);
const [file] = args;
if (!file) {
  console.error('usage: v8-profile.mjs <file.cpuprofile> [--top N]');
  process.exit(2);
}
const ROOT = 'measure';

// What the filter's time is asked about, matched against frame names. memcpy, memmove and
// memset are not functions in this module (bulk memory: `memory.copy` / `memory.fill`
// instructions), so their time is their callers' self time.
const ALLOCATOR = 'malloc|free|realloc|calloc|aligned_alloc|dl\\w+|internal_memalign|dispose_chunk';
const GROUPS = [
  ['sha2 compress (SHA-256)', /^sha2::sha256::/],
  ['dlmalloc (malloc, free, realloc)', new RegExp(`^(${ALLOCATOR})$`)],
  ['allocation: dlmalloc and Rust\'s __rust_* shims', new RegExp(`^(${ALLOCATOR}|__rustc::__(rust|rdl)_\\w+)$`)],
  ['JSON parse (filter_core::normalize::json)', /^filter_core::normalize::json::/],
  ['risk scan (filter_core::normalize::risk)', /^filter_core::normalize::risk::/],
  ['serde_json', /serde_json::/],
  ['formatting (core::fmt, alloc::fmt)', /core::fmt::|alloc::fmt::/],
  ['Ed25519 (ed25519_dalek, curve25519_dalek)', /ed25519|curve25519/],
  ['SDK hostcall wrappers (proxy_wasm::hostcalls, portcullis::raw)', /^(proxy_wasm::hostcalls::|portcullis::raw::)/],
  ['hostcalls, host side (wasm-to-js wrappers and the JS behind them)', /^wasm-to-js/],
];

const profile = JSON.parse(readFileSync(file, 'utf8'));
const byId = new Map(profile.nodes.map((n) => [n.id, n]));

// Rust names, demangled by c++filt (legacy `_ZN` and v0 `_R` manglings) when it is installed,
// without the hashes; otherwise left mangled.
const wasmNames = [...new Set(profile.nodes
  .filter((n) => n.callFrame.url.startsWith('wasm://'))
  .map((n) => n.callFrame.functionName))];
const filt = spawnSync('c++filt', { input: wasmNames.join('\n'), encoding: 'utf8' });
const demangled = new Map(filt.status === 0
  ? filt.stdout.split('\n').map((d, i) => [wasmNames[i],
    d.replace(/\[[0-9a-f]+\]/g, '').replace(/::h[0-9a-f]{16}$/, '')])
  : []);
const demangle = (name) => demangled.get(name) ?? name;

// A frame's name, and which code it is: 'wasm', 'js' (the host script, node) or 'v8'.
function frame(node) {
  const { functionName, url, lineNumber } = node.callFrame;
  // V8's wasm-to-js call wrappers are in the module's script, one per signature, named after
  // one of the imports that share it.
  if (functionName.startsWith('wasm-to-js:')) {
    return { name: `${functionName.replace(/^(wasm-to-js:[^-]*)-.*$/, '$1')} [v8]`, kind: 'v8' };
  }
  if (url.startsWith('wasm://')) return { name: demangle(functionName), kind: 'wasm' };
  if (url === '') return { name: `${functionName} [v8]`, kind: 'v8' };
  const where = `${url.split('/').at(-1)}:${lineNumber + 1}`;
  return { name: `${functionName || '(anonymous)'} [js ${where}]`, kind: 'js' };
}

const self = new Map(), inclusive = new Map(), kinds = new Map();
const groups = new Map(), groupsInWasm = new Map(); // the latter: samples in the module's code
const add = (m, k, n) => m.set(k, (m.get(k) ?? 0) + n);
let total = 0, gc = 0;
const stack = []; // frames from the first `measure` down
function walk(node) {
  const f = frame(node);
  if (f.name === '(garbage collector) [v8]') gc += node.hitCount;
  const inside = stack.length > 0 || node.callFrame.functionName === ROOT;
  if (inside) stack.push(f);
  if (inside && node.hitCount > 0) {
    const n = node.hitCount;
    total += n;
    add(self, f.name, n);
    add(kinds, f.kind, n);
    for (const name of new Set(stack.map((s) => s.name))) add(inclusive, name, n);
    for (const [label, re] of GROUPS) {
      if (!stack.some((s) => re.test(s.name))) continue;
      add(groups, label, n);
      if (f.kind === 'wasm') add(groupsInWasm, label, n);
    }
  }
  for (const child of node.children ?? []) walk(byId.get(child));
  if (inside) stack.pop();
}
walk(profile.nodes[0]);
if (total === 0) {
  console.error(`no samples under \`${ROOT}\` in ${file}`);
  process.exit(1);
}

const pct = (n) => `${((100 * n) / total).toFixed(1).padStart(5)} %`;
const ms = (n) => (n * (profile.endTime - profile.startTime)) / profile.samples.length / 1000;
console.log(`${total} samples in the timed requests (${ms(total).toFixed(0)} ms); `
  + `Wasm ${pct(kinds.get('wasm') ?? 0)}, host JS ${pct(kinds.get('js') ?? 0)}, `
  + `V8 (call wrappers, builtins) ${pct(kinds.get('v8') ?? 0)}; `
  + `besides, the host's garbage collection: ${gc} samples (${pct(gc)} of that)`);
const wasm = kinds.get('wasm') ?? 0;
const ofWasm = (n) => `${((100 * n) / Math.max(wasm, 1)).toFixed(1).padStart(5)} %`;
console.log('\ngroups, inclusive: of all samples, and of the samples in the filter\'s Wasm code:');
for (const [label] of GROUPS) {
  console.log(`  ${pct(groups.get(label) ?? 0)}  ${ofWasm(groupsInWasm.get(label) ?? 0)}  ${label}`);
}
const table = (title, by) => {
  console.log(`\n${title}:\n     self  inclusive`);
  const rows = [...by].sort((a, b) => b[1] - a[1]).slice(0, TOP);
  for (const [name] of rows) {
    console.log(`  ${pct(self.get(name) ?? 0)}  ${pct(inclusive.get(name))}  ${name.slice(0, 140)}`);
  }
};
table(`top ${TOP} by self time`, self);
table(`top ${TOP} by inclusive time`, inclusive);
