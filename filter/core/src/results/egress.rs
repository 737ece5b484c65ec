//! The answer to a plain HTTP egress request (docs/filter.md, "The response path", "Egress
//! answers"). A page or an API answer the agent fetched is agent input exactly as a tool's output
//! is: an instruction planted in it must taint the session, a secret in it is the pack's to
//! redact. So when the pack can act on results, the body of a text answer is held to its end (up
//! to `limits.max_body_bytes`) and judged as one `tools/result` action of the request (kind
//! `http`, its target), with the body's text as `args.text`. Binary content types pass unread (the
//! filter cannot read them as a model would); a text answer it cannot read as its client does
//! (compressed, several content types, another charset) or one over the limit is replaced by a
//! JSON error (HTTP 502), never passed unread.

use bundle::action::Action;
use serde_json::{Value, json};

use super::{Inspector, Judge, Legibility, Mode, result, unreadable_body};
use crate::host::{FilterAction, Host, LogLevel};

/// Whether a content type is text a model reads (`None`: not declared, read as text).
fn is_text(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or_default().trim();
    media.is_empty()
        || media.starts_with("text/")
        || [
            "json",
            "xml",
            "javascript",
            "yaml",
            "x-www-form-urlencoded",
            "ndjson",
        ]
        .iter()
        .any(|t| media.contains(t))
}

impl Inspector {
    /// The inspector of a plain HTTP egress request's answer (`request` is its action).
    pub(crate) fn egress(request: &Action) -> Self {
        let mut i = Inspector::new(std::iter::empty(), request, true, None);
        i.egress = true;
        i
    }

    /// Response headers of an egress answer: hold a text body, pass a binary one, replace one
    /// that cannot be read as its client reads it.
    pub(super) fn egress_headers(&mut self, host: &dyn Host) -> bool {
        let headers = host.response_headers();
        let legible = Legibility::of(&headers);
        let text = legible.types.is_empty() || legible.types.iter().any(|t| is_text(t));
        if !text && !legible.compressed {
            return false;
        }
        host.set_response_header("content-length", None);
        if let Some(why) = legible.illegible {
            host.set_response_header("content-encoding", None);
            host.set_response_header("content-type", Some("application/json"));
            host.set_response_header(":status", Some("502"));
            let body = unreadable_body(&why);
            host.log(
                LogLevel::Warn,
                &format!("portcullis: egress response replaced: {why}"),
            );
            self.unrecorded.push((self.base.clone(), why.clone()));
            self.mode = Mode::Replace { body, sent: false };
            return true;
        }
        self.mode = Mode::Egress;
        true
    }

    /// Body data of a held egress answer: judged at its end.
    pub(super) fn egress_body(
        &mut self,
        cx: &Judge<'_>,
        body_size: usize,
        end_of_stream: bool,
    ) -> FilterAction {
        let limit = cx.l.cfg.max_body_bytes;
        if body_size > limit {
            let why = format!("the response is larger than {limit} bytes, the inspection limit");
            // Too late for the status (the headers went): the body says it.
            let body = unreadable_body(&why);
            cx.host.replace_response_body(&body);
            cx.host.log(
                LogLevel::Warn,
                &format!("portcullis: egress response replaced: {why}"),
            );
            self.unrecorded.push((self.base.clone(), why));
            self.mode = Mode::Replace { body, sent: true };
            return FilterAction::Continue;
        }
        if !end_of_stream {
            return FilterAction::Pause;
        }
        self.mode = Mode::Pass;
        let buf = cx.host.response_body(0, body_size).unwrap_or_default();
        let bytes = buf.strip_prefix(&[0xEF, 0xBB, 0xBF][..]).unwrap_or(&buf);
        let msg = json!({ "result": String::from_utf8_lossy(bytes) });
        let action = result::result_action(&self.base, &msg);
        let j = result::judge(cx, &action, &msg, "result");
        if let Some(r) = j.receipt {
            self.sealed.push(r);
        }
        match j.outcome {
            result::Effect::Keep => {}
            result::Effect::Rewrite(v) => {
                let body = match v.get("result") {
                    Some(Value::String(s)) => s.clone().into_bytes(),
                    Some(other) => other.to_string().into_bytes(),
                    None => Vec::new(),
                };
                cx.host.replace_response_body(&body);
            }
            result::Effect::Deny(d) => {
                // The status and content type already went with the headers: the body says it.
                let (_, body) = d.http();
                cx.host.replace_response_body(&body);
            }
        }
        FilterAction::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::is_text;

    #[test]
    fn text_content_types_are_read_and_binary_ones_are_not() {
        for t in [
            "",
            "text/html; charset=utf-8",
            "application/json",
            "application/problem+json",
            "application/xml",
            "application/javascript",
            "application/x-www-form-urlencoded",
            "application/x-ndjson",
        ] {
            assert!(is_text(t), "{t}");
        }
        for t in [
            "image/png",
            "application/octet-stream",
            "application/zip",
            "application/pdf",
        ] {
            assert!(!is_text(t), "{t}");
        }
    }
}
