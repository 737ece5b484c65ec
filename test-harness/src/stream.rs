//! One HTTP stream through the filter, driven the way Envoy's filter manager drives an HTTP
//! filter with `allow_on_headers_stop_iteration: true`:
//!
//! - `request_headers`: `proxy_on_request_headers`. Continue sends the headers upstream; Pause
//!   holds them (the filter can still change them until it continues).
//! - `request_body`: `proxy_on_request_body(body_size, end_of_stream)`. While the filter returns
//!   Pause, Envoy buffers: `body_size` is everything buffered so far and the body buffer holds
//!   all of it. Continue sends the held headers and the buffer upstream. Past the buffer limit
//!   Envoy answers 413 itself.
//! - `request_trailers`: `proxy_on_request_trailers(num_trailers)`; trailers end the request
//!   (the last body chunk came without end_of_stream, or there was no body at all). A body the
//!   filter kept buffering (its last body callback returned Pause) is still readable and
//!   writable from the trailers callback; a body it let go is not (empty, read-only). Pause
//!   holds the headers (if still held), the buffered body and the trailers until the filter
//!   continues or answers locally; Continue sends them on, in that order.
//! - `proxy_continue_stream` resumes after the callback returns; from then on the filter can no
//!   longer read or change that direction's headers and body (Envoy drops its pointers).
//! - `proxy_send_local_response` is sent after the callback returns, through the filter's own
//!   `proxy_on_response_headers` / `proxy_on_response_body` (as Envoy does), and ends the stream.
//! - The response direction works the same way (`response_trailers`:
//!   `proxy_on_response_trailers`); the stream ends (`proxy_on_log`,
//!   `proxy_on_done`, `proxy_on_delete`) when the response is complete, on reset, or on
//!   [`Stream::finish`].

use anyhow::{Result, bail};

use crate::abi::{Action, Pairs};
use crate::deferred::release;
use crate::host::{Host, len_u32};
use crate::state::{Direction, LocalReplyRequest, LocalResponse, Phase, StreamState, header_value};

/// A live handle on one stream of a [`Host`].
pub struct Stream<'h> {
    host: &'h mut Host,
    id: u32,
}

/// Read-only view of what happened on a stream.
#[derive(Clone, Copy)]
pub struct StreamView<'a> {
    st: &'a StreamState,
}

impl<'a> StreamView<'a> {
    pub(crate) fn new(st: &'a StreamState) -> StreamView<'a> {
        StreamView { st }
    }

    /// The response the filter sent itself, if any.
    pub fn local_response(&self) -> Option<&'a LocalResponse> {
        self.st.local_response.as_ref()
    }

    /// The request went upstream completely: headers, and the body (and trailers, if any) up to
    /// end of stream, with no local response and no reset.
    pub fn request_forwarded(&self) -> bool {
        self.st.req.forwarded_headers.is_some()
            && self.st.req.end_forwarded
            && self.st.local_response.is_none()
            && !self.st.reset
    }

