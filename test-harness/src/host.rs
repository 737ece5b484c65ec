//! The host: loads a proxy-wasm module into wasmtime, runs the plugin lifecycle, and drives
//! timers, call-out answers and the work Envoy defers until a VM call returns.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use wasmtime::{
    Config, Engine, Instance, Module, Store, StoreLimitsBuilder, TypedFunc, WasmParams, WasmResults,
};

use crate::abi::{LogLevel, Pairs};
use crate::config::HostConfig;
use crate::imports;
use crate::state::{
    CallResponse, HostState, HttpCall, HttpCallState, LogEntry, Metric, Phase, SharedData,
    StreamState,
};
use crate::stream::{Stream, StreamView};

/// A compiled module, reusable by many hosts (compiling the filter takes seconds; instantiating
/// it takes milliseconds).
pub struct FilterModule {
    engine: Engine,
    module: Module,
    metered: bool,
}

impl FilterModule {
    /// Compiles a module with fuel metering (an endless loop fails instead of hanging).
    pub fn from_bytes(wasm: &[u8]) -> Result<FilterModule> {
        FilterModule::compile(wasm, true)
    }

    /// Compiles a module without fuel metering (for benchmarks: metering costs time).
    pub fn from_bytes_unmetered(wasm: &[u8]) -> Result<FilterModule> {
        FilterModule::compile(wasm, false)
    }

    /// Reads and compiles a `.wasm` file (metered).
    pub fn from_file(path: &Path) -> Result<FilterModule> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        FilterModule::from_bytes(&bytes)
    }

    fn compile(wasm: &[u8], metered: bool) -> Result<FilterModule> {
        let mut config = Config::new();
        config.consume_fuel(metered);
        // `perf` can name JIT-compiled filter functions through /tmp/perf-<pid>.map (used by
        // `benches/cost/run --perf`; the module needs its name section, i.e. an unstripped build).
        if std::env::var_os("PORTCULLIS_WASM_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config)?;
        let module = Module::new(&engine, wasm).context("compiling the wasm module")?;
        Ok(FilterModule {
            engine,
            module,
            metered,
        })
    }

    /// The module's imports as `module.name`, for diagnostics.
    pub fn imports(&self) -> Vec<String> {
        self.module
            .imports()
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect()
    }
}

type F1 = TypedFunc<u32, ()>;
type F1R = TypedFunc<u32, u32>;
type F2 = TypedFunc<(u32, u32), ()>;
type F2R = TypedFunc<(u32, u32), u32>;
type F3R = TypedFunc<(u32, u32, u32), u32>;
type F5 = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// The callbacks the module exports (all optional, as the spec says).
#[derive(Default)]
pub(crate) struct Exports {
    pub(crate) on_context_create: Option<F2>,
    pub(crate) on_vm_start: Option<F2R>,
    pub(crate) on_configure: Option<F2R>,
    pub(crate) on_tick: Option<F1>,
    pub(crate) on_done: Option<F1R>,
    pub(crate) on_log: Option<F1>,
    pub(crate) on_delete: Option<F1>,
    pub(crate) on_request_headers: Option<F3R>,
    pub(crate) on_request_body: Option<F3R>,
    pub(crate) on_response_headers: Option<F3R>,
    pub(crate) on_response_body: Option<F3R>,
    pub(crate) on_request_trailers: Option<F2R>,
    pub(crate) on_response_trailers: Option<F2R>,
    pub(crate) on_http_call_response: Option<F5>,
}

/// Stream callbacks a test may hide ([`HostConfig::without_export`]).
const HIDEABLE: &[&str] = &[
    "proxy_on_request_headers",
    "proxy_on_request_body",
    "proxy_on_request_trailers",
    "proxy_on_response_headers",
    "proxy_on_response_body",
    "proxy_on_response_trailers",
];

fn export<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    instance: &Instance,
    name: &str,
) -> Result<Option<TypedFunc<P, R>>> {
    if instance.get_func(&mut *store, name).is_none() {
        return Ok(None);
    }
    instance
        .get_typed_func::<P, R>(&mut *store, name)
        .map(Some)
        .with_context(|| format!("export `{name}` does not have the proxy-wasm 0.2.1 signature"))
}

/// A stream callback, unless the test hid it ([`HostConfig::without_export`]).
fn stream_export<P: WasmParams, R: WasmResults>(
    store: &mut Store<HostState>,
    instance: &Instance,
    name: &str,
    hidden: &[String],
) -> Result<Option<TypedFunc<P, R>>> {
    if hidden.iter().any(|h| h == name) {
        return Ok(None);
    }
    export(store, instance, name)
}

