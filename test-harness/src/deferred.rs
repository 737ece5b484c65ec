//! What Envoy does after a VM call returns: continue a paused direction, send a local reply
//! back through the filter's response callbacks, reset, end a stream (`proxy_on_log`,
//! `proxy_on_done`, `proxy_on_delete`); and the final check for filter misbehaviour.

use anyhow::{Result, bail};

use crate::abi::Pairs;
use crate::host::{Host, len_u32};
use crate::state::{Deferred, Direction, LocalReplyRequest, LocalResponse, Phase};

/// How many rounds of deferred work one operation may trigger before the harness calls it a
/// loop.
const MAX_DEFERRED_ROUNDS: usize = 64;

impl Host {
    /// Runs the work Envoy defers until a VM call returns, then fails if the module did
    /// something Envoy would silently tolerate.
    pub(crate) fn settle(&mut self) -> Result<()> {
        for _ in 0..MAX_DEFERRED_ROUNDS {
            let work = std::mem::take(&mut self.store.data_mut().deferred);
            if work.is_empty() {
                return self.check_violations();
            }
            for item in work {
                match item {
                    Deferred::Continue { ctx, request } => self.resume(ctx, request)?,
                    Deferred::Close { ctx } => {
                        if let Some(s) = self.store.data_mut().streams.get_mut(&ctx) {
                            s.reset = true;
                        }
                        self.finish_stream(ctx)?;
                    }
                    Deferred::LocalReply { ctx, reply } => self.send_local_reply(ctx, reply)?,
                    Deferred::Done { ctx } => self.delete_context(ctx)?,
                }
            }
        }
        bail!("deferred work kept creating more deferred work ({MAX_DEFERRED_ROUNDS} rounds)")
    }

    fn check_violations(&mut self) -> Result<()> {
        let all = &self.store.data().violations;
        if all.len() > self.reported_violations {
            let new = all[self.reported_violations..].join("\n  ");
            self.reported_violations = all.len();
            bail!("the filter did something Envoy would not handle as intended:\n  {new}");
        }
        Ok(())
    }

    /// `continueDecoding()` / `continueEncoding()`: headers and buffered body go on.
    pub(crate) fn resume(&mut self, ctx: u32, request: bool) -> Result<()> {
        let st = self.store.data_mut();
        let Some(stream) = st.streams.get_mut(&ctx) else {
            return Ok(());
        };
        if stream.finished || stream.local_response.is_some() {
            return Ok(());
        }
        if request && stream.local_requested {
            // Envoy would start the upstream request, then reset it for the local reply: the
            // upstream has already seen a request the filter meant to refuse.
            st.violation(format!(
                "stream {ctx}: proxy_continue_stream before proxy_send_local_response in the same \
                 callback lets the request reach upstream before the refusal"
            ));
            return Ok(());
        }
        let dir = if request {
            &mut stream.req
        } else {
            &mut stream.resp
        };
        release(dir);
        if !request && stream.resp.end_forwarded {
            self.finish_stream(ctx)?;
        }
        Ok(())
    }

