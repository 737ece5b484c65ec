//! What a test decides about the host before the module starts: configuration buffers, VM
//! environment, properties, clock, limits.

use crate::abi::{LogLevel, join_property_path};
use crate::state::SharedData;

/// The clock's default start: 1800000000000 ms since the Unix epoch (2027-01-15T08:00:00Z), the
/// `START_MS` of `testdata/scenarios/README.md`.
pub const DEFAULT_START_MS: u64 = 1_800_000_000_000;

/// Envoy's default per-connection buffer limit (1 MiB): a request body buffered past it gets
/// Envoy's own 413 reply.
pub const DEFAULT_BUFFER_LIMIT: usize = 1024 * 1024;

/// Host configuration. Build it with [`HostConfig::new`] and the `with_*` methods.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Plugin configuration (`proxy_on_configure`; Envoy's `configuration` of the plugin).
    pub plugin_config: Vec<u8>,
    /// VM configuration (`proxy_on_vm_start`).
    pub vm_config: Vec<u8>,
    /// VM environment variables (Envoy's `vm_config.environment_variables`).
    pub env: Vec<(String, String)>,
    /// Properties every stream sees: (path segments, value).
    pub properties: Vec<(Vec<String>, Vec<u8>)>,
    /// Clock start, ms since the Unix epoch.
    pub start_ms: u64,
    /// What `proxy_get_log_level` reports (Envoy's default: info).
    pub log_level: LogLevel,
    /// `plugin_name` property.
    pub plugin_name: String,
    /// `plugin_root_id` property.
    pub root_id: String,
    /// `plugin_vm_id` property.
    pub vm_id: String,
    /// Clusters `proxy_http_call` may target; `None` accepts any name.
    pub known_clusters: Option<Vec<String>>,
    /// Shared data store; pass one handle to several hosts to model several workers.
    pub shared_data: SharedData,
    /// Seed of the deterministic `random_get`.
    pub random_seed: u64,
    /// Request/response bytes Envoy buffers for a paused filter before answering 413.
    pub buffer_limit: usize,
    /// Instructions each call into the module may run before it is stopped (an endless loop
    /// then fails the test instead of hanging it). Only applies to metered modules.
    pub fuel_per_call: u64,
    /// Largest linear memory the module may grow to.
    pub memory_limit: usize,
    /// Stream callbacks the host treats as not exported (Envoy then continues, as it does for a
    /// module without them): models a filter built without, e.g., `proxy_on_request_trailers`,
    /// so a test can show it would catch that filter.
    pub hidden_exports: Vec<String>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            env: Vec::new(),
            properties: Vec::new(),
            start_ms: DEFAULT_START_MS,
            log_level: LogLevel::Info,
            plugin_name: "portcullis".to_string(),
            root_id: "portcullis".to_string(),
            vm_id: "portcullis".to_string(),
            known_clusters: None,
            shared_data: SharedData::new(),
            random_seed: 0x5eed,
            buffer_limit: DEFAULT_BUFFER_LIMIT,
            fuel_per_call: 5_000_000_000,
            memory_limit: 512 * 1024 * 1024,
            hidden_exports: Vec::new(),
        }
    }
}

impl HostConfig {
    /// A configuration with this plugin configuration and defaults for the rest.
    pub fn new(plugin_config: impl Into<Vec<u8>>) -> HostConfig {
        HostConfig {
            plugin_config: plugin_config.into(),
            ..HostConfig::default()
        }
    }

    /// Adds a VM environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Sets the VM configuration buffer.
    pub fn with_vm_config(mut self, vm_config: impl Into<Vec<u8>>) -> Self {
        self.vm_config = vm_config.into();
        self
    }

    /// Adds a property every stream sees (e.g. `&["source", "address"]`).
    pub fn with_property(mut self, path: &[&str], value: impl Into<Vec<u8>>) -> Self {
        self.properties.push((
            path.iter().map(|s| (*s).to_string()).collect(),
            value.into(),
        ));
        self
    }

    /// Restricts `proxy_http_call` to these cluster names.
    pub fn with_clusters<I, S>(mut self, clusters: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.known_clusters = Some(clusters.into_iter().map(Into::into).collect());
        self
    }

    /// Uses this shared data store (share it between hosts to model several workers).
    pub fn with_shared_data(mut self, shared: SharedData) -> Self {
        self.shared_data = shared;
        self
    }

    /// Starts the clock here (ms since the epoch).
    pub fn with_start_ms(mut self, start_ms: u64) -> Self {
        self.start_ms = start_ms;
        self
    }

    /// Treats the module's export `name` (a stream callback such as
    /// `proxy_on_request_trailers`) as absent.
    pub fn without_export(mut self, name: impl Into<String>) -> Self {
        self.hidden_exports.push(name.into());
        self
    }

    pub(crate) fn property_map(&self) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
        self.properties
            .iter()
            .map(|(path, value)| (join_property_path(path), value.clone()))
            .collect()
    }
}