/// One Envoy worker's view of the plugin: a VM instance with its root context, streams, timers,
/// shared data, metrics and call-outs.
pub struct Host {
    pub(crate) store: Store<HostState>,
    pub(crate) exports: Exports,
    crashed: Option<String>,
    next_ctx: u32,
    metered: bool,
    fuel_per_call: u64,
    pub(crate) reported_violations: usize,
}

/// The state of a fresh store (also used by unit tests).
fn new_state(config: &HostConfig) -> HostState {
    let start_ns = config.start_ms.saturating_mul(1_000_000);
    HostState {
        memory: None,
        malloc: None,
        limits: StoreLimitsBuilder::new()
            .memory_size(config.memory_limit)
            .build(),
        realtime_ns: start_ns,
        monotonic_ns: 1_000_000_000,
        log_level: config.log_level,
        logs: Vec::new(),
        fd_lines: [Vec::new(), Vec::new()],
        env: config.env.clone(),
        rng: config.random_seed,
        vm_config: config.vm_config.clone(),
        plugin_config: config.plugin_config.clone(),
        plugin_name: config.plugin_name.clone(),
        root_id_name: config.root_id.clone(),
        vm_id: config.vm_id.clone(),
        root_ctx: 1,
        phase: Phase::Idle,
        current_ctx: 0,
        effective_ctx: 0,
        tick_period_ms: 0,
        properties: config.property_map(),
        streams: Default::default(),
        shared: config.shared_data.clone(),
        metrics: Default::default(),
        http_calls: Vec::new(),
        known_clusters: config
            .known_clusters
            .as_ref()
            .map(|c| c.iter().cloned().collect::<BTreeSet<_>>()),
        call_response: None,
        call_status: (0, String::new()),
        deferred: Vec::new(),
        violations: Vec::new(),
        pending_done: BTreeSet::new(),
        buffer_limit: config.buffer_limit,
        hostcall_counts: Default::default(),
    }
}

#[cfg(test)]
pub(crate) fn test_state() -> HostState {
    new_state(&HostConfig::default())
}

impl Host {
    /// Compiles `wasm` and starts the plugin (see [`Host::start`]).
    pub fn new(wasm: &[u8], config: HostConfig) -> Result<Host> {
        let module = FilterModule::from_bytes(wasm)?;
        Host::start(&module, config)
    }

    /// Instantiates the module and runs the plugin lifecycle as Envoy does:
    /// `_initialize` (or `_start`), `proxy_on_context_create(root, 0)`,
    /// `proxy_on_vm_start(root, vm_config_size)`, `proxy_on_configure(root, plugin_config_size)`.
    /// Fails when the module is not a proxy-wasm 0.2.1 module, imports something Envoy does not
    /// provide, traps, or refuses its VM or plugin configuration (returns false).
    pub fn start(module: &FilterModule, config: HostConfig) -> Result<Host> {
        let linker = imports::linker(&module.engine, &module.module)?;
        let mut store = Store::new(&module.engine, new_state(&config));
        store.limiter(|s| &mut s.limits);
        if module.metered {
            store.set_fuel(config.fuel_per_call)?;
        }
        let instance = linker
            .instantiate(&mut store, &module.module)
            .context("instantiating the module")?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| anyhow!("the module exports no `memory`"))?;
        let malloc = match export::<u32, u32>(&mut store, &instance, "proxy_on_memory_allocate")? {
            Some(f) => Some(f),
            None => export::<u32, u32>(&mut store, &instance, "malloc")?,
        };
        if malloc.is_none() {
            bail!("the module exports neither `proxy_on_memory_allocate` nor `malloc`");
        }
        if instance
            .get_func(&mut store, "proxy_abi_version_0_2_1")
            .is_none()
        {
            let other = ["proxy_abi_version_0_2_0", "proxy_abi_version_0_1_0"]
                .into_iter()
                .find(|n| instance.get_func(&mut store, n).is_some());
            match other {
                Some(n) => bail!("the module declares `{n}`; this harness implements ABI 0.2.1"),
                None => bail!("the module does not export `proxy_abi_version_0_2_1`"),
            }
        }
        store.data_mut().memory = Some(memory);
        store.data_mut().malloc = malloc;

