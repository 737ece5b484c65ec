//! MCP protocol traffic: the versioned list of operations behind the built-in class
//! `mcp_protocol` (`docs/policy-language.md`, "MCP protocol traffic").
//!
//! These are the operation names the filter gives MCP messages that set up, describe, keep alive
//! or end a session, answer the server, or carry the transport: they act on nothing (no tool call,
//! resource read or prompt). A pack allows them all with one rule, `when class mcp_protocol`.
//!
//! The list is **versioned** and append-only: a version, once released, never changes. The
//! compiler writes the members of the version a pack uses into the bundle (as the class's
//! condition) and records the version number, so a newer filter or compiler that knows more
//! operations never changes what an existing bundle allows. A new operation goes into a new
//! version, which packs get when they are recompiled (or pin with `mcp_protocol N` in the pack
//! header).

/// One version of the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolList {
    /// The version number (1, 2, ...).
    pub version: u16,
    /// Operations in the list, exactly as the filter names them (`Action::operation`).
    pub operations: &'static [&'static str],
    /// Operation prefixes in the list (`notifications/`: every notification).
    pub prefixes: &'static [&'static str],
    /// Members of the prefix families that clients send today (what `policyc check` looks at
    /// when it asks whether a pack decides every notification).
    pub known_prefixed: &'static [&'static str],
}

impl ProtocolList {
    /// Whether an MCP action with this operation is protocol traffic in this version.
    pub fn contains(&self, operation: &str) -> bool {
        self.operations.contains(&operation)
            || self.prefixes.iter().any(|p| operation.starts_with(p))
    }
}

/// Version 1: client responses, notifications, ping, initialize and discover, lists, completion,
/// logging level, subscriptions, and the transport's body-less GET/HEAD, DELETE and OPTIONS.
pub const V1: ProtocolList = ProtocolList {
    version: 1,
    operations: &[
        // A client's JSON-RPC response to a server request (sampling, elicitation, roots, ping).
        "response",
        "ping",
        "initialize",
        "server/discover",
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "prompts/list",
        "completion/complete",
        "logging/setLevel",
        "resources/subscribe",
        "resources/unsubscribe",
        "subscriptions/listen",
        // Streamable HTTP without a body: GET or HEAD (the server's event stream), DELETE (end of
        // session), OPTIONS (a CORS preflight) on an MCP path.
        "stream/open",
        "session/delete",
        "http/options",
    ],
    prefixes: &["notifications/"],
    known_prefixed: &[
        "notifications/initialized",
        "notifications/cancelled",
        "notifications/progress",
        "notifications/roots/list_changed",
    ],
};

/// Every released version, oldest first.
pub const VERSIONS: &[ProtocolList] = &[V1];

/// The newest version (what a pack that does not pin one is compiled with).
pub const LATEST: u16 = 1;

/// The name of the built-in class.
pub const CLASS_NAME: &str = "mcp_protocol";

/// A released version of the list, or `None`.
pub fn list(version: u16) -> Option<&'static ProtocolList> {
    VERSIONS.iter().find(|l| l.version == version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_numbered_in_order_and_latest_is_the_last() {
        for (i, l) in VERSIONS.iter().enumerate() {
            assert_eq!(usize::from(l.version), i + 1);
        }
        assert_eq!(VERSIONS.last().map(|l| l.version), Some(LATEST));
        assert!(list(0).is_none() && list(LATEST + 1).is_none());
    }

    #[test]
    fn v1_holds_the_protocol_and_not_the_acting_operations() {
        for op in [
            "response",
            "notifications/initialized",
            "notifications/anything/new",
            "http/options",
            "session/delete",
            "stream/open",
            "logging/setLevel",
        ] {
            assert!(V1.contains(op), "{op}");
        }
        for op in [
            "tools/call",
            "resources/read",
            "prompts/get",
            "tools/result",
            "OPTIONS",
            "notifications",
            "logging/setlevel",
        ] {
            assert!(!V1.contains(op), "{op}");
        }
        assert!(V1.known_prefixed.iter().all(|op| V1.contains(op)));
    }
}
