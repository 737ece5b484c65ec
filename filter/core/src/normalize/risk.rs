//! Inline risk flags: secret-like values and data classes in arguments and bodies.
//!
//! All detectors run in one hand-written pass over each string's bytes (each byte dispatches to
//! the detectors that can start there; no backtracking; every look-ahead is bounded), so the cost
//! is linear in the input, which the body limit already bounds. Detectors:
//!
//! | finding | pattern | sets |
//! |---|---|---|
//! | AWS access key id | `AKIA` / `ASIA` + 16 of `[0-9A-Z]` | `secrets`, `credential` |
//! | API key | `sk-` / `sk_` (incl. `sk-live-`, `sk_live_`) + 20 or more of `[A-Za-z0-9_-]` | `secrets`, `credential` |
//! | GitHub token | `ghp_` `gho_` `ghu_` `ghs_` `ghr_` + 36 or more alphanumerics; `github_pat_` + 22 or more | `secrets`, `credential` |
//! | Slack token | `xoxb-` `xoxp-` `xoxa-` `xoxs-` + 10 or more | `secrets`, `credential` |
//! | PEM private key | `-----BEGIN ` ... `PRIVATE KEY-----` within 40 bytes | `secrets`, `credential` |
//! | bearer token | `bearer ` (any case) + 16 or more token characters | `secrets`, `credential` |
//! | high-entropy token | a run of 32 to 512 base64/url characters with upper, lower and digit and Shannon entropy of at least 4.2 bits per character | `secrets`, `credential` |
//! | email address | `local@domain.tld` | `pii` |
//! | US SSN | `ddd-dd-dddd` not inside a longer digit run, area not 000/666/9xx, group not 00, serial not 0000 | `pii` |
//! | payment card | 13 to 19 digits (single spaces or dashes between allowed) passing the Luhn check | `pii`, `payment_card` |
//!
//! Object keys are scanned like string values.

use bundle::action::Risk;
use serde_json::Value;

/// The replacement written over a redacted value.
pub const REDACTED: &str = "[REDACTED]";

#[derive(Clone, Copy, Default)]
struct Findings {
    secret: bool,
    pii: bool,
    card: bool,
}

impl Findings {
    fn into_risk(self) -> Risk {
        let mut classes = Vec::new();
        if self.secret {
            classes.push("credential".to_owned());
        }
        if self.card {
            classes.push("payment_card".to_owned());
        }
        if self.pii || self.card {
            classes.push("pii".to_owned());
        }
        classes.sort();
        Risk {
            secrets: self.secret,
            data_classes: classes,
        }
    }

    /// Scan `s` as written and, when it holds escapes, as a reader decodes it
    /// ([`super::unescape`]): a server reading a form or a URL turns `AKIA%49OSF...` into a key.
    /// Only the parts a decoding can change are read again ([`decoded_regions`]), so prose full
    /// of `\n` or `100%` is not scanned twice.
    fn scan(&mut self, s: &str) {
        self.scan_bytes(s.as_bytes());
        if self.done() {
            return;
        }
        for (start, end) in decoded_regions(s) {
            let Some(region) = s.get(start..end) else {
                continue;
            };
            super::unescape::decodings(region, |t| {
                self.scan_bytes(t.as_bytes());
                self.done()
            });
            if self.done() {
                return;
            }
        }
    }

    fn done(&self) -> bool {
        self.secret && self.pii && self.card
    }