        if let Some(name) = config
            .hidden_exports
            .iter()
            .find(|n| !HIDEABLE.contains(&n.as_str()))
        {
            bail!("only stream callbacks can be hidden, not `{name}`");
        }
        let hidden = config.hidden_exports.as_slice();
        let exports = Exports {
            on_context_create: export(&mut store, &instance, "proxy_on_context_create")?,
            on_vm_start: export(&mut store, &instance, "proxy_on_vm_start")?,
            on_configure: export(&mut store, &instance, "proxy_on_configure")?,
            on_tick: export(&mut store, &instance, "proxy_on_tick")?,
            on_done: export(&mut store, &instance, "proxy_on_done")?,
            on_log: export(&mut store, &instance, "proxy_on_log")?,
            on_delete: export(&mut store, &instance, "proxy_on_delete")?,
            on_request_headers: stream_export(
                &mut store,
                &instance,
                "proxy_on_request_headers",
                hidden,
            )?,
            on_request_body: stream_export(&mut store, &instance, "proxy_on_request_body", hidden)?,
            on_response_headers: stream_export(
                &mut store,
                &instance,
                "proxy_on_response_headers",
                hidden,
            )?,
            on_response_body: stream_export(
                &mut store,
                &instance,
                "proxy_on_response_body",
                hidden,
            )?,
            on_request_trailers: stream_export(
                &mut store,
                &instance,
                "proxy_on_request_trailers",
                hidden,
            )?,
            on_response_trailers: stream_export(
                &mut store,
                &instance,
                "proxy_on_response_trailers",
                hidden,
            )?,
            on_http_call_response: export(&mut store, &instance, "proxy_on_http_call_response")?,
        };
        let initialize = export::<(), ()>(&mut store, &instance, "_initialize")?;
        let start = export::<(), ()>(&mut store, &instance, "_start")?;