    /// Envoy's `sendLocalReply`: the reply goes back through this filter's response callbacks
    /// (when the upstream response has not started), then the stream ends.
    pub(crate) fn send_local_reply(&mut self, ctx: u32, reply: LocalReplyRequest) -> Result<()> {
        let st = self.store.data_mut();
        let Some(stream) = st.streams.get_mut(&ctx) else {
            return Ok(());
        };
        if stream.finished {
            st.violation(format!(
                "local response on stream {ctx} after the stream ended"
            ));
            return Ok(());
        }
        let mut headers: Pairs =
            vec![(":status".to_string(), reply.status.to_string().into_bytes())];
        headers.extend(reply.headers.iter().cloned());
        if !reply.body.is_empty() {
            headers.push((
                "content-length".to_string(),
                reply.body.len().to_string().into_bytes(),
            ));
            if !headers.iter().any(|(k, _)| k == "content-type") {
                headers.push(("content-type".to_string(), b"text/plain".to_vec()));
            }
        }
        // The request never goes (further) upstream.
        stream.req.headers_accessible = false;
        stream.req.body_accessible = false;
        stream.req.trailers_accessible = false;
        stream.req.buffering = false;

        if stream.resp.forwarded_headers.is_some() {
            // The response already started downstream: Envoy can only reset the stream.
            stream.reset = true;
            stream.local_response = Some(LocalResponse {
                status: reply.status,
                details: reply.details,
                headers,
                body: reply.body,
                grpc_status: reply.grpc_status,
            });
            return self.finish_stream(ctx);
        }
        if stream.resp.headers_seen {
            // An upstream response is being processed: Envoy replies directly, bypassing filters.
            stream.resp.forwarded_headers = Some(headers.clone());
            stream.resp.forwarded_body = reply.body.clone();
            stream.resp.end_forwarded = true;
            stream.local_response = Some(LocalResponse {
                status: reply.status,
                details: reply.details,
                headers,
                body: reply.body,
                grpc_status: reply.grpc_status,
            });
            return self.finish_stream(ctx);
        }

        let body_empty = reply.body.is_empty();
        stream.resp = Direction {
            headers,
            headers_seen: true,
            headers_accessible: true,
            end_seen: body_empty,
            ..Direction::default()
        };
        let n = len_u32(stream.resp.headers.len());
        let f = self.exports.on_response_headers.clone();
        let action = self.call(
            f,
            Phase::Stream,
            ctx,
            (ctx, n, u32::from(body_empty)),
            "proxy_on_response_headers (local reply)",
        )?;
        if action == Some(1) {
            self.store.data_mut().violation(format!(
                "stream {ctx}: the filter paused its own local response in on_response_headers"
            ));
        }
        let st = self.store.data_mut();
        let Some(stream) = st.streams.get_mut(&ctx) else {
            return Ok(());
        };
        stream.resp.headers_accessible = false;
        stream.resp.forwarded_headers = Some(stream.resp.headers.clone());
        if !body_empty {
            stream.resp.buffer = reply.body.clone();
            stream.resp.body_accessible = true;
            stream.resp.end_seen = true;
            let len = len_u32(reply.body.len());
            let f = self.exports.on_response_body.clone();
            let action = self.call(
                f,
                Phase::Stream,
                ctx,
                (ctx, len, 1),
                "proxy_on_response_body (local reply)",
            )?;
            if action == Some(1) {
                self.store.data_mut().violation(format!(
                    "stream {ctx}: the filter paused its own local response in on_response_body"
                ));
            }
        }
        let st = self.store.data_mut();
        let Some(stream) = st.streams.get_mut(&ctx) else {
            return Ok(());
        };
        let body = std::mem::take(&mut stream.resp.buffer);
        stream.resp.body_accessible = false;
        stream.resp.forwarded_body = body.clone();
        stream.resp.end_forwarded = true;
        stream.local_response = Some(LocalResponse {
            status: reply.status,
            details: reply.details,
            headers: stream.resp.forwarded_headers.clone().unwrap_or_default(),
            body,
            grpc_status: reply.grpc_status,
        });
        self.finish_stream(ctx)
    }

    /// The stream is over: `proxy_on_log`, `proxy_on_done`, then `proxy_on_delete` (Envoy's
    /// order: access log first, then filter destruction). If `proxy_on_done` returns false the
    /// context waits for `proxy_done`.
    pub(crate) fn finish_stream(&mut self, ctx: u32) -> Result<()> {
        let Some(stream) = self.store.data_mut().streams.get_mut(&ctx) else {
            return Ok(());
        };
        if stream.finished {
            return Ok(());
        }
        stream.finished = true;
        let log = self.exports.on_log.clone();
        self.call(log, Phase::Log, ctx, ctx, "proxy_on_log")?;
        let done = self.exports.on_done.clone();
        let finished = self.call(done, Phase::Done, ctx, ctx, "proxy_on_done")?;
        if finished == Some(0) {
            self.store.data_mut().pending_done.insert(ctx);
            return Ok(());
        }
        self.delete_context(ctx)
    }

    fn delete_context(&mut self, ctx: u32) -> Result<()> {
        let delete = self.exports.on_delete.clone();
        self.call(delete, Phase::Lifecycle, ctx, ctx, "proxy_on_delete")?;
        if let Some(s) = self.store.data_mut().streams.get_mut(&ctx) {
            s.deleted = true;
        }
        Ok(())
    }
}

/// Headers (if still held), everything buffered, then the trailers (if they arrived) go on, in
/// that order; the filter loses access to all three.
pub(crate) fn release(dir: &mut Direction) {
    if dir.forwarded_headers.is_none() && dir.headers_seen {
        dir.forwarded_headers = Some(dir.headers.clone());
    }
    dir.headers_accessible = false;
    let buffered = std::mem::take(&mut dir.buffer);
    dir.forwarded_body.extend_from_slice(&buffered);
    dir.buffering = false;
    dir.body_accessible = false;
    if dir.trailers_seen && dir.forwarded_trailers.is_none() {
        dir.forwarded_trailers = Some(dir.trailers.clone());
    }
    dir.trailers_accessible = false;
    if dir.end_seen {
        dir.end_forwarded = true;
    }
}