    /// One pass over the bytes: each byte dispatches to the detectors that can start there
    /// (prefixes, PEM header, `@`, the first digit of a run), and base64/url runs are measured
    /// on the way for the entropy check. Stops as soon as every finding is made. A byte's roles
    /// come from one table lookup ([`CLASS`]), and a run of bytes that only continue a base64
    /// run (part of a word, no detector starts there) is skipped in one tight loop.
    fn scan_bytes(&mut self, b: &[u8]) {
        if self.done() {
            return;
        }
        let class = |c: u8| CLASS.get(usize::from(c)).copied().unwrap_or(0);
        let mut run_start: Option<usize> = None;
        let mut i = 0usize;
        while let Some(&c) = b.get(i) {
            let k = class(c);
            if k & TRIGGER != 0 {
                if k & PREFIX != 0 {
                    if !self.secret {
                        self.secret = prefixed_at(b, i, c);
                    }
                } else if k & DASH != 0 {
                    if !self.secret {
                        self.secret = pem_at(b, i);
                    }
                } else if k & AT != 0 {
                    if !self.pii {
                        self.pii = email_at(b, i);
                    }
                } else if i == 0 || digit_at(b, i.saturating_sub(1)).is_none() {
                    // A digit that starts a run.
                    if !self.pii {
                        self.pii = ssn_at(b, i);
                    }
                    if !self.card {
                        self.card = card_at(b, i);
                    }
                }
                if self.done() {
                    return;
                }
            }
            if k & B64 != 0 {
                if run_start.is_none() {
                    run_start = Some(i);
                }
                // The bytes after it that only continue the run (no detector starts there) need
                // nothing else: skip them, the common case in long values.
                i = i
                    .saturating_add(1)
                    .saturating_add(quiet_len(b.get(i.saturating_add(1)..).unwrap_or_default()));
                continue;
            }
            if let Some(start) = run_start.take()
                && !self.secret
            {
                self.secret = entropy_run(b, start, i);
                if self.done() {
                    return;
                }
            }
            i = i.saturating_add(1);
        }
        if let Some(start) = run_start
            && !self.secret
        {
            self.secret = entropy_run(b, start, b.len());
        }
    }
}

/// Bytes of context read on each side of an escape's word: more than the longest match a
/// detector makes across white space (a PEM header, `bearer` and its token, a card number with
/// separators).
const ESCAPE_CONTEXT: usize = 64;
/// How far an escape's word is followed on each side: the longest run the entropy check flags
/// (512) and the context. A longer word is cut there (only ever a finding more, never one less).
const ESCAPE_WORD: usize = 512 + ESCAPE_CONTEXT;

/// The parts of `s` a decoding can read differently, as merged `start..end` byte ranges on char
/// boundaries: around each escape that stands for a non-space character, its word (a run without
/// ASCII white space, followed up to [`ESCAPE_WORD`] bytes each way) and [`ESCAPE_CONTEXT`] bytes
/// on each side. Every match of the decoded text that a decoded escape takes part in lies inside
/// one. Linear in `s`: the white space is looked for once, forwards, whatever the escapes.
fn decoded_regions(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out: Vec<(usize, usize)> = Vec::new();
    // Everything before `walked` has been looked at; `word_start` follows the last white space
    // seen there, `next_ws` is the first white space at or after some earlier escape's end.
    let (mut walked, mut word_start, mut next_ws) = (0usize, 0usize, 0usize);
    for (at, len) in super::unescape::spans(s) {
        while walked < at {
            if b.get(walked).is_some_and(u8::is_ascii_whitespace) {
                word_start = walked.saturating_add(1);
            }
            walked = walked.saturating_add(1);
        }
        let after = at.saturating_add(len);
        if next_ws < after {
            next_ws = after;
            while next_ws < b.len() && !b.get(next_ws).is_some_and(u8::is_ascii_whitespace) {
                next_ws = next_ws.saturating_add(1);
            }
        }
        let from = word_start.max(at.saturating_sub(ESCAPE_WORD));
        let to = next_ws.min(after.saturating_add(ESCAPE_WORD));
        let mut start = from.min(at.saturating_sub(ESCAPE_CONTEXT));
        let mut end = to.max(after.saturating_add(ESCAPE_CONTEXT)).min(b.len());
        while !s.is_char_boundary(start) {
            start = start.saturating_sub(1);
        }
        while !s.is_char_boundary(end) {
            end = end.saturating_add(1);
        }
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

/// How many leading bytes of `b` only continue a base64 run: no detector can start there. That
/// is a base64 character that triggers nothing, or a prefix letter (`x`, `s`, `A`, ...) whose next
/// byte rules its prefixes out ([`prefix_plausible`]). Eight bytes per step: under V8 a loop that
/// dispatches on every byte cost Envoy ~8 ns a byte (a 16 KiB argument of `x`s, BENCHMARKS.md).
fn quiet_len(b: &[u8]) -> usize {
    let quiet = |c: u8, next: Option<u8>| {
        let k = CLASS.get(usize::from(c)).copied().unwrap_or(0);
        k & !PREFIX == B64 && (k & PREFIX == 0 || !prefix_plausible(c, next))
    };
    let mut n = 0usize;
    // Eight bytes and the one after them per step, with no early exit inside a step.
    while let Some(step) = b.get(n..n.saturating_add(9)) {
        let all = step.windows(2).fold(true, |all, w| {
            all & matches!(*w, [c, next] if quiet(c, Some(next)))
        });
        if !all {
            break;
        }
        n = n.saturating_add(8);
    }
    while let Some(&c) = b.get(n) {
        if !quiet(c, b.get(n.saturating_add(1)).copied()) {
            break;
        }
        n = n.saturating_add(1);
    }
    n
}

/// Whether a prefixed token could start at prefix letter `c` followed by `next`: its second byte
/// is one every token of that letter has ([`SECOND`]: `AK`/`AS`, `sk`, `gh`/`gi`, `xo`, `be`).
/// False past the end of the input. [`quiet_len`] asks it for every prefix letter it skips.
#[inline]
fn prefix_plausible(c: u8, next: Option<u8>) -> bool {
    let [s1, s2] = SECOND.get(usize::from(c)).copied().unwrap_or([0, 0]);
    next.is_some_and(|n| n != 0 && (n == s1 || n == s2))
}

/// For each prefix letter, the second bytes its tokens can have (0: none).
#[expect(
    clippy::indexing_slicing,
    reason = "u8 indices into a 256-entry table, in a const block"
)]
static SECOND: [[u8; 2]; 256] = {
    let mut t = [[0u8; 2]; 256];
    t[b'A' as usize] = [b'K', b'S'];
    t[b's' as usize] = [b'k', b'k'];
    t[b'g' as usize] = [b'h', b'i'];
    t[b'x' as usize] = [b'o', b'o'];
    t[b'b' as usize] = [b'e', b'E'];
    t[b'B' as usize] = [b'e', b'E'];
    t
};

