//! Diagnostics: errors and warnings with a span, a message and an optional hint, rendered like
//! rustc or Cedar:
//!
//! ```text
//! error: unknown field `target.hots`
//!  --> policy.pcl:12:8
//!    |
//! 12 |   when target.hots == "x"
//!    |        ^^^^^^^^^^^
//!    = help: did you mean `target.host`?
//! ```
//!
//! and as JSON for `--format json`. Messages are lowercase and name the user's input in backticks.

use crate::ast::Span;
use serde::Serialize;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The policy cannot be compiled.
    Error,
    /// The policy compiles but probably does not do what its author meant.
    Warning,
}

/// One message about a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, lowercase, naming the user's input in backticks.
    pub message: String,
    /// Where.
    pub span: Span,
    /// How to fix it, if we know (`did you mean `target.host`?`).
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span,
            hint: None,
        }
    }

    /// A warning at `span`.
    pub fn warning(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            message: message.into(),
            span,
            hint: None,
        }
    }

    /// The same diagnostic with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Render as text, rustc style, with the source line and a caret under the span.
    pub fn render(&self, file: &str, src: &str) -> String {
        let label = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let line_no = self.span.line.max(1);
        let col = self.span.col.max(1);
        let text = src
            .lines()
            .nth(usize::try_from(line_no).unwrap_or(1).saturating_sub(1))
            .unwrap_or("");
        let gutter = line_no.to_string().len();
        let pad = " ".repeat(gutter);
        // Caret width: the span's characters on this line (at least one).
        let start_char = usize::try_from(col).unwrap_or(1).saturating_sub(1);
        let line_chars = text.chars().count();
        let span_chars = src
            .get(self.span.start..self.span.end.max(self.span.start))
            .map(|s| s.lines().next().unwrap_or("").chars().count())
            .unwrap_or(1);
        let width = span_chars.min(line_chars.saturating_sub(start_char)).max(1);
        let lead: String = text
            .chars()
            .take(start_char)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let mut out = format!(
            "{label}: {}\n{pad}--> {file}:{line_no}:{col}\n{pad} |\n{line_no} | {text}\n{pad} | {lead}{}\n",
            self.message,
            "^".repeat(width)
        );
        if let Some(h) = &self.hint {
            out.push_str(&format!("{pad} = help: {h}\n"));
        }
        out
    }

    /// The JSON form used by `--format json`.
    pub fn to_json(&self, file: &str) -> serde_json::Value {
        serde_json::json!({
            "severity": self.severity,
            "message": self.message,
            "file": file,
            "line": self.span.line,
            "column": self.span.col,
            "start": self.span.start,
            "end": self.span.end,
            "hint": self.hint,
        })
    }
}

/// Edit distance between two strings (Levenshtein, over chars), for "did you mean" hints.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i.saturating_add(1)];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev.get(j).copied().unwrap_or(0) + usize::from(ca != *cb);
            let del = prev.get(j.saturating_add(1)).copied().unwrap_or(0) + 1;
            let ins = cur.get(j).copied().unwrap_or(0) + 1;
            cur.push(sub.min(del).min(ins));
        }
        prev = cur;
    }
    prev.last().copied().unwrap_or(0)
}

/// The closest candidate to `word`, if it is close enough to be a plausible typo.
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let limit = (word.chars().count().saturating_add(2) / 3).max(1);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= limit && *c != word)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_and_suggestion() {
        assert_eq!(edit_distance("hots", "host"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            suggest("target.hots", ["target.host", "target.port"]),
            Some("target.host".to_owned())
        );
        assert_eq!(suggest("zzz", ["target.host"]), None);
    }
}