        let mut host = Host {
            store,
            exports,
            crashed: None,
            next_ctx: 2,
            metered: module.metered,
            fuel_per_call: config.fuel_per_call,
            reported_violations: 0,
        };
        if let Some(f) = initialize.or(start) {
            host.call(Some(f), Phase::Start, 0, (), "_initialize")?;
        }
        let root = host.root_id();
        let create = host.exports.on_context_create.clone();
        host.call(
            create,
            Phase::Lifecycle,
            root,
            (root, 0),
            "proxy_on_context_create",
        )?;
        let vm_size = len_u32(config.vm_config.len());
        let vm_start = host.exports.on_vm_start.clone();
        if host.call(
            vm_start,
            Phase::VmStart,
            root,
            (root, vm_size),
            "proxy_on_vm_start",
        )? == Some(0)
        {
            bail!(
                "proxy_on_vm_start returned false: the module refused its VM configuration{}",
                host.error_log_tail()
            );
        }
        let cfg_size = len_u32(config.plugin_config.len());
        let configure = host.exports.on_configure.clone();
        if host.call(
            configure,
            Phase::Configure,
            root,
            (root, cfg_size),
            "proxy_on_configure",
        )? == Some(0)
        {
            bail!(
                "proxy_on_configure returned false: Envoy would reject this plugin configuration{}",
                host.error_log_tail()
            );
        }
        host.settle()?;
        Ok(host)
    }

    /// The plugin (root) context id.
    pub fn root_id(&self) -> u32 {
        self.store.data().root_ctx
    }

    /// Opens a new HTTP stream: a new context, created with
    /// `proxy_on_context_create(id, root)`.
    pub fn new_stream(&mut self) -> Result<Stream<'_>> {
        let id = self.next_ctx;
        self.next_ctx = self.next_ctx.wrapping_add(1);
        self.store
            .data_mut()
            .streams
            .insert(id, StreamState::default());
        let root = self.root_id();
        let create = self.exports.on_context_create.clone();
        self.call(
            create,
            Phase::Lifecycle,
            id,
            (id, root),
            "proxy_on_context_create",
        )?;
        self.settle()?;
        Ok(Stream::new(self, id))
    }

    /// Reattaches to a stream opened earlier.
    pub fn stream(&mut self, id: u32) -> Result<Stream<'_>> {
        if !self.store.data().streams.contains_key(&id) {
            bail!("no stream with context id {id}");
        }
        Ok(Stream::new(self, id))
    }

    /// What the host recorded about a stream (also after it finished).
    pub fn stream_view(&self, id: u32) -> Option<StreamView<'_>> {
        self.store.data().streams.get(&id).map(StreamView::new)
    }

    /// Drops the host's record of a stream that ended and whose context was deleted (long
    /// runs such as benchmarks would otherwise keep every stream). Returns whether it did.
    pub fn forget_stream(&mut self, id: u32) -> bool {
        let st = self.store.data_mut();
        if st.streams.get(&id).is_some_and(|s| s.finished && s.deleted) {
            st.streams.remove(&id);
            return true;
        }
        false
    }

    /// Drops the log lines collected so far (long runs).
    pub fn clear_logs(&mut self) {
        self.store.data_mut().logs.clear();
    }

    /// Moves the clock (realtime and monotonic) forward. Fires nothing by itself: call
    /// [`Host::tick`] and answer or fail call-outs explicitly.
    pub fn advance_time(&mut self, ms: u64) {
        let ns = ms.saturating_mul(1_000_000);
        let st = self.store.data_mut();
        st.realtime_ns = st.realtime_ns.saturating_add(ns);
        st.monotonic_ns = st.monotonic_ns.saturating_add(ns);
    }

    /// The clock, ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        self.store.data().realtime_ns / 1_000_000
    }

    /// The tick period the module asked for (0 = no timer).
    pub fn tick_period_ms(&self) -> u32 {
        self.store.data().tick_period_ms
    }

    /// Fires the timer once (`proxy_on_tick(root)`), as Envoy does when the period elapses.
    /// Returns false without calling the module when it set no tick period.
    pub fn tick(&mut self) -> Result<bool> {
        if self.store.data().tick_period_ms == 0 {
            return Ok(false);
        }
        let root = self.root_id();
        let f = self.exports.on_tick.clone();
        self.call(f, Phase::Tick, root, root, "proxy_on_tick")?;
        self.settle()?;
        Ok(true)
    }

    /// Log lines the module emitted so far.
    pub fn logs(&self) -> &[LogEntry] {
        &self.store.data().logs
    }

    /// Whether any log line (any level) contains `needle`.
    pub fn logs_contain(&self, needle: &str) -> bool {
        self.logs().iter().any(|l| l.message.contains(needle))
    }

    /// The metrics the module defined.
    pub fn metrics(&self) -> Vec<Metric> {
        self.store
            .data()
            .metrics
            .by_name
            .values()
            .cloned()
            .collect()
    }

    /// A metric by name (the first type found).
    pub fn metric(&self, name: &str) -> Option<Metric> {
        self.store
            .data()
            .metrics
            .by_name
            .values()
            .find(|m| m.name == name)
            .cloned()
    }

    /// Every HTTP call-out the module dispatched, in order.
    pub fn http_calls(&self) -> &[HttpCall] {
        &self.store.data().http_calls
    }

    /// Call-outs still waiting for an answer.
    pub fn pending_http_calls(&self) -> Vec<&HttpCall> {
        self.http_calls()
            .iter()
            .filter(|c| c.state == HttpCallState::Pending)
            .collect()
    }

    /// The shared data store (the test can read it, or write as another worker would).
    pub fn shared_data(&self) -> &SharedData {
        &self.store.data().shared
    }

    /// Adds or replaces a property every stream sees.
    pub fn set_property(&mut self, path: &[&str], value: impl Into<Vec<u8>>) {
        let key = crate::abi::join_property_path(path);
        self.store.data_mut().properties.insert(key, value.into());
    }

    /// Behaviour Envoy would tolerate but that is a filter bug (header injection, a second
    /// local response, ...). Each one already failed the operation that caused it.
    pub fn violations(&self) -> &[String] {
        &self.store.data().violations
    }

    /// How many times the module made a hostcall (e.g. `"proxy_http_call"`).
    pub fn hostcall_count(&self, name: &str) -> u64 {
        self.store
            .data()
            .hostcall_counts
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Every hostcall the module made so far, by name, with its count.
    pub fn hostcall_counts(&self) -> &std::collections::BTreeMap<&'static str, u64> {
        &self.store.data().hostcall_counts
    }

    /// Answers a pending call-out: `proxy_on_http_call_response(root, token, headers, body,
    /// trailers)` with `:status` first, then `headers`.
    pub fn respond_http_call(
        &mut self,
        token: u32,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<()> {
        let mut pairs: Pairs = vec![(":status".to_string(), status.to_string().into_bytes())];
        pairs.extend(
            headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())),
        );
        let response = CallResponse {
            headers: pairs,
            body: body.to_vec(),
            trailers: Vec::new(),
        };
        self.deliver_call(token, Some(response), (status, String::new()))
    }

    /// Fails a pending call-out as Envoy does on timeout or reset: the module is called with
    /// zero headers, body and trailers, and the call-out maps are unavailable.
    pub fn fail_http_call(&mut self, token: u32) -> Result<()> {
        self.deliver_call(token, None, (11, "reset".to_string()))
    }

    /// Fails, as Envoy's timer would, every pending call-out whose timeout has elapsed on the
    /// host clock (see [`Host::advance_time`]); calls without a timeout never expire. Returns the
    /// tokens it failed, oldest first.
    pub fn expire_http_calls(&mut self) -> Result<Vec<u32>> {
        let now = self.now_ms();
        let due: Vec<u32> = self
            .http_calls()
            .iter()
            .filter(|c| {
                c.state == HttpCallState::Pending
                    && c.timeout_ms > 0
                    && c.dispatched_at_ms.saturating_add(u64::from(c.timeout_ms)) <= now
            })
            .map(|c| c.token)
            .collect();
        for token in &due {
            self.fail_http_call(*token)?;
        }
        Ok(due)
    }

    fn deliver_call(
        &mut self,
        token: u32,
        response: Option<CallResponse>,
        status: (u32, String),
    ) -> Result<()> {
        let st = self.store.data_mut();
        let Some(call) = st.http_calls.iter_mut().find(|c| c.token == token) else {
            bail!("no HTTP call-out with token {token}");
        };
        if call.state != HttpCallState::Pending {
            bail!("HTTP call-out {token} was already {:?}", call.state);
        }
        call.state = if response.is_some() {
            HttpCallState::Answered
        } else {
            HttpCallState::Failed
        };
        let (n_headers, body_len, n_trailers) = match &response {
            Some(r) => (
                len_u32(r.headers.len()),
                len_u32(r.body.len()),
                len_u32(r.trailers.len()),
            ),
            None => (0, 0, 0),
        };
        st.call_response = response;
        st.call_status = status;
        let root = self.root_id();
        let f = self.exports.on_http_call_response.clone();
        let result = self.call(
            f,
            Phase::HttpCallResponse,
            root,
            (root, token, n_headers, body_len, n_trailers),
            "proxy_on_http_call_response",
        );
        let st = self.store.data_mut();
        st.call_response = None;
        st.call_status = (0, String::new());
        result?;
        self.settle()
    }

    /// Ends the plugin as Envoy does on shutdown: `proxy_on_done(root)`, then
    /// `proxy_on_delete(root)` (unless the module asked to finish later with `proxy_done`).
    pub fn shutdown(&mut self) -> Result<()> {
        let root = self.root_id();
        let done = self.exports.on_done.clone();
        let finished = self.call(done, Phase::Done, root, root, "proxy_on_done")?;
        if finished != Some(0) {
            let delete = self.exports.on_delete.clone();
            self.call(delete, Phase::Lifecycle, root, root, "proxy_on_delete")?;
        } else {
            self.store.data_mut().pending_done.insert(root);
        }
        self.settle()
    }

    /// Calls an exported callback (when the module exports it) in `phase` with `ctx` current
    /// and effective. A trap marks the VM crashed: every later call fails, as Envoy fails
    /// requests once a VM has crashed.
    pub(crate) fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        f: Option<TypedFunc<P, R>>,
        phase: Phase,
        ctx: u32,
        params: P,
        what: &str,
    ) -> Result<Option<R>> {
        if let Some(crash) = &self.crashed {
            bail!("the VM crashed earlier, Envoy would fail this request: {crash}");
        }
        let Some(f) = f else {
            return Ok(None);
        };
        if self.metered {
            self.store.set_fuel(self.fuel_per_call)?;
        }
        let st = self.store.data_mut();
        let saved = (st.phase, st.current_ctx, st.effective_ctx);
        st.phase = phase;
        st.current_ctx = ctx;
        st.effective_ctx = ctx;
        let result = f.call(&mut self.store, params);
        let st = self.store.data_mut();
        st.flush_fds();
        (st.phase, st.current_ctx, st.effective_ctx) = saved;
        match result {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                let out_of_fuel = self
                    .store
                    .get_fuel()
                    .map(|fuel| self.metered && fuel == 0)
                    .unwrap_or(false);
                let cause = if out_of_fuel {
                    format!(
                        "{what} ran out of fuel ({} instructions): an endless loop?",
                        self.fuel_per_call
                    )
                } else {
                    format!("{what}({ctx}) trapped: {e:#}")
                };
                let message = format!("{cause}{}", self.error_log_tail());
                self.crashed = Some(message.clone());
                Err(anyhow!(message))
            }
        }
    }

    /// Recent error-level output of the module (a Rust panic message lands here).
    fn error_log_tail(&self) -> String {
        let lines: Vec<&str> = self
            .logs()
            .iter()
            .filter(|l| l.level >= LogLevel::Warn)
            .rev()
            .take(8)
            .map(|l| l.message.as_str())
            .collect();
        if lines.is_empty() {
            return String::new();
        }
        let mut out = String::from("\nlast warnings/errors from the module:");
        for line in lines.into_iter().rev() {
            out.push_str("\n  ");
            out.push_str(line);
        }
        out
    }
}

pub(crate) fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
