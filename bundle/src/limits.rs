//! Every limit the bundle decoder and the VM enforce, in one place.
//!
//! A bundle over any limit is refused with [`crate::LoadError::TooLarge`]; an evaluation over
//! `max_steps` is denied (fail closed) with the built-in rule `vm:step_limit`. Each limit has a
//! test that trips it (`bundle/src/limits.rs` tests and `bundle/tests/limits.rs`).

/// Most classes any bundle may have, whatever [`Limits::max_classes`] says: the VM keeps an
/// evaluation's class set in a fixed bitset of this many bits, so a bundle with more is refused at
/// load ([`crate::LoadError::TooLarge`]).
pub(crate) const MAX_CLASSES: u64 = 1024;

/// Longest pack id in a layered bundle's manifest, in bytes (ids go into every receipt).
pub const MAX_PACK_ID_BYTES: usize = 128;

/// Limits applied while decoding a bundle and while evaluating it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest bundle accepted, in bytes (whole file).
    pub max_bundle_bytes: usize,
    /// Most strings in the string pool.
    pub max_strings: u32,
    /// Longest single string, in bytes.
    pub max_string_bytes: u32,
    /// Most rules.
    pub max_rules: u32,
    /// Most classes (a session's history can name at most 16 of them; more classes still work).
    pub max_classes: u32,
    /// Most intents.
    pub max_intents: u32,
    /// Most condition instructions in one rule or class.
    pub max_instructions_per_rule: u32,
    /// Most matchers (sets, glob lists, prefix lists, regexes).
    pub max_matchers: u32,
    /// Most elements in one set, glob list or prefix list (also intent tool/host/data lists).
    pub max_matcher_elements: u32,
    /// Largest serialized DFA of one regex, in bytes.
    pub max_regex_bytes: u32,
    /// Largest total of all serialized DFAs, in bytes.
    pub max_total_regex_bytes: u64,
    /// Deepest argument path (`args.a.b[0]` is 3).
    pub max_path_depth: u32,
    /// Most modifications in one decision, and most effects in one rule.
    pub max_list_items: u32,
    /// Most instructions one evaluation may execute (classes and every visited rule together).
    pub max_steps: u32,
    /// Most tools with declared argument types (`tool "x" { ... }`).
    pub max_tools: u32,
    /// Most declared arguments of one tool.
    pub max_tool_args: u32,
    /// Most pinned tool definitions (`policyc pin`, format version 4).
    pub max_tool_pins: u32,
    /// Most packs in a layered bundle (each applicable one is evaluated per action).
    pub max_layers: u32,
    /// Largest manifest of a layered bundle, in bytes.
    pub max_manifest_bytes: u32,
    /// Most assignment rules of one pack in a layered bundle.
    pub max_assign_rules: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bundle_bytes: 16 * 1024 * 1024,
            max_strings: 1 << 20,
            max_string_bytes: 64 * 1024,
            max_rules: 100_000,
            max_classes: 1024,
            max_intents: 1024,
            max_instructions_per_rule: 4096,
            max_matchers: 1 << 20,
            max_matcher_elements: 100_000,
            max_regex_bytes: 1024 * 1024,
            max_total_regex_bytes: 8 * 1024 * 1024,
            max_path_depth: 32,
            max_list_items: 64,
            max_steps: 1_000_000,
            max_tools: 10_000,
            max_tool_args: 1024,
            max_tool_pins: 10_000,
            max_layers: 16,
            max_manifest_bytes: 64 * 1024,
            max_assign_rules: 256,
        }
    }
}
