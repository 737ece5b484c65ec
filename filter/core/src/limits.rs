//! Every fixed bound of the filter in one place: sizes it accepts and writes, and work it does per
//! request or per timer tick. Operator-tunable limits (`limits.max_body_bytes`, session counts) are
//! configuration (`config/`); these are not, and `docs/filter-config.md` states each one.

/// Upper bound on the plugin configuration size accepted (the bundle is inline, so it is large).
pub const MAX_CONFIG_BYTES: usize = 16 * 1024 * 1024;

/// Upper bound on a bundle pulled from the bundle server: the same as an inline one.
pub const MAX_BUNDLE_BYTES: usize = MAX_CONFIG_BYTES;

/// Shared-data slots principal records live in (`portcullis/p/<slot>`): the process-wide bound on
/// distinct principals remembered at once. A record is small (its sessions' keys, taints), so
/// the bound is ~4,096 x a few KiB at most.
pub const PRINCIPAL_SLOTS: u32 = 4096;

/// How many times a read-change-write cycle on shared data is tried before the failure mode
/// applies (`session::Sessions::update`).
pub const MAX_CAS_ATTEMPTS: usize = 8;

/// Signatures (session ends and checkpoints) one timer tick makes at most. Under V8 one costs
/// ~50-80 µs with its session read and write, so a tick stays under ~2.5 ms; with 1,000 busy
/// sessions and no budget a tick signed ~180 of them and stalled the worker ~15-20 ms
/// (BENCHMARKS.md, e's p99.9).
pub const MAX_SIGNATURES_PER_TICK: usize = 32;

/// Checkpoints signed at most when Envoy stops a configuration (`Plugin::on_done`): ~50-80 ms
/// of the stopping worker at the cost above. Only sessions with receipts from the last
/// `max_unsigned_ms` are unsigned then (the timer signed older ones).
pub const MAX_SIGNATURES_AT_DONE: usize = 1024;

/// Longest `x-portcullis-receipt` value; beyond it (large batches) the header carries the receipt
/// ids (hex hashes) instead, and the full receipts are only in the access log.
pub const MAX_RECEIPT_HEADER_BYTES: usize = 16 * 1024;

/// Longest `x-portcullis-warning` value written.
pub const MAX_WARNING_BYTES: usize = 2048;

/// Most of a context service's answer (DEFER) that is read; a longer answer is judged on this
/// prefix, which no valid answer exceeds.
pub const MAX_CONTEXT_ANSWER_BYTES: usize = 64 * 1024;

/// Longest reason taken from a context service's answer (characters).
pub const MAX_CONTEXT_REASON_CHARS: usize = 512;

/// At most one warning per this period (per worker) says how many actions were decided without
/// session state since the last one.
pub const UNTRACKED_WARNING_PERIOD_MS: u64 = 60_000;

/// Largest etcd answer read (the initial read of every containment record: ~300 bytes each, for
/// [`PRINCIPAL_SLOTS`] principals and more).
pub const MAX_ETCD_ANSWER_BYTES: usize = 8 * 1024 * 1024;

/// Principals whose containment may wait in the outbox for etcd at once (`session/etcd`). When it
/// is full, a request whose containment cannot be queued waits for its own write, and is denied
/// if that fails.
pub const MAX_OUTBOX: usize = 1024;

/// With `state.sessions: etcd`: how many times one request is decided when another replica wrote
/// its session first (each time on the record etcd returned); then it is denied with
/// `filter:state_store` (`stream/commit.rs`).
pub const MAX_SESSION_COMMIT_TRIES: u8 = 4;

/// Outbox writes one timer tick starts at most, per worker.
pub const MAX_FLUSH_PER_TICK: usize = 16;

/// After a failed connection to etcd, the watch is opened again no sooner than this.
pub const ETCD_RETRY_MS: u64 = 1_000;

/// A worker logs at most one state-store failure per this period (every failure is counted in
/// `portcullis_state_store_errors`); the log says when the watch is back in sync.
pub const ETCD_WARN_PERIOD_MS: u64 = 5_000;