    /// Request headers as they went upstream (`None` while held or when never sent).
    pub fn forwarded_request_headers(&self) -> Option<&'a Pairs> {
        self.st.req.forwarded_headers.as_ref()
    }

    /// One forwarded request header's first value.
    pub fn forwarded_request_header(&self, name: &str) -> Option<&'a str> {
        self.forwarded_request_headers()
            .and_then(|h| header_value(h, name))
    }

    /// The request header map as the filter left it (whether or not it went upstream).
    pub fn request_headers(&self) -> &'a Pairs {
        &self.st.req.headers
    }

    /// Request body bytes that went upstream.
    pub fn forwarded_request_body(&self) -> &'a [u8] {
        &self.st.req.forwarded_body
    }

    /// Request trailers as they went upstream (`None` while held, or when there were none).
    pub fn forwarded_request_trailers(&self) -> Option<&'a Pairs> {
        self.st.req.forwarded_trailers.as_ref()
    }

    /// Response trailers as they went downstream (`None` while held, or when there were none).
    pub fn forwarded_response_trailers(&self) -> Option<&'a Pairs> {
        self.st.resp.forwarded_trailers.as_ref()
    }

    /// Response headers as they went downstream (after the filter's changes).
    pub fn forwarded_response_headers(&self) -> Option<&'a Pairs> {
        self.st.resp.forwarded_headers.as_ref()
    }

    /// One forwarded response header's first value.
    pub fn forwarded_response_header(&self, name: &str) -> Option<&'a str> {
        self.forwarded_response_headers()
            .and_then(|h| header_value(h, name))
    }

    /// Response body bytes that went downstream.
    pub fn forwarded_response_body(&self) -> &'a [u8] {
        &self.st.resp.forwarded_body
    }

    /// Filter state under Envoy's key (e.g. `wasm.portcullis.receipt`).
    pub fn filter_state(&self, key: &str) -> Option<&'a [u8]> {
        self.st.filter_state.get(key).map(Vec::as_slice)
    }

    /// Filter state as UTF-8 text.
    pub fn filter_state_str(&self, key: &str) -> Option<&'a str> {
        self.filter_state(key)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value written to filter state `key`, oldest first (Envoy keeps only the last; a
    /// filter that writes a receipt per decision leaves them all here).
    pub fn filter_state_history(&self, key: &str) -> Vec<&'a [u8]> {
        self.st
            .filter_state_writes
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
            .collect()
    }

    /// All filter state keys set on the stream.
    pub fn filter_state_keys(&self) -> Vec<&'a str> {
        self.st.filter_state.keys().map(String::as_str).collect()
    }

    /// The stream ended (`proxy_on_log` / `proxy_on_done` ran).
    pub fn finished(&self) -> bool {
        self.st.finished
    }

    /// Envoy reset the stream.
    pub fn reset(&self) -> bool {
        self.st.reset
    }

    /// The request is held by the filter: headers arrived, but the request has neither gone
    /// upstream completely nor been answered.
    pub fn request_paused(&self) -> bool {
        self.st.req.headers_seen
            && !self.st.req.end_forwarded
            && self.st.local_response.is_none()
            && !self.st.reset
    }
}

enum Callback {
    Headers,
    Body,
    Trailers,
}

impl<'h> Stream<'h> {
    pub(crate) fn new(host: &'h mut Host, id: u32) -> Stream<'h> {
        Stream { host, id }
    }

    /// The stream's context id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The host (timers, call-outs, logs) while keeping this stream.
    pub fn host(&mut self) -> &mut Host {
        self.host
    }

    /// What happened on the stream so far.
    pub fn view(&self) -> StreamView<'_> {
        match self.host.store.data().streams.get(&self.id) {
            Some(st) => StreamView::new(st),
            None => StreamView::new(&EMPTY),
        }
    }

    /// Shorthand for `view().local_response()`.
    pub fn local_response(&self) -> Option<&LocalResponse> {
        self.view().local_response()
    }

    /// Shorthand for `view().filter_state_str(key)`.
    pub fn filter_state(&self, key: &str) -> Option<&str> {
        self.view().filter_state_str(key)
    }

    /// Adds a property only this stream sees (set it before `request_headers`).
    pub fn set_property(&mut self, path: &[&str], value: impl Into<Vec<u8>>) {
        let key = crate::abi::join_property_path(path);
        if let Some(st) = self.host.store.data_mut().streams.get_mut(&self.id) {
            st.properties.insert(key, value.into());
        }
    }

    fn state(&mut self) -> Result<&mut StreamState> {
        let id = self.id;
        match self.host.store.data_mut().streams.get_mut(&id) {
            Some(st) => Ok(st),
            None => bail!("stream {id} does not exist"),
        }
    }

