//! Server-sent events (`text/event-stream`) framing, just enough to find and rewrite events:
//! events end at a blank line (`\n\n`, `\r\n\r\n` or `\r\r`, per the HTML living standard's
//! event-stream format); an event's data is its `data:` lines joined by `\n`.
//!
//! [`Reader`] takes a stream in chunks as they arrive and scans every byte once, whatever the
//! chunking (a server that sends one byte at a time costs what one chunk costs), holding only the
//! incomplete event, up to a limit.

/// Length of the line terminator at `i` (`\r\n`, `\n` or `\r`), or 0.
fn eol_len(b: &[u8], i: usize) -> usize {
    match (b.get(i), b.get(i.saturating_add(1))) {
        (Some(b'\r'), Some(b'\n')) => 2,
        (Some(b'\n'), _) | (Some(b'\r'), _) => 1,
        _ => 0,
    }
}

/// The event's bytes with its data replaced by `data` (one `data:` line; `data` must hold no
/// line break, which compact JSON never does); its other fields (`event:`, `id:`, `retry:`,
/// comments) are kept in order, and it ends with `\n\n`.
pub(crate) fn rewrite(raw: &[u8], data: &str) -> Vec<u8> {
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

/// The type an event's `event:` field gives it (the last one counts), if it has one.
pub(crate) fn event_type(raw: &[u8]) -> Option<&[u8]> {
    raw.split(|&b| b == b'\n' || b == b'\r')
        .rev()
        .find_map(|line| {
            let v = line.strip_prefix(b"event:")?;
            Some(v.strip_prefix(b" ").unwrap_or(v))
        })
}

/// The value of a `data` field line (`data:x`, `data: x`, or a bare `data`).
fn data_field(line: &[u8]) -> Option<&[u8]> {
    match line.strip_prefix(b"data:") {
        Some(d) => Some(d.strip_prefix(b" ").unwrap_or(d)),
        None => (line == b"data").then_some(&[][..]),
    }
}

/// What a [`Reader`] found in a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// A complete event (or a run of blank lines between events, with empty data): its bytes
    /// through the blank line that ends it, and its data.
    Event {
        /// The event's bytes as received.
        raw: Vec<u8>,
        /// Its `data:` lines joined by `\n`, lossily decoded.
        data: String,
        /// Whether it has any `data` field at all.
        has_data: bool,
    },
    /// The event being read outgrew the limit: its bytes are dropped up to its end.
    Oversize,
}

/// An event stream read chunk by chunk. Holds the bytes of the event not yet complete; every
/// byte is scanned once.
#[derive(Clone, Debug, Default)]
pub(crate) struct Reader {
    /// Bytes of the incomplete event.
    buf: Vec<u8>,
    /// Where the current line starts in `buf`.
    line_start: usize,
    /// How far `buf` has been scanned.
    scanned: usize,
    /// Data lines of the incomplete event so far, joined by `\n`.
    data: Vec<u8>,
    has_data: bool,
    /// Dropping an oversized event up to its end.
    skipping: bool,
    /// While skipping: the current line is empty so far (a line end now is a blank line).
    skip_line_empty: bool,
    /// While skipping: the last byte was a CR (an LF now completes that line end).
    skip_cr: bool,
    /// How many bytes of a UTF-8 byte-order mark the stream has started with so far.
    bom_seen: usize,
    /// The stream's start is behind: a byte-order mark there was dropped, or there was none.
    past_bom: bool,
}