/// A byte can start a prefixed token (`AKIA`, `sk-`, `ghp_`, `xoxb-`, `bearer`, ...).
const PREFIX: u8 = 1;
/// A byte can start a PEM header.
const DASH: u8 = 2;
/// A byte can be the `@` of an email address.
const AT: u8 = 4;
/// A digit (SSN, payment card).
const DIGIT: u8 = 8;
/// A base64/url character (entropy runs).
const B64: u8 = 16;
/// Any detector may start here.
const TRIGGER: u8 = PREFIX | DASH | AT | DIGIT;

/// The roles of each byte value, for [`Findings::scan_bytes`].
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c: usize = 0;
    while c < 256 {
        #[expect(clippy::cast_possible_truncation, reason = "c < 256")]
        let b = c as u8;
        let mut k = 0;
        if matches!(b, b'A' | b's' | b'g' | b'x' | b'b' | b'B') {
            k |= PREFIX;
        }
        if b == b'-' {
            k |= DASH;
        }
        if b == b'@' {
            k |= AT;
        }
        if b.is_ascii_digit() {
            k |= DIGIT;
        }
        if is_b64_char(b) {
            k |= B64;
        }
        #[expect(
            clippy::indexing_slicing,
            reason = "c < 256 = t.len(), in a const block"
        )]
        {
            t[c] = k;
        }
        c += 1;
    }
    t
};

/// Findings gathered over several parts of one request (its path, query and headers, then each
/// message's params): one [`Risk`] for all of them.
#[derive(Clone, Copy, Default)]
pub struct Scan(Findings);

impl Scan {
    /// Scan every string and object key of `v`.
    pub fn value(&mut self, v: &Value) {
        if !self.0.done() {
            walk(v, &mut self.0);
        }
    }

    /// Scan a text.
    pub fn text(&mut self, s: &str) {
        if !self.0.done() {
            self.0.scan(s);
        }
    }

    /// The flags found so far.
    pub fn risk(self) -> Risk {
        self.0.into_risk()
    }
}

/// Risk flags for a JSON value: every string and object key, at any depth.
pub fn scan_value(v: &Value) -> Risk {
    let mut f = Findings::default();
    walk(v, &mut f);
    f.into_risk()
}

/// Risk flags for a text body (not JSON).
pub fn scan_text(s: &str) -> Risk {
    let mut f = Findings::default();
    f.scan(s);
    f.into_risk()
}

