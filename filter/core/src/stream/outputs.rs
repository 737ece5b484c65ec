//! What a decided request leaves behind for the agent, the upstream and the access log: the
//! `x-portcullis-*` headers, and the filter state Envoy's access log reads
//! (`%FILTER_STATE(portcullis.*)%`; docs/receipts.md).

use bundle::receipt::{self, Receipt};

use crate::config::ReceiptHeader;
use crate::host::Host;
use crate::limits::{MAX_RECEIPT_HEADER_BYTES, MAX_WARNING_BYTES};

/// Header carrying receipts (base64url of the receipt JSON; comma-separated for batches).
pub const RECEIPT_HEADER: &str = "x-portcullis-receipt";
/// Header carrying the enforced decision.
pub const DECISION_HEADER: &str = "x-portcullis-decision";
/// Header carrying warn-mode warnings (`rule: reason`, joined by `; `).
pub const WARNING_HEADER: &str = "x-portcullis-warning";
/// Header an agent retries a STEP_UP with.
pub use bundle::approval::APPROVAL_HEADER;

/// The filter-state keys the access log reads.
const STATE_DECISION: &str = "portcullis.decision";
const STATE_RULE: &str = "portcullis.rule";
const STATE_SESSION: &str = "portcullis.session";
pub(super) const STATE_RECEIPT: &str = "portcullis.receipt";

/// The receipts as filter state (one JSON line, or a JSON array of them) and as the
/// `x-portcullis-receipt` value `mode` asks for: base64url of each JSON line, comma-separated (the
/// receipt ids instead when that is too long), the receipt ids (hex hashes), or nothing (empty).
pub(super) fn receipts_out(
    rs: &[(&Receipt, &str)],
    mode: ReceiptHeader,
) -> (Option<String>, String) {
    use base64::Engine as _;
    let json = match rs {
        [] => None,
        [(_, one)] => Some((*one).to_owned()),
        many => Some(format!(
            "[{}]",
            many.iter().map(|(_, l)| *l).collect::<Vec<_>>().join(",")
        )),
    };
    let ids = || {
        rs.iter()
            .map(|(r, _)| receipt::hash_hex(&r.hash))
            .collect::<Vec<_>>()
            .join(",")
    };
    let header = match mode {
        ReceiptHeader::None => String::new(),
        ReceiptHeader::Id => ids(),
        ReceiptHeader::Full => {
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let full = rs
                .iter()
                .map(|(_, l)| b64.encode(l))
                .collect::<Vec<_>>()
                .join(",");
            if full.len() <= MAX_RECEIPT_HEADER_BYTES {
                full
            } else {
                ids()
            }
        }
    };
    (json, header)
}

/// The `x-portcullis-warning` value of warn-mode warnings: joined, without control characters,
/// cut at [`MAX_WARNING_BYTES`] on a character boundary.
pub(super) fn warning_value(warnings: &[String]) -> Option<String> {
    if warnings.is_empty() {
        return None;
    }
    let mut w = warnings.join("; ");
    w.retain(|c| !c.is_control());
    if w.len() > MAX_WARNING_BYTES {
        let mut cut = MAX_WARNING_BYTES;
        while !w.is_char_boundary(cut) {
            cut = cut.saturating_sub(1);
        }
        w.truncate(cut);
    }
    Some(w)
}

/// The receipt header as an extra header of a local answer (none when empty).
pub(super) fn receipt_extra(header: &str) -> Vec<(&'static str, &str)> {
    if header.is_empty() {
        Vec::new()
    } else {
        vec![(RECEIPT_HEADER, header)]
    }
}

/// Filter state for the access log.
pub(super) fn set_state(
    host: &dyn Host,
    decision: &str,
    rule: &str,
    session: &str,
    receipt: Option<&str>,
) {
    host.set_filter_state(STATE_DECISION, decision.as_bytes());
    host.set_filter_state(STATE_RULE, rule.as_bytes());
    host.set_filter_state(STATE_SESSION, session.as_bytes());
    if let Some(r) = receipt {
        host.set_filter_state(STATE_RECEIPT, r.as_bytes());
    }
}