/// A UTF-8 byte-order mark: clients drop one at the start of an event stream (the HTML event-stream
/// format says to; `eventsource-parser`, under the TypeScript SDK, does), so `\u{feff}data: {..}`
/// is a message to them.
const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Reader {
    /// Feed the next chunk; complete events (and oversize markers) are appended to `out`. An
    /// event longer than `limit` bytes is reported once as [`Item::Oversize`] and dropped.
    pub(crate) fn feed(&mut self, chunk: &[u8], limit: usize, out: &mut Vec<Item>) {
        let mut rest = chunk;
        if !self.past_bom {
            // The stream's first bytes: a byte-order mark there is not part of its first line,
            // for a client or for the filter, and it is not passed on.
            let matched = rest
                .iter()
                .zip(BOM.get(self.bom_seen..).unwrap_or_default())
                .take_while(|(a, b)| a == b)
                .count();
            self.bom_seen = self.bom_seen.saturating_add(matched);
            rest = rest.get(matched..).unwrap_or_default();
            if self.bom_seen < BOM.len() && rest.is_empty() {
                return;
            }
            self.past_bom = true;
            if self.bom_seen < BOM.len() {
                // Not a mark after all: its first bytes were the stream's.
                self.buf
                    .extend_from_slice(BOM.get(..self.bom_seen).unwrap_or_default());
            }
        }
        if self.skipping {
            rest = self.skip(rest);
            if self.skipping {
                return;
            }
        }
        self.buf.extend_from_slice(rest);
        let mut start = 0usize;
        let mut i = self.scanned;
        while let Some(&b) = self.buf.get(i) {
            if b != b'\n' && b != b'\r' {
                i = i.saturating_add(1);
                continue;
            }
            let next = self.buf.get(i.saturating_add(1)).copied();
            if b == b'\r' && next.is_none() {
                // A CR at the end: a CRLF may be split over two chunks. Decide on the next one.
                break;
            }
            let eol = if b == b'\r' && next == Some(b'\n') {
                2
            } else {
                1
            };
            let end = i.saturating_add(eol);
            let line = self.buf.get(self.line_start..i).unwrap_or_default();
            if line.is_empty() {
                let raw = self.buf.get(start..end).unwrap_or_default();
                out.push(if raw.len() > limit {
                    Item::Oversize
                } else {
                    Item::Event {
                        raw: raw.to_vec(),
                        data: String::from_utf8_lossy(&self.data).into_owned(),
                        has_data: self.has_data,
                    }
                });
                self.data.clear();
                self.has_data = false;
                start = end;
            } else if let Some(d) = data_field(line) {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(d);
                self.has_data = true;
            }
            self.line_start = end;
            i = end;
        }
        self.buf.drain(..start);
        self.line_start = self.line_start.saturating_sub(start);
        self.scanned = i.saturating_sub(start);
        if self.buf.len() > limit {
            out.push(Item::Oversize);
            let tail = std::mem::take(&mut self.buf);
            let line = tail.get(self.line_start..).unwrap_or_default();
            self.skip_line_empty = line.is_empty();
            self.skip_cr = false;
            self.skipping = true;
            self.data.clear();
            self.has_data = false;
            self.line_start = 0;
            self.scanned = 0;
            // The partial line may end in a CR: run it through the skipper.
            let after = self.skip(line);
            if !self.skipping {
                let after = after.to_vec();
                self.feed(&after, limit, out);
            }
        }
    }

    /// The stream ended: a line end held back (a CR that might have started a CRLF) counts now.
    /// Returns whether an incomplete event with data is left (a message cut off mid-way; SSE
    /// clients discard it).
    pub(crate) fn finish(&mut self, limit: usize, out: &mut Vec<Item>) -> bool {
        if !self.past_bom {
            // The stream ended inside what began like a byte-order mark: those were its bytes.
            self.past_bom = true;
            self.buf
                .extend_from_slice(BOM.get(..self.bom_seen).unwrap_or_default());
        }
        if !self.skipping && self.buf.last() == Some(&b'\r') {
            // A CR at the very end is one line end; with an LF after it, CRLF is still one.
            self.feed(b"\n", limit, out);
        }
        !self.skipping && (self.has_data || self.buf.iter().any(|b| !b.is_ascii_whitespace()))
    }

    /// Drop bytes of an oversized event up to the blank line that ends it; returns what follows.
    fn skip<'a>(&mut self, chunk: &'a [u8]) -> &'a [u8] {
        for (k, &b) in chunk.iter().enumerate() {
            if b == b'\n' && self.skip_cr {
                // The LF of a CRLF: the same line end.
                self.skip_cr = false;
                continue;
            }
            if b == b'\n' || b == b'\r' {
                if self.skip_line_empty {
                    // A blank line ends the oversized event. (The LF of a CRLF blank line, if it
                    // comes next, reads as one more blank line between events: harmless.)
                    self.skipping = false;
                    return chunk.get(k.saturating_add(1)..).unwrap_or_default();
                }
                self.skip_line_empty = true;
                self.skip_cr = b == b'\r';
            } else {
                self.skip_line_empty = false;
                self.skip_cr = false;
            }
        }
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a reader yields for `stream` cut into `size`-byte chunks.
    fn read_in_chunks(stream: &[u8], size: usize, limit: usize) -> Vec<Item> {
        let mut r = Reader::default();
        let mut out = Vec::new();
        for c in stream.chunks(size) {
            r.feed(c, limit, &mut out);
        }
        out
    }

    #[test]
    fn a_reader_finds_the_same_events_however_the_stream_is_cut() {
        let stream = b"event: message\r\ndata: {\"a\":1}\r\n\r\n: comment\n\ndata: x\ndata: y\n\ndata:z\r\rdata: tail";
        let whole = read_in_chunks(stream, stream.len(), 1 << 20);
        let datas: Vec<String> = whole
            .iter()
            .filter_map(|i| match i {
                Item::Event { data, .. } => Some(data.clone()),
                Item::Oversize => None,
            })
            .collect();
        assert_eq!(datas, ["{\"a\":1}", "", "x\ny", "z"]);
        for size in 1..stream.len() {
            assert_eq!(
                read_in_chunks(stream, size, 1 << 20),
                whole,
                "chunks of {size}"
            );
        }
        // The bytes of the complete events, in order, are the stream up to the incomplete tail.
        let raw: Vec<u8> = whole
            .iter()
            .flat_map(|i| match i {
                Item::Event { raw, .. } => raw.clone(),
                Item::Oversize => Vec::new(),
            })
            .collect();
        assert_eq!(raw, &stream[..stream.len() - b"data: tail".len()]);
    }

    #[test]
    fn a_line_end_held_back_counts_at_the_end_of_the_stream() {
        let mut r = Reader::default();
        let mut out = Vec::new();
        r.feed(b"data: 1\r\r", 1 << 20, &mut out);
        assert!(out.is_empty(), "the last CR may start a CRLF");
        assert!(!r.finish(1 << 20, &mut out));
        assert!(matches!(&out[..], [Item::Event { data, .. }] if data == "1"));
        let mut r = Reader::default();
        out.clear();
        r.feed(b"data: 2\n\ndata: cut", 1 << 20, &mut out);
        assert!(
            r.finish(1 << 20, &mut out),
            "an event cut off mid-way is reported"
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn an_oversized_event_is_reported_once_and_skipped_to_its_end() {
        let mut stream = b"data: 1\n\ndata: ".to_vec();
        stream.extend(std::iter::repeat_n(b'x', 5000));
        stream.extend_from_slice(b"\r\nid: 9\r\n\r\ndata: 2\n\n");
        for size in [1, 2, 3, 7, 100, 4999, stream.len()] {
            let items = read_in_chunks(&stream, size, 1000);
            let datas: Vec<Option<String>> = items
                .iter()
                .filter_map(|i| match i {
                    Item::Event { data, has_data, .. } => has_data.then(|| Some(data.clone())),
                    Item::Oversize => Some(None),
                })
                .collect();
            assert_eq!(
                datas,
                [Some("1".to_owned()), None, Some("2".to_owned())],
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn a_stream_fed_one_byte_at_a_time_is_scanned_once() {
        // 10 MiB in 1-byte chunks: linear work, so this runs in well under a second even in a
        // debug build (a rescan per chunk would be ~5e13 steps).
        let mut r = Reader::default();
        let mut out = Vec::new();
        let event = b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
        let mut n = 0usize;
        while n < 10 * 1024 * 1024 {
            for b in event {
                r.feed(std::slice::from_ref(b), 1 << 20, &mut out);
            }
            n += event.len();
            out.clear();
        }
        let mut big = Reader::default();
        for _ in 0..(2 * 1024 * 1024) {
            big.feed(b"y", 1 << 20, &mut out);
        }
        assert_eq!(out, vec![Item::Oversize]);
    }

    #[test]
    fn a_leading_byte_order_mark_is_dropped_however_the_stream_is_cut() {
        let msg = br#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        let mut stream = b"\xEF\xBB\xBFdata: ".to_vec();
        stream.extend_from_slice(msg);
        stream.extend_from_slice(b"\n\n\xEF\xBB\xBFdata: x\n\n");
        for size in 1..=stream.len() {
            let items = read_in_chunks(&stream, size, 1 << 20);
            let Some(Item::Event {
                raw,
                data,
                has_data,
            }) = items.first()
            else {
                panic!("size {size}: {items:?}");
            };
            assert!(*has_data, "size {size}");
            assert_eq!(data.as_bytes(), msg, "size {size}");
            assert!(
                raw.starts_with(b"data: "),
                "size {size}: the mark is not passed on"
            );
            // Only the stream's first: a mark later is part of a line (a field no client reads).
            assert!(
                matches!(
                    items.get(1),
                    Some(Item::Event {
                        has_data: false,
                        ..
                    })
                ),
                "size {size}: {items:?}"
            );
        }
        // Bytes that begin like a mark but are not one are the stream's own.
        let items = read_in_chunks(b"\xEF\xBBdata: 1\n\n", 1, 1 << 20);
        assert!(
            matches!(items.first(), Some(Item::Event { has_data: false, raw, .. }) if raw.starts_with(b"\xEF\xBB"))
        );
    }

    #[test]
    fn an_events_type_is_its_last_event_field() {
        assert_eq!(
            event_type(b"event: endpoint\ndata: /m\n\n"),
            Some(&b"endpoint"[..])
        );
        assert_eq!(event_type(b"event:a\r\nevent: b\r\n\r\n"), Some(&b"b"[..]));
        assert_eq!(event_type(b"data: {}\n\n"), None);
    }

    #[test]
    fn rewrite_keeps_other_fields() {
        let b = b"event: message\nid: 7\ndata: {\"a\":\ndata: 1}\n\n";
        let out = rewrite(b, "{}");
        assert_eq!(out, b"event: message\nid: 7\ndata: {}\n\n");
    }
}
