//! The timeline page as HTML: one self-contained file (inline CSS and JavaScript, no network,
//! no external resource), readable without JavaScript; the script only filters.
//!
//! Everything that comes from a log is untrusted (an agent chooses its tool names, argument
//! keys, session ids; a log can be edited). It reaches the page only through [`esc`], as text
//! or as a double-quoted attribute value, never as markup, a URL or script. As a second wall,
//! the page's Content-Security-Policy allows no source at all except the page's own style and
//! script, named by their SHA-256: an injected `<script>`, event handler or `style` attribute
//! would not run even if a string escaped. The script reads filter values from the DOM and
//! compares strings; it never writes HTML.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use base64::Engine as _;
use bundle::receipt::{FindingKind, Receipt};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Chain, Page, Row, Selector, Sig, decision_key, is_result, is_stop, subject};
use crate::cli::receipts::{identity_text, utc};

/// The decisions in strictness order, then `none` (session events), as the filter lists them.
const DECISIONS: [&str; 6] = ["DENY", "STEP_UP", "DEFER", "MODIFY", "ALLOW", "none"];

/// Body members the page shows in their own places; any other member (a newer body format)
/// is listed under "other fields", so nothing a receipt says is hidden.
const SHOWN: [&str; 23] = [
    "action",
    "approval",
    "bundle",
    "decision",
    "drift_milli",
    "effects",
    "event",
    "identity",
    "intent",
    "intent_source",
    "matched",
    "modifications",
    "prev",
    "reason",
    "rule",
    "seq",
    "session",
    "trace",
    "ts_ms",
    "v",
    "warnings",
    "would_be",
    "hash",
];

/// HTML-escape `s` for text and for double- or single-quoted attribute values.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters other than tab and newline are shown, not interpreted.
            c if c.is_control() && c != '\t' && c != '\n' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page's style sheet, inlined (and named by its hash in the CSP).
const STYLE: &str = include_str!("page.css");

/// The page's script: the decision, tool and trace filters (state kept in the URL fragment).
const SCRIPT: &str = include_str!("page.js");