    /// Request headers arrive from downstream (names are lowercased, as Envoy's codecs do).
    pub fn request_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action> {
        let st = self.state()?;
        if st.req.headers_seen || st.finished {
            bail!("request headers were already sent on this stream");
        }
        st.req.headers = lowercase(headers);
        st.req.headers_seen = true;
        st.req.headers_accessible = true;
        st.req.end_seen = end_of_stream;
        let n = len_u32(headers.len());
        self.run(true, Callback::Headers, n, end_of_stream)
    }

    /// A request body chunk arrives from downstream.
    pub fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<Action> {
        let id = self.id;
        let limit = self.host.store.data().buffer_limit;
        let st = self.state()?;
        if !st.req.headers_seen {
            bail!("request body before request headers");
        }
        if st.req.end_seen {
            bail!("request body after end of stream");
        }
        if st.finished || st.local_response.is_some() {
            bail!("stream {id} already ended; Envoy would not deliver more request body");
        }
        if st.req.buffering && st.req.buffer.len().saturating_add(chunk.len()) > limit {
            // Envoy's buffer limit: the filter manager answers 413 without calling the filter.
            st.local_requested = true;
            self.host.send_local_reply(
                id,
                LocalReplyRequest {
                    status: 413,
                    details: "request_payload_too_large".to_string(),
                    body: b"Payload Too Large".to_vec(),
                    headers: Vec::new(),
                    grpc_status: -1,
                },
            )?;
            self.host.settle()?;
            return Ok(Action::Pause);
        }
        if st.req.buffering {
            st.req.buffer.extend_from_slice(chunk);
        } else {
            st.req.buffer = chunk.to_vec();
        }
        st.req.body_accessible = true;
        st.req.end_seen = end_of_stream;
        let n = len_u32(st.req.buffer.len());
        self.run(true, Callback::Body, n, end_of_stream)
    }