fn walk(v: &Value, f: &mut Findings) {
    match v {
        Value::String(s) => f.scan(s),
        Value::Array(a) => a.iter().for_each(|x| walk(x, f)),
        Value::Object(m) => {
            for (k, x) in m {
                f.scan(k);
                walk(x, f);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Whether this string contains a secret-like value (see the module table).
pub fn is_secret_like(s: &str) -> bool {
    looks_secret(s)
}

/// Replace every string that contains a secret-like value with `"[REDACTED]"`, and remove every
/// object member whose key is secret-like. Returns the JSON paths changed (`$.a.b[2]` style), in
/// document order.
pub fn redact_secrets(value: &mut Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut path = String::from("$");
    redact_walk(value, &mut path, &mut out);
    out
}

fn redact_walk(v: &mut Value, path: &mut String, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            if looks_secret(s) {
                *v = Value::String(REDACTED.to_owned());
                out.push(path.clone());
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                redact_walk(x, path, out);
                path.truncate(len);
            }
        }
        Value::Object(m) => {
            // One `retain` pass (order kept): removing keys one by one would be quadratic.
            m.retain(|k, _| {
                let secret = looks_secret(k);
                if secret {
                    out.push(format!("{path}.{REDACTED}"));
                }
                !secret
            });
            for (k, x) in m.iter_mut() {
                let len = path.len();
                push_key(path, k);
                redact_walk(x, path, out);
                path.truncate(len);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Append `.key` (or `["key"]` when the key is not a plain identifier) to a JSON path.
pub(crate) fn push_key(path: &mut String, k: &str) {
    let plain = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        path.push('.');
        path.push_str(k);
    } else {
        path.push('[');
        path.push_str(&Value::String(k.to_owned()).to_string());
        path.push(']');
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

const fn is_b64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_')
}

/// Count bytes from `from` while `pred` holds.
/// Whether the `min` bytes from `from` all satisfy `pred`. Looks at no more than `min` bytes, so
/// a detector's look-ahead is bounded and overlapping triggers (`sk-sk-sk-...`) stay linear.
fn run_at_least(b: &[u8], from: usize, min: usize, pred: impl Fn(u8) -> bool) -> bool {
    b.get(from..from.saturating_add(min))
        .is_some_and(|r| r.len() == min && r.iter().all(|&c| pred(c)))
}

/// Count bytes from `from` while `pred` holds, looking at no more than `cap` bytes.
fn run_len(b: &[u8], from: usize, cap: usize, pred: impl Fn(u8) -> bool) -> usize {
    b.get(from..).map_or(0, |rest| {
        rest.iter().take(cap).take_while(|&&c| pred(c)).count()
    })
}

fn starts_at(b: &[u8], i: usize, pat: &[u8]) -> bool {
    b.get(i..i.saturating_add(pat.len())) == Some(pat)
}

fn starts_at_ci(b: &[u8], i: usize, pat: &[u8]) -> bool {
    b.get(i..i.saturating_add(pat.len()))
        .is_some_and(|s| s.eq_ignore_ascii_case(pat))
}

/// Whether `s` holds a secret-like value, as written or decoded (the secret detectors of
/// [`Findings::scan`]).
fn looks_secret(s: &str) -> bool {
    let mut f = Findings {
        secret: false,
        pii: true,
        card: true,
    };
    f.scan(s);
    f.secret
}

fn upper_or_digit(x: u8) -> bool {
    x.is_ascii_digit() || x.is_ascii_uppercase()
}

fn bearer_char(x: u8) -> bool {
    is_token_char(x) || matches!(x, b'.' | b'~' | b'+' | b'/' | b'=')
}

/// A prefixed secret starting at `i` (whose byte is `c`).
fn prefixed_at(b: &[u8], i: usize, c: u8) -> bool {
    const GH: &[&[u8]] = &[b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"];
    const SLACK: &[&[u8]] = &[b"xoxb-", b"xoxp-", b"xoxa-", b"xoxs-"];
    let after = |n: usize| i.saturating_add(n);
    // The second byte rules out almost every start at the cost of one compare.
    if !prefix_plausible(c, b.get(after(1)).copied()) {
        return false;
    }
    match c {
        b'A' => {
            (starts_at(b, i, b"AKIA") || starts_at(b, i, b"ASIA"))
                && run_at_least(b, after(4), 16, upper_or_digit)
        }
        b's' => {
            (starts_at(b, i, b"sk-") || starts_at(b, i, b"sk_"))
                && run_at_least(b, after(3), 20, is_token_char)
        }
        b'g' => {
            (GH.iter().any(|p| starts_at(b, i, p))
                && run_at_least(b, after(4), 36, |x| x.is_ascii_alphanumeric()))
                || (starts_at(b, i, b"github_pat_")
                    && run_at_least(b, after(11), 22, is_token_char))
        }
        b'x' => {
            SLACK.iter().any(|p| starts_at(b, i, p)) && run_at_least(b, after(5), 10, is_token_char)
        }
        b'b' | b'B' => starts_at_ci(b, i, b"bearer ") && run_at_least(b, after(7), 16, bearer_char),
        _ => false,
    }
}

/// A PEM private key header starting at `i`.
fn pem_at(b: &[u8], i: usize) -> bool {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const END: &[u8] = b"PRIVATE KEY-----";
    if !starts_at(b, i, BEGIN) {
        return false;
    }
    let start = i.saturating_add(BEGIN.len());
    let stop = start.saturating_add(40).min(b.len());
    let window = b.get(start..stop).unwrap_or_default();
    window.windows(END.len()).any(|w| w == END)
}

/// The entropy check on the base64/url run `b[start..end]` (32 to 512 characters).
fn entropy_run(b: &[u8], start: usize, end: usize) -> bool {
    (32..=512).contains(&end.saturating_sub(start)) && b.get(start..end).is_some_and(entropy_token)
}

#[expect(
    clippy::cast_precision_loss,
    reason = "counts are at most 512, exact in f64"
)]
fn entropy_token(tok: &[u8]) -> bool {
    let upper = tok.iter().any(u8::is_ascii_uppercase);
    let lower = tok.iter().any(u8::is_ascii_lowercase);
    let digit = tok.iter().any(u8::is_ascii_digit);
    if !(upper && lower && digit) {
        return false;
    }
    let mut counts = [0u32; 256];
    for &c in tok {
        if let Some(slot) = counts.get_mut(usize::from(c)) {
            *slot = slot.saturating_add(1);
        }
    }
    let len = tok.len() as f64;
    let mut h = 0.0f64;
    for &c in counts.iter().filter(|&&c| c > 0) {
        let p = f64::from(c) / len;
        h -= p * p.log2();
    }
    h >= 4.2
}

fn email_at(b: &[u8], i: usize) -> bool {
    let local_char =
        |x: u8| x.is_ascii_alphanumeric() || matches!(x, b'.' | b'_' | b'%' | b'+' | b'-');
    if i == 0 || !b.get(i.saturating_sub(1)).is_some_and(|&x| local_char(x)) {
        return false;
    }
    let from = i.saturating_add(1);
    let dom_len = run_len(b, from, 254, |x| {
        x.is_ascii_alphanumeric() || matches!(x, b'.' | b'-')
    });
    let dom = b
        .get(from..from.saturating_add(dom_len))
        .unwrap_or_default();
    let dom = dom.strip_suffix(b".").unwrap_or(dom);
    let mut labels = dom.split(|&x| x == b'.');
    if labels.next().is_none_or(<[u8]>::is_empty) {
        return false;
    }
    let mut last: Option<&[u8]> = None;
    for l in labels {
        if l.is_empty() {
            return false;
        }
        last = Some(l);
    }
    last.is_some_and(|t| t.len() >= 2 && t.iter().all(u8::is_ascii_alphabetic))
}

fn digit_at(b: &[u8], i: usize) -> Option<u32> {
    b.get(i)
        .filter(|c| c.is_ascii_digit())
        .map(|c| u32::from(c.wrapping_sub(b'0')))
}

/// `ddd-dd-dddd` at `i` (the caller checked no digit precedes), not followed by a digit, with a
/// plausible area, group and serial.
fn ssn_at(b: &[u8], i: usize) -> bool {
    let Some(w) = b.get(i..i.saturating_add(11)) else {
        return false;
    };
    let shape = w.iter().enumerate().all(|(k, &x)| match k {
        3 | 6 => x == b'-',
        _ => x.is_ascii_digit(),
    });
    if !shape || digit_at(b, i.saturating_add(11)).is_some() {
        return false;
    }
    let num = |from: usize, n: usize| -> u32 {
        (0..n).fold(0u32, |acc, k| {
            acc.saturating_mul(10)
                .saturating_add(digit_at(w, from.saturating_add(k)).unwrap_or(0))
        })
    };
    let (area, group, serial) = (num(0, 3), num(4, 2), num(7, 4));
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// 13 to 19 digits from `i` (single spaces or dashes between) passing Luhn.
fn card_at(b: &[u8], i: usize) -> bool {
    let mut digits = [0u32; 20];
    let mut n = 0usize;
    let mut j = i;
    loop {
        match digit_at(b, j) {
            Some(d) => {
                match digits.get_mut(n) {
                    Some(slot) => *slot = d,
                    None => return false,
                }
                n = n.saturating_add(1);
                j = j.saturating_add(1);
            }
            None => {
                let sep = matches!(b.get(j), Some(b' ' | b'-'));
                if sep && digit_at(b, j.saturating_add(1)).is_some() {
                    j = j.saturating_add(1);
                } else {
                    break;
                }
            }
        }
    }
    (13..=19).contains(&n) && luhn(digits.get(..n).unwrap_or_default())
}

fn luhn(digits: &[u32]) -> bool {
    let mut sum = 0u32;
    for (k, &d) in digits.iter().rev().enumerate() {
        let v = if k % 2 == 1 {
            let x = d.saturating_mul(2);
            if x > 9 { x.saturating_sub(9) } else { x }
        } else {
            d
        };
        sum = sum.saturating_add(v);
    }
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets() {
        for s in [
            "key AKIAIOSFODNN7EXAMPLE here",
            "temporary ASIAJEXAMPLEXEG2JICEA here",
            "sk-live-abcdefghijklmnopqrstuvwx",
            "sk-proj-ABCDEFGHIJKLMNOPQRSTUVWXYZ012345",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
            "-----BEGIN PRIVATE KEY-----",
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.abc",
            "token=Zx8Qp2Lr9Tb4Wm7Ks1Vn6Hy3Jd5Gf0Ac",
        ] {
            assert!(is_secret_like(s), "{s}");
        }
        for s in [
            "hello world",
            "AKIA short",
            "sk-short",
            "/repo/src/main.rs",
            "878b6cb053da4fbf822fb5acd1356778",
            "-----BEGIN PUBLIC KEY-----",
            "the quick brown fox jumps over the lazy dog again",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaAAAAAA1",
        ] {
            assert!(!is_secret_like(s), "{s}");
        }
    }

    #[test]
    fn escapes_hide_nothing() {
        // What a server that decodes a form, a URL or markup reads: one escape is no disguise.
        for s in [
            "key=AKIA%49OSFODNN7EXAMPLE",
            "key=AKIA%2549OSFODNN7EXAMPLE",
            "https://x.example/?k=%41%4B%49%41IOSFODNN7EXAMPLE",
            "key &#65;KIAIOSFODNN7EXAMPLE",
            "key &#x41;KIAIOSFODNN7EXAMPLE",
            r"key \u0041KIAIOSFODNN7EXAMPLE",
            "t=ghp%5Fabcdefghijklmnopqrstuvwxyz0123456789",
        ] {
            assert!(is_secret_like(s), "{s}");
            let r = scan_value(&json!({ "note": s }));
            assert!(r.secrets, "{s} in a value");
        }
        let r = scan_value(&json!({"to": "jane%40example.com"}));
        assert_eq!(r.data_classes, vec!["pii"], "an escaped @");
        for s in [
            "100% sure & done",
            r"C:\path\to\file",
            "a=1&b=2",
            "%zz &#; \\u12",
        ] {
            assert!(!is_secret_like(s), "{s}");
        }
        // Redaction replaces the string a reader decodes to a key, and a key's escaped name.
        let mut v = json!({"url": "https://x/?k=AKIA%49OSFODNN7EXAMPLE", "ok": "100%"});
        assert_eq!(redact_secrets(&mut v), vec!["$.url".to_owned()]);
        assert_eq!(v["ok"], "100%");
    }

    /// The flags of `s` decoded whole, every round: what reading only the regions must equal.
    fn whole_text_reading(s: &str) -> Risk {
        let mut f = Findings::default();
        f.scan_bytes(s.as_bytes());
        super::super::unescape::decodings(s, |t| {
            f.scan_bytes(t.as_bytes());
            f.done()
        });
        f.into_risk()
    }

    #[test]
    fn reading_the_decoded_regions_is_reading_the_decoded_text() {
        const PARTS: [&str; 22] = [
            "AKIA",
            "%49",
            "%2549",
            "&#65;",
            r"\u0041",
            " ",
            "\n",
            r"\n",
            "é",
            "xyz",
            "100%",
            "-----BEGIN ",
            "PRIV%41TE KEY-----",
            "4111 1111 1111 111%31",
            "jane%40example.com",
            "bearer ",
            "OSFODNN7EXAMPLE",
            "%20",
            "0123456789",
            "Zx8Qp2Lr9Tb4Wm7Ks1Vn6Hy3Jd5Gf0Ac",
            "&amp;#83;",
            "ghp%5Fabcdefghijklmnopqrstuvwxyz0123456789",
        ];
        let mut seed: u64 = 0x5eed;
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            usize::try_from(seed >> 33).unwrap() % n
        };
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..next(40) {
                s.push_str(PARTS[next(PARTS.len())]);
                if next(8) == 0 {
                    // Long words, so regions are cut and merged.
                    s.push_str(&"q".repeat(next(700)));
                }
            }
            let mut f = Findings::default();
            f.scan(&s);
            let (regions, whole) = (f.into_risk(), whole_text_reading(&s));
            let longest_word = s
                .split(|c: char| c.is_ascii_whitespace())
                .map(str::len)
                .max();
            if longest_word.unwrap_or(0) <= 400 {
                assert_eq!(regions, whole, "{s:?}");
            } else {
                // A word longer than the entropy check's longest run is cut: a finding more at
                // most (a cut run can qualify), never one less.
                assert!(regions.secrets || !whole.secrets, "{s:?}");
                for class in &whole.data_classes {
                    assert!(regions.data_classes.contains(class), "{class} in {s:?}");
                }
            }
        }
    }

    #[test]
    fn dense_escapes_are_read_in_one_pass() {
        // A megabyte of escapes with no white space: one region, decoded three times at most.
        let s = "%41".repeat(350_000);
        assert_eq!(decoded_regions(&s), vec![(0, s.len())]);
        let s = format!("{} tail", "%2541 ".repeat(100_000));
        assert_eq!(decoded_regions(&s).len(), 1);
    }

    #[test]
    fn classes() {
        let r = scan_value(&json!({"to": "alice@example.com"}));
        assert_eq!(r.data_classes, vec!["pii"]);
        assert!(!r.secrets);
        let r = scan_value(&json!({"ssn": "123-45-6789"}));
        assert_eq!(r.data_classes, vec!["pii"]);
        let r = scan_value(&json!({"ssn": "000-45-6789 and 1234-56-7890"}));
        assert!(r.data_classes.is_empty());
        let r = scan_value(&json!(["card 4111 1111 1111 1111"]));
        assert_eq!(r.data_classes, vec!["payment_card", "pii"]);
        let r = scan_value(&json!(["4111 1111 1111 1112"]));
        assert!(r.data_classes.is_empty());
        let r = scan_value(&json!({"AKIAIOSFODNN7EXAMPLE": 1}));
        assert!(r.secrets);
        assert_eq!(r.data_classes, vec!["credential"]);
        assert!(
            !scan_value(&json!({"a": "not@email", "b": "x@y.c"}))
                .data_classes
                .contains(&"pii".to_owned())
        );
    }

    #[test]
    fn one_pass_finds_everything_in_any_order() {
        let all = vec!["credential", "payment_card", "pii"];
        for s in [
            "bob@example.com then AKIAIOSFODNN7EXAMPLE then 4111 1111 1111 1111",
            "4111-1111-1111-1111 Zx8Qp2Lr9Tb4Wm7Ks1Vn6Hy3Jd5Gf0Ac 123-45-6789",
            "Zx8Qp2Lr9Tb4Wm7Ks1Vn6Hy3Jd5Gf0Ac,x@y.io,4111111111111111",
        ] {
            assert_eq!(scan_text(s).data_classes, all, "{s}");
            assert!(scan_text(s).secrets, "{s}");
        }
        // The entropy run at the very end of a string counts.
        assert!(is_secret_like("tail Zx8Qp2Lr9Tb4Wm7Ks1Vn6Hy3Jd5Gf0Ac"));
        assert!(!is_secret_like("bob@example.com 4111 1111 1111 1111"));
    }

    #[test]
    fn overlapping_triggers_stay_linear() {
        // Each of these would make an unbounded look-ahead quadratic; with bounded look-ahead a
        // 256 KiB string is scanned at once (a hang here is the failure).
        for unit in ["sk-", "AKIA", "xoxb-", "a@", "1 ", "-----BEGIN "] {
            let s = unit.repeat(256 * 1024 / unit.len());
            let _ = scan_text(&s);
            let mut v = Value::String(s);
            let _ = redact_secrets(&mut v);
        }
        // Many secret-like keys in one object are removed in one pass.
        let mut m = serde_json::Map::new();
        for i in 0..20_000 {
            m.insert(format!("AKIA{i:016}"), Value::from(i));
        }
        m.insert("keep".into(), Value::from(1));
        let mut v = Value::Object(m);
        assert_eq!(redact_secrets(&mut v).len(), 20_000);
        assert_eq!(v, json!({"keep": 1}));
    }

    #[test]
    fn redaction_reports_paths() {
        let mut v = json!({"a": {"k": "sk-live-abcdefghijklmnopqrstuvwx"}, "b": ["ok", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"], "c": 1});
        let paths = redact_secrets(&mut v);
        assert_eq!(paths, vec!["$.a.k", "$.b[1]"]);
        assert_eq!(
            v,
            json!({"a": {"k": REDACTED}, "b": ["ok", REDACTED], "c": 1})
        );
        let mut v = json!({"AKIAIOSFODNN7EXAMPLE": 1, "x": 2});
        assert_eq!(redact_secrets(&mut v).len(), 1);
        assert_eq!(v, json!({"x": 2}));
    }

    /// The byte-at-a-time form of [`Findings::scan_bytes`] (every byte goes through the whole
    /// dispatch), which the skipping loop must agree with.
    fn scan_reference(b: &[u8]) -> (bool, bool, bool) {
        let mut f = Findings::default();
        let mut run_start: Option<usize> = None;
        for (i, &c) in b.iter().enumerate() {
            let k = CLASS[usize::from(c)];
            if k & PREFIX != 0 && !f.secret {
                f.secret = prefixed_at(b, i, c);
            } else if k & DASH != 0 && !f.secret {
                f.secret = pem_at(b, i);
            } else if k & AT != 0 && !f.pii {
                f.pii = email_at(b, i);
            } else if k & DIGIT != 0 && (i == 0 || digit_at(b, i.saturating_sub(1)).is_none()) {
                f.pii = f.pii || ssn_at(b, i);
                f.card = f.card || card_at(b, i);
            }
            if k & B64 != 0 {
                run_start.get_or_insert(i);
            } else if let Some(start) = run_start.take() {
                f.secret = f.secret || entropy_run(b, start, i);
            }
        }
        if let Some(start) = run_start {
            f.secret = f.secret || entropy_run(b, start, b.len());
        }
        (f.secret, f.pii, f.card)
    }

    proptest::proptest! {
        #[test]
        fn skipping_scan_agrees_with_the_byte_at_a_time_scan(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    "[a-zA-Z0-9+/=_-]{1,80}",
                    "[ .,:@-]{1,3}",
                    "(sk-|AKIA|ASIA|ghp_|xoxb-|Bearer |-----BEGIN )[A-Za-z0-9]{0,40}",
                    "[0-9 -]{1,20}",
                    "[a-z]{1,10}@[a-z]{1,10}\\.[a-z]{2,4}",
                ],
                0..12,
            )
        ) {
            let text = parts.concat();
            let mut f = Findings::default();
            f.scan_bytes(text.as_bytes());
            proptest::prop_assert_eq!((f.secret, f.pii, f.card), scan_reference(text.as_bytes()), "{:?}", text);
        }
    }
}