/// The whole page.
pub(crate) fn render(page: &Page) -> String {
    let csp = format!(
        "default-src 'none'; style-src {}; script-src {}; base-uri 'none'; form-action 'none'",
        csp_hash(STYLE),
        csp_hash(SCRIPT)
    );
    let label = page.selector.label();
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{}\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>Portcullis timeline: {}</title><style>{STYLE}</style></head><body>\n",
        esc(&csp),
        esc(&label)
    );
    header(&mut out, page);
    filters(&mut out, page);
    out.push_str("<main>\n");
    for (i, chain) in page.chains.iter().enumerate() {
        chain_section(&mut out, page, chain, i);
    }
    if !page.unreadable.is_empty() {
        out.push_str("<h2>Unreadable lines</h2><ul class=\"plain problem\" id=\"unreadable\">");
        for u in &page.unreadable {
            let _ = write!(out, "<li>{}</li>", esc(u));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</main>\n");
    footer(&mut out, page);
    let _ = write!(out, "<script>{SCRIPT}</script>\n</body></html>\n");
    out
}

fn header(out: &mut String, page: &Page) {
    let total = page.receipts();
    let _ = write!(
        out,
        "<header><h1>Session timeline: {}</h1><p class=\"sub\">{total} receipt(s) in {} chain(s), \
         in chain order, read from {}</p>",
        esc(&page.selector.label()),
        page.chains.len(),
        page.files
            .iter()
            .map(|f| format!("<code>{}</code>", esc(f)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let bad = page
        .chains
        .iter()
        .flat_map(|c| &c.rows)
        .filter(|r| !r.verified())
        .count();
    if page.ok() {
        let _ = write!(
            out,
            "<div class=\"verdict ok\" id=\"verdict\">Verified: every receipt's hash, chain link and \
             signature check out with the trusted key(s); every receipt is attested by a signature.</div>"
        );
    } else {
        let _ = write!(
            out,
            "<div class=\"verdict bad\" id=\"verdict\">NOT VERIFIED: {bad} receipt(s) fail a check or \
             are not attested by a signature{}. Each receipt says which.</div>",
            if page.unreadable.is_empty() {
                String::new()
            } else {
                format!(", {} log line(s) are unreadable", page.unreadable.len())
            }
        );
    }
    out.push_str("</header>\n");
}

fn filters(out: &mut String, page: &Page) {
    let rows: Vec<&Row> = page.chains.iter().flat_map(|c| &c.rows).collect();
    let mut decisions: BTreeMap<&str, usize> = BTreeMap::new();
    let mut tools: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        let d = decisions.entry(decision_key(&r.receipt)).or_insert(0);
        *d = d.saturating_add(1);
        let t = tools.entry(subject(&r.receipt)).or_insert(0);
        *t = t.saturating_add(1);
    }
    out.push_str("<section id=\"filters\"><div class=\"inner\"><fieldset id=\"f-decision\"><legend>Decision</legend>");
    for d in DECISIONS {
        if let Some(n) = decisions.get(d) {
            let _ = write!(
                out,
                "<label><input type=\"checkbox\" data-filter=\"decision\" value=\"{d}\" checked> \
                 <span class=\"badge b-{d}\">{}</span> <span class=\"count\">{n}</span></label>",
                if d == "none" { "session event" } else { d }
            );
        }
    }
    out.push_str("</fieldset><fieldset id=\"f-tool\"><legend>Tool</legend>");
    for (t, n) in &tools {
        let _ = write!(
            out,
            "<label><input type=\"checkbox\" data-filter=\"tool\" value=\"{}\" checked> <code>{}</code> \
             <span class=\"count\">{n}</span></label>",
            esc(t),
            esc(t)
        );
    }
    out.push_str(
        "<button type=\"button\" data-all=\"tool\" data-on=\"1\">all</button>\
         <button type=\"button\" data-all=\"tool\" data-on=\"0\">none</button></fieldset>",
    );
    if let Selector::Trace(t) = &page.selector {
        let n = rows.iter().filter(|r| r.in_trace).count();
        let _ = write!(
            out,
            "<fieldset id=\"f-trace\"><label><input type=\"checkbox\" data-filter=\"trace\" value=\"1\"> \
             only the {n} receipt(s) of trace <code>{}</code></label></fieldset>",
            esc(t)
        );
    }
    let _ = writeln!(
        out,
        "<span id=\"shown-line\">showing <b id=\"shown\">{}</b> of {} receipts</span></div></section>",
        rows.len(),
        rows.len()
    );
}

fn chain_section(out: &mut String, page: &Page, chain: &Chain, index: usize) {
    let s = &chain.summary;
    let same_id = page
        .chains
        .iter()
        .filter(|c| c.summary.session == s.session)
        .count();
    let _ = write!(
        out,
        "<section class=\"chain\" id=\"chain-{index}\"><h2>Session <code>{}</code>{}</h2>",
        esc(&s.session),
        if same_id > 1 {
            " (this session id ended and started a new chain; chains are shown in time order)"
        } else {
            ""
        }
    );
    out.push_str("<dl class=\"chain-summary\">");
    let first = chain
        .rows
        .iter()
        .find(|r| r.receipt.body.identity.is_some());
    if let Some(id) = first.and_then(|r| r.receipt.body.identity.as_ref()) {
        let _ = write!(out, "<dt>identity</dt><dd>{}</dd>", esc(&identity_text(id)));
    }
    let intents: Vec<&str> = chain
        .rows
        .iter()
        .filter_map(|r| r.receipt.body.intent.as_deref())
        .fold(Vec::new(), |mut v, i| {
            if !v.contains(&i) {
                v.push(i);
            }
            v
        });
    if !intents.is_empty() {
        let _ = write!(
            out,
            "<dt>intent</dt><dd>{}</dd>",
            intents
                .iter()
                .map(|i| format!("<code>{}</code>", esc(i)))
                .collect::<Vec<_>>()
                .join(" → ")
        );
    }
    let _ = write!(
        out,
        "<dt>chain</dt><dd>receipts {}..={} ({} read, {} signed), {}, {}</dd>",
        s.first_seq,
        s.last_seq,
        s.receipts,
        s.signed,
        match s.attested_through {
            Some(n) => format!("attested through {n}"),
            None => "not attested by any signature".to_owned(),
        },
        if s.ended {
            "ended (signed session_end)"
        } else {
            "open (no session_end in these logs)"
        }
    );
    let _ = write!(
        out,
        "<dt>findings</dt><dd class=\"{}\">{} finding(s), {} notice(s)</dd></dl>",
        if s.findings == 0 { "" } else { "problem" },
        s.findings,
        s.notices
    );
    out.push_str("<ol class=\"timeline\">\n");
    for row in &chain.rows {
        receipt_item(out, row, index);
    }
    out.push_str("</ol></section>\n");
}

fn status_text(row: &Row) -> (&'static str, String) {
    if !row.problems.is_empty() {
        let kinds: Vec<&str> = row.problems.iter().map(|p| p.kind.as_str()).collect();
        return ("bad", format!("✗ {}", kinds.join(", ")));
    }
    match &row.sig {
        Sig::Valid { kid } => ("ok", format!("✓ signed {kid}")),
        Sig::Covered { by } => ("ok", format!("✓ chained, attested by #{by}")),
        Sig::Unattested => ("warn", "! not attested by a signature".to_owned()),
        Sig::Invalid { kid } => ("bad", format!("✗ signature by {kid} rejected")),
    }
}

fn fact(out: &mut String, name: &str, html: &str) {
    let _ = write!(out, "<dt>{name}</dt><dd>{html}</dd>");
}

fn code_list(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("<code>{}</code>", esc(i)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn receipt_item(out: &mut String, row: &Row, chain: usize) {
    let r: &Receipt = &row.receipt;
    let b = &r.body;
    let decision = decision_key(r);
    let tool = subject(r);
    let (class, status) = status_text(row);
    let _ = write!(
        out,
        "<li class=\"receipt d-{decision}{}\" id=\"r-{chain}-{}\" data-decision=\"{decision}\" \
         data-tool=\"{}\" data-trace=\"{}\" data-verified=\"{}\"><div class=\"head\">\
         <span class=\"seq\">#{}</span><time>{}</time><span class=\"badge b-{decision}\">{}</span>",
        if row.in_trace { " trace" } else { "" },
        b.seq,
        esc(&tool),
        u8::from(row.in_trace),
        u8::from(row.verified()),
        b.seq,
        esc(&utc(b.ts_ms)),
        if decision == "none" {
            b.event.as_str()
        } else {
            decision
        },
    );
    let mode = b
        .matched
        .iter()
        .find(|m| b.rule.as_deref() == Some(m.rule.as_str()))
        .and_then(|m| serde_json::to_value(m.mode).ok())
        .and_then(|v| v.as_str().map(str::to_owned));
    if let Some(m) = mode.filter(|m| m != "enforce") {
        let _ = write!(out, "<span class=\"badge b-mode\">{}</span>", esc(&m));
    }
    if b.rule.as_deref().is_some_and(is_stop) {
        out.push_str("<span class=\"badge b-stop\">stop condition</span>");
    }
    if b.effects.iter().any(|e| e == "kill") {
        out.push_str("<span class=\"badge b-kill\">kill</span>");
    }
    if let Some(a) = &b.action {
        let _ = write!(
            out,
            "<span class=\"what\"><code>{}</code> {}</span>",
            esc(&a.operation),
            esc(&tool)
        );
    }
    if b.event.as_str() != "action" {
        let _ = write!(
            out,
            "<span class=\"badge b-event\">{}</span>",
            esc(b.event.as_str())
        );
    }
    let _ = write!(
        out,
        "<span class=\"status {class}\">{}</span></div><dl class=\"facts\">",
        esc(&status)
    );
    facts(out, row);
    out.push_str("</dl></details></li>\n");
}

fn facts(out: &mut String, row: &Row) {
    let r = &row.receipt;
    let b = &r.body;
    let value = serde_json::to_value(b).unwrap_or(Value::Null);
    if let Some(rule) = &b.rule {
        let stop = if is_stop(rule) {
            " <span class=\"problem\">(a stop condition of the intent was reached)</span>"
        } else {
            ""
        };
        fact(
            out,
            "rule",
            &format!(
                "<code>{}</code>: {}{stop}",
                esc(rule),
                esc(b.reason.as_deref().unwrap_or(""))
            ),
        );
    }
    if let (Some(w), Some(d)) = (b.would_be, b.decision)
        && w != d
    {
        fact(
            out,
            "would be",
            &format!("{} in enforce mode", esc(w.as_str())),
        );
    }
    if b.matched.len() > 1
        || b.matched
            .first()
            .is_some_and(|m| b.rule.as_deref() != Some(m.rule.as_str()))
    {
        let items: Vec<String> = b
            .matched
            .iter()
            .map(|m| {
                let mode = serde_json::to_value(m.mode)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                format!(
                    "<code>{}</code> {} ({})",
                    esc(&m.rule),
                    esc(m.decision.as_str()),
                    esc(&mode)
                )
            })
            .collect();
        fact(out, "matched rules", &items.join(", "));
    }
    if let Some(id) = &b.identity {
        fact(out, "identity", &esc(&identity_text(id)));
    }
    if b.intent.is_some() || b.drift_milli.is_some() {
        let mut s = match &b.intent {
            Some(i) => format!("<code>{}</code>", esc(i)),
            None => "none".to_owned(),
        };
        // The intent's source, once receipts carry it (#16); shown as the receipt states it.
        if let Some(src) = value.get("intent_source").filter(|v| !v.is_null()) {
            let text = src.as_str().map_or_else(|| src.to_string(), str::to_owned);
            let _ = write!(s, " (source: {})", esc(&text));
        }
        if let Some(d) = b.drift_milli {
            let _ = write!(s, " · drift {}", drift_text(d));
        }
        fact(out, "intent", &s);
    }
    let taints: Vec<String> = b
        .effects
        .iter()
        .filter_map(|e| e.strip_prefix("taint:").map(str::to_owned))
        .collect();
    if !taints.is_empty() {
        fact(
            out,
            "taints added",
            &format!("<span class=\"taint\">{}</span>", code_list(&taints)),
        );
    }
    let others: Vec<String> = b
        .effects
        .iter()
        .filter(|e| !e.starts_with("taint:"))
        .cloned()
        .collect();
    if !others.is_empty() {
        fact(out, "session effects", &code_list(&others));
    }
    if !row.state.is_clean() {
        let mut parts = Vec::new();
        if !row.state.taints.is_empty() {
            parts.push(format!(
                "tainted {}",
                code_list(&row.state.taints.iter().cloned().collect::<Vec<_>>())
            ));
        }
        if !row.state.revoked.is_empty() {
            parts.push(code_list(
                &row.state.revoked.iter().cloned().collect::<Vec<_>>(),
            ));
        }
        if row.state.read_only {
            parts.push("read-only".to_owned());
        }
        if row.state.killed {
            parts.push("<b>killed</b>".to_owned());
        }
        fact(out, "session after", &parts.join("; "));
    }
    if let Some(ap) = &b.approval {
        fact(
            out,
            "approval",
            &format!(
                "token <code>{}</code> by approver key <code>{}</code>, group <code>{}</code>",
                esc(&ap.token_id),
                esc(&ap.key_id),
                esc(&ap.group)
            ),
        );
    }
    if !b.modifications.is_empty() {
        let name = if is_result(r) {
            "redacted / rewritten result"
        } else {
            "modified"
        };
        fact(out, name, &code_list(&b.modifications));
    }
    if !b.warnings.is_empty() {
        fact(out, "warnings to agent", &code_list(&b.warnings));
    }
    if let Some(a) = &b.action {
        if a.secrets || !a.data_classes.is_empty() {
            let mut s = String::new();
            if a.secrets {
                s.push_str("secret-like value; ");
            }
            let _ = write!(s, "data classes {}", code_list(&a.data_classes));
            fact(out, "risk", &s);
        }
        if !a.arg_keys.is_empty() {
            fact(
                out,
                if is_result(r) {
                    "inspected"
                } else {
                    "argument names"
                },
                &format!(
                    "{} <span class=\"muted\">(values are never in receipts)</span>",
                    code_list(&a.arg_keys)
                ),
            );
        }
        // A result's digest stands for what the agent was sent: shown with the facts.
        if is_result(r) {
            fact(
                out,
                "result digest",
                &format!("<code>{}</code>", esc(&a.digest)),
            );
        }
    }
    // The rest is for checking, not for reading the story: behind a disclosure.
    let mut more = String::new();
    if let Some(a) = &b.action {
        let t = &a.target;
        if !t.host.is_empty() || !t.server.is_empty() {
            let mut s = format!(
                "<code>{}://{}:{}{}</code>",
                esc(&t.scheme),
                esc(&t.host),
                t.port,
                esc(&t.path)
            );
            if !t.server.is_empty() {
                let _ = write!(s, " server <code>{}</code>", esc(&t.server));
            }
            let _ = write!(s, " · {} bytes", a.size);
            fact(&mut more, "target", &s);
        }
        if !is_result(r) {
            fact(
                &mut more,
                "action digest",
                &format!("<code>{}</code>", esc(&a.digest)),
            );
        }
    }
    if let Some(t) = &b.trace {
        fact(&mut more, "trace", &format!("<code>{}</code>", esc(t)));
    }
    if let Some(bu) = &b.bundle {
        fact(
            &mut more,
            "bundle",
            &format!(
                "<code>{}</code> {} <code>{}</code>",
                esc(&bu.pack),
                esc(&bu.version),
                esc(&bu.hash)
            ),
        );
    }
    other_fields(&mut more, &value);
    chain_facts(&mut more, row);
    let _ = write!(
        out,
        "</dl><details class=\"more\"><summary>target, digest, bundle, hash chain</summary>\
         <dl class=\"facts\">{more}"
    );
}

fn other_fields(out: &mut String, value: &Value) {
    let Some(obj) = value.as_object() else {
        return;
    };
    let rest: Vec<String> = obj
        .iter()
        .filter(|(k, v)| !SHOWN.contains(&k.as_str()) && !v.is_null())
        .map(|(k, v)| {
            format!(
                "<code>{}</code> = <code>{}</code>",
                esc(k),
                esc(&v.to_string())
            )
        })
        .collect();
    if !rest.is_empty() {
        fact(out, "other fields", &rest.join("; "));
    }
}

fn chain_facts(out: &mut String, row: &Row) {
    let r = &row.receipt;
    let mut s = format!(
        "hash <code>{}</code><br>prev <code>{}</code><br>",
        bundle::receipt::hash_hex(&r.hash),
        esc(&r.body.prev)
    );
    match &row.sig {
        Sig::Valid { kid } => {
            let _ = write!(s, "signature by <code>{}</code> verifies", esc(kid));
        }
        Sig::Covered { by } => {
            let _ = write!(
                s,
                "not signed itself; the valid signature on receipt {by} attests it through the chain"
            );
        }
        Sig::Unattested => s.push_str(
            "<span class=\"notice\">not signed, and no later valid signature attests it (yet)</span>",
        ),
        Sig::Invalid { kid } => {
            let _ = write!(
                s,
                "<span class=\"problem\">signed by <code>{}</code>, which does not verify with a trusted key</span>",
                esc(kid)
            );
        }
    }
    for p in &row.problems {
        let _ = write!(
            s,
            "<br><span class=\"problem\">{}: {}</span>",
            esc(p.kind.as_str()),
            esc(&p.detail)
        );
    }
    for n in &row.notices {
        let _ = write!(
            s,
            "<br><span class=\"notice\">{}: {}</span>",
            FindingKind::Reordered.as_str(),
            esc(n)
        );
    }
    let _ = write!(s, "<br>read at <code>{}</code>", esc(&row.place));
    fact(out, "receipt", &s);
}

fn footer(out: &mut String, page: &Page) {
    let _ = writeln!(
        out,
        "<footer><p>Written by <code>policyc receipts timeline</code>. Verified with trusted key(s) {}. \
         Receipts are in chain order (sequence number and previous hash, inside the signed body); \
         Envoy writes an access-log line when a stream ends, so log order may differ. \
         Argument values, headers and bodies are never in receipts: digests stand for them.{}</p></footer>",
        page.key_ids
            .iter()
            .map(|k| format!("<code>{}</code>", esc(k)))
            .collect::<Vec<_>>()
            .join(", "),
        if page.other_sessions > 0 {
            format!(
                " The logs hold {} other session(s), not shown.",
                page.other_sessions
            )
        } else {
            String::new()
        }
    );
}

/// `drift_milli` as a decimal: 125 -> `0.125`, -1500 -> `-1.500`.
fn drift_text(milli: i64) -> String {
    let sign = if milli < 0 { "-" } else { "" };
    let abs = milli.unsigned_abs();
    format!("{sign}{}.{:03}", abs / 1000, abs % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_neutralizes_markup_quotes_and_controls() {
        assert_eq!(
            esc(r#"<img src=x onerror="a('b')">&"#),
            "&lt;img src=x onerror=&quot;a(&#39;b&#39;)&quot;&gt;&amp;"
        );
        assert_eq!(esc("a\u{0}b\u{1b}"), "a\\u{0}b\\u{1b}");
        assert_eq!(esc("tab\tnl\n"), "tab\tnl\n");
    }

    #[test]
    fn drift_is_written_as_a_decimal() {
        assert_eq!(drift_text(0), "0.000");
        assert_eq!(drift_text(125), "0.125");
        assert_eq!(drift_text(-1500), "-1.500");
        assert_eq!(drift_text(i64::MIN), "-9223372036854775.808");
    }

    #[test]
    fn csp_names_the_inline_style_and_script() {
        let h = csp_hash("x");
        assert!(h.starts_with("'sha256-") && h.ends_with('\''));
        assert_ne!(csp_hash(STYLE), csp_hash(SCRIPT));
    }
}
