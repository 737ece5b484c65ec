//! Code generation: a checked [`crate::ast::Policy`] -> unsigned bundle bytes (deterministic: the
//! same policy always gives the same bytes). Sign the result with [`bundle::sign()`].

use regex_automata::dfa::{StartKind, dense};
use regex_automata::util::syntax;

use crate::ast::{Policy, Span};

/// Largest DFA a `matches` pattern may compile to (the bundle's per-regex limit is larger).
pub const MAX_REGEX_DFA_BYTES: usize = 256 * 1024;

/// Why a policy could not be compiled (after the checker, only resource limits and regexes the
/// DFA engine cannot handle remain).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    /// What went wrong (lowercase sentence, names the user's input in backticks).
    pub message: String,
    /// Where.
    pub span: Span,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.span.line, self.span.col, self.message)
    }
}

impl std::error::Error for CompileError {}

/// Compile a regex for whole-value matching to a serialized dense DFA (little-endian).
pub(crate) fn regex_dfa(pattern: &str) -> Result<Vec<u8>, String> {
    let dfa = dense::Builder::new()
        .configure(
            dense::Config::new()
                .start_kind(StartKind::Anchored)
                .dfa_size_limit(Some(MAX_REGEX_DFA_BYTES))
                .determinize_size_limit(Some(MAX_REGEX_DFA_BYTES.saturating_mul(4))),
        )
        .syntax(syntax::Config::new().unicode(true).utf8(true))
        .build(&format!("(?:{pattern})\\z"))
        .map_err(|e| format!("regex `{pattern}` cannot be compiled to an automaton: {e}"))?;
    let (bytes, pad) = dfa.to_bytes_little_endian();
    Ok(bytes.get(pad..).unwrap_or_default().to_vec())
}

/// Compile a policy to an unsigned bundle.
pub fn compile(policy: &Policy) -> Result<Vec<u8>, CompileError> {
    let program = crate::lower::lower(policy)?;
    Ok(bundle::encode(&program))
}