    /// Response headers arrive from upstream. The request must have gone upstream first.
    pub fn response_headers(
        &mut self,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action> {
        let st = self.state()?;
        if st.req.forwarded_headers.is_none() || st.local_response.is_some() || st.finished {
            bail!("response headers on a stream whose request never went upstream");
        }
        if st.resp.headers_seen {
            bail!("response headers were already sent on this stream");
        }
        st.resp.headers = lowercase(headers);
        st.resp.headers_seen = true;
        st.resp.headers_accessible = true;
        st.resp.end_seen = end_of_stream;
        let n = len_u32(headers.len());
        self.run(false, Callback::Headers, n, end_of_stream)
    }

    /// A response body chunk arrives from upstream.
    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<Action> {
        let limit = self.host.store.data().buffer_limit;
        let st = self.state()?;
        if !st.resp.headers_seen || st.resp.end_seen || st.finished {
            bail!("response body out of order (no headers yet, after end of stream, or ended)");
        }
        if st.resp.buffering && st.resp.buffer.len().saturating_add(chunk.len()) > limit {
            bail!("response body over the buffer limit while the filter buffers it");
        }
        if st.resp.buffering {
            st.resp.buffer.extend_from_slice(chunk);
        } else {
            st.resp.buffer = chunk.to_vec();
        }
        st.resp.body_accessible = true;
        st.resp.end_seen = end_of_stream;
        let n = len_u32(st.resp.buffer.len());
        self.run(false, Callback::Body, n, end_of_stream)
    }

    /// Request trailers arrive from downstream and end the request (see the module docs).
    pub fn request_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<Action> {
        let id = self.id;
        let st = self.state()?;
        if !st.req.headers_seen {
            bail!("request trailers before request headers");
        }
        if st.req.end_seen {
            bail!("request trailers after end of stream");
        }
        if st.finished || st.local_response.is_some() {
            bail!("stream {id} already ended; Envoy would not deliver request trailers");
        }
        Self::arrive_trailers(&mut st.req, trailers);
        self.run(true, Callback::Trailers, len_u32(trailers.len()), true)
    }

    /// Response trailers arrive from upstream and end the response (see the module docs).
    pub fn response_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<Action> {
        let st = self.state()?;
        if !st.resp.headers_seen || st.resp.end_seen || st.finished {
            bail!("response trailers out of order (no headers yet, after end of stream, or ended)");
        }
        Self::arrive_trailers(&mut st.resp, trailers);
        self.run(false, Callback::Trailers, len_u32(trailers.len()), true)
    }

    fn arrive_trailers(dir: &mut Direction, trailers: &[(&str, &str)]) {
        dir.trailers = lowercase(trailers);
        dir.trailers_seen = true;
        dir.trailers_accessible = true;
        dir.end_seen = true;
        // Envoy keeps the body buffer only for a filter that is buffering it
        // (StopIterationAndBuffer); a chunk the filter let go is gone.
        if !dir.buffering {
            dir.body_accessible = false;
        }
    }

    /// Ends the stream now (client went away / Envoy tears it down): `proxy_on_log`,
    /// `proxy_on_done`, `proxy_on_delete`. Does nothing on a stream that already ended.
    pub fn finish(&mut self) -> Result<()> {
        self.host.finish_stream(self.id)?;
        self.host.settle()
    }

    fn run(&mut self, request: bool, cb: Callback, n: u32, end_of_stream: bool) -> Result<Action> {
        let id = self.id;
        let e = &self.host.exports;
        // A callback the module does not export: Envoy continues (the raw value 0).
        let (raw, name) = match (request, &cb) {
            (_, Callback::Trailers) => {
                let (f, name) = if request {
                    (e.on_request_trailers.clone(), "proxy_on_request_trailers")
                } else {
                    (e.on_response_trailers.clone(), "proxy_on_response_trailers")
                };
                let raw = self.host.call(f, Phase::Stream, id, (id, n), name)?;
                (raw.unwrap_or(0), name)
            }
            (request, cb) => {
                let (f, name) = match (request, cb) {
                    (true, Callback::Headers) => {
                        (e.on_request_headers.clone(), "proxy_on_request_headers")
                    }
                    (true, _) => (e.on_request_body.clone(), "proxy_on_request_body"),
                    (false, Callback::Headers) => {
                        (e.on_response_headers.clone(), "proxy_on_response_headers")
                    }
                    (false, _) => (e.on_response_body.clone(), "proxy_on_response_body"),
                };
                let args = (id, n, u32::from(end_of_stream));
                let raw = self.host.call(f, Phase::Stream, id, args, name)?;
                (raw.unwrap_or(0), name)
            }
        };
        let Some(action) = Action::from_raw(raw.cast_signed()) else {
            bail!("{name} returned {raw}, which is not a proxy_action_t (0 or 1)");
        };
        let st = self.state()?;
        if !st.local_requested && !st.finished {
            let dir = if request { &mut st.req } else { &mut st.resp };
            match (action, cb) {
                (Action::Continue, Callback::Headers) => {
                    if dir.forwarded_headers.is_none() {
                        dir.forwarded_headers = Some(dir.headers.clone());
                    }
                    dir.headers_accessible = false;
                    if dir.end_seen {
                        dir.end_forwarded = true;
                    }
                }
                (Action::Continue, Callback::Body | Callback::Trailers) => release(dir),
                (Action::Pause, Callback::Body) => dir.buffering = true,
                // Held: the buffered body stays readable (`buffering` is unchanged) and
                // nothing goes on until the filter continues the stream or answers.
                (Action::Pause, Callback::Headers | Callback::Trailers) => {}
            }
            if !request && st.resp.end_forwarded {
                self.host.finish_stream(id)?;
            }
        }
        self.host.settle()?;
        Ok(action)
    }
}

static EMPTY: std::sync::LazyLock<StreamState> = std::sync::LazyLock::new(StreamState::default);

fn lowercase(headers: &[(&str, &str)]) -> Pairs {
    headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect()
}
