//! Server-sent events (`text/event-stream`) framing, just enough to find and rewrite one event:
//! events end at a blank line (`\n\n`, `\r\n\r\n` or `\r\r`, per the HTML living standard's
//! event-stream format); an event's data is its `data:` lines joined by `\n`.

/// One complete event: its byte range in the buffer and its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    /// Offset of the event's first byte.
    pub start: usize,
    /// Offset just past the blank line that ends it.
    pub end: usize,
    /// The `data:` lines, joined by `\n` (one leading space after the colon removed).
    pub data: String,
}

/// Length of the line terminator at `i` (`\r\n`, `\n` or `\r`), or 0.
fn eol_len(b: &[u8], i: usize) -> usize {
    match (b.get(i), b.get(i.saturating_add(1))) {
        (Some(b'\r'), Some(b'\n')) => 2,
        (Some(b'\n'), _) | (Some(b'\r'), _) => 1,
        _ => 0,
    }
}

/// The complete events in `buf` (an incomplete trailing event is not returned). Linear in the
/// buffer's length. Non-UTF-8 data is replaced lossily (it cannot be JSON anyway).
pub(crate) fn events(buf: &[u8]) -> Vec<Event> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut line_start = 0usize;
    let mut data: Vec<&[u8]> = Vec::new();
    let mut i = 0usize;
    while i < buf.len() {
        let n = eol_len(buf, i);
        if n == 0 {
            i = i.saturating_add(1);
            continue;
        }
        let line = buf.get(line_start..i).unwrap_or_default();
        let next = i.saturating_add(n);
        if line.is_empty() {
            if line_start > start || !data.is_empty() {
                out.push(Event {
                    start,
                    end: next,
                    data: join(&data),
                });
            }
            data.clear();
            start = next;
        } else if let Some(rest) = line.strip_prefix(b"data:") {
            data.push(rest.strip_prefix(b" ").unwrap_or(rest));
        } else if line == b"data" {
            data.push(b"");
        }
        line_start = next;
        i = next;
    }
    out
}

fn join(parts: &[&[u8]]) -> String {
    let mut v = Vec::new();
    for (k, p) in parts.iter().enumerate() {
        if k > 0 {
            v.push(b'\n');
        }
        v.extend_from_slice(p);
    }
    String::from_utf8_lossy(&v).into_owned()
}

/// The event's bytes with its data replaced by `data` (one `data:` line; `data` must hold no
/// line break, which compact JSON never does); its other fields (`event:`, `id:`, `retry:`,
/// comments) are kept in order, and it ends with `\n\n`.
pub(crate) fn rewrite(buf: &[u8], ev: &Event, data: &str) -> Vec<u8> {
    let raw = buf.get(ev.start..ev.end).unwrap_or_default();
    let mut out = Vec::with_capacity(raw.len().saturating_add(data.len()));
    let mut wrote = false;
    let mut line_start = 0usize;
    let mut i = 0usize;
    while i < raw.len() {
        let n = eol_len(raw, i);
        if n == 0 {
            i = i.saturating_add(1);
            continue;
        }
        let line = raw.get(line_start..i).unwrap_or_default();
        if line.starts_with(b"data:") || line == b"data" {
            if !wrote {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(data.as_bytes());
                out.push(b'\n');
                wrote = true;
            }
        } else if !line.is_empty() {
            out.extend_from_slice(line);
            out.push(b'\n');
        }
        i = i.saturating_add(n);
        line_start = i;
    }
    if !wrote {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(data.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_with_any_line_ending_and_keeps_the_tail_out() {
        let b = b"event: message\r\ndata: {\"a\":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\ndata: partial";
        let ev = events(b);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].data, "{\"a\":1}");
        assert_eq!(ev[1].data, "");
        assert_eq!(ev[2].data, "x\ny");
        assert_eq!(&b[ev[2].end..], b"data: partial");
    }

    #[test]
    fn rewrite_keeps_other_fields() {
        let b = b"event: message\nid: 7\ndata: {\"a\":\ndata: 1}\n\n";
        let ev = events(b);
        let out = rewrite(b, &ev[0], "{}");
        assert_eq!(out, b"event: message\nid: 7\ndata: {}\n\n");
    }
}