/// Shared-data slots tool pin records live in (`portcullis/pins/<slot>`): the process-wide bound
/// on owners (principals, or sessions without one) whose tool pins are remembered at once.
pub const PIN_SLOTS: u32 = 4096;

/// Tools one owner's pin record holds at most (~200 bytes each, so a record stays under ~64 KiB).
/// A tool beyond it cannot be pinned and is judged changed (fail closed).
pub const MAX_PINS_PER_OWNER: usize = 256;

/// Credentials a configuration may define (`credentials.definitions`).
pub const MAX_CREDENTIAL_DEFINITIONS: usize = 256;

/// Destinations a configuration may let the agent's own credential headers reach
/// (`credentials.pass`).
pub const MAX_CREDENTIAL_PASS_RULES: usize = 1024;

/// Longest STS call-out timeout a configuration may ask for (ms): the request waits that long.
pub const MAX_STS_TIMEOUT_MS: u32 = 30_000;

/// Longest STS answer read (bytes); a longer one is refused (a token response is a few KiB).
pub const MAX_STS_ANSWER_BYTES: usize = 64 * 1024;

/// Longest minted token accepted (bytes).
pub const MAX_MINTED_TOKEN_BYTES: usize = 16 * 1024;

/// Longest `scope`, `token_type` or `issued_token_type` accepted in an STS answer (bytes).
pub const MAX_STS_FIELD_BYTES: usize = 1024;

/// Longest subject token sent to the STS (bytes): the agent's verified JWT.
pub const MAX_SUBJECT_TOKEN_BYTES: usize = 16 * 1024;

/// Longest lifetime of a minted credential the filter caches (s): an `expires_in` above it is
/// cached for this long only. `credentials.skew_s` must be below it.
pub const MAX_CREDENTIAL_TTL_S: u64 = 24 * 3600;

/// Shared-data slots minted credentials are cached in (`portcullis/cred/<slot>`): the
/// process-wide bound on cached (principal, audience, scope) entries. A slot holds one entry;
/// a new entry that hashes to a busy slot replaces it (the old one is minted again when needed).
pub const CREDENTIAL_CACHE_SLOTS: u32 = 4096;

/// Longest `jti` recorded as a credential's id in a receipt (bytes); a longer one is recorded by
/// hash instead.
pub const MAX_CREDENTIAL_ID_BYTES: usize = 128;

/// Live bindings of server-held state (MRTR `requestState`) to the decision it was minted under
/// (`portcullis/bindings`, 56 bytes each, so the set stays under ~112 KiB). When full, the entry
/// closest to expiry is forgotten and its retry is denied as unknown (fail closed). The requests
/// handed over to another stream (`portcullis/awaited`) are a set of their own of the same size.
pub const MAX_BINDINGS: usize = 2048;

/// How long a binding lives after the server handed the state out: a retry later than this is
/// denied as unknown (the client asks again and gets a fresh state).
pub const BINDING_TTL_MS: u64 = 15 * 60 * 1000;

/// Shared-data slots in-band approval records live in (`portcullis/inband/<slot>`, `approve/`):
/// the process-wide bound on MCP sessions whose elicitation capability and pending
/// elicitations are remembered at once. A record is under ~1 KiB.
pub const INBAND_SLOTS: u32 = 4096;

/// Elicitations one session's in-band record remembers at most (the oldest goes first).
pub const MAX_PENDING_ELICITATIONS: usize = 4;

/// Most of an approval service's answer that is read (a token is at most 1 KiB).
pub const MAX_APPROVAL_ANSWER_BYTES: usize = 16 * 1024;

/// Recent actions of the session told to the approval service at most (the session remembers
/// `bundle::session::HISTORY_CAP`).
pub const MAX_RECENT_ACTIONS_SENT: usize = 10;

/// How many leading bytes of an egress answer labelled binary are read to check the label
/// (`results/egress.rs`): a NUL or bytes that are not UTF-8 in them make it binary.
pub const SNIFF_BYTES: usize = 512;
