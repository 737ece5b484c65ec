//! The root context's side of the shared state store: read every containment record, hold a
//! watch from the revision read, join what it reports into the local records, and write the
//! outbox to etcd on the timer.
//!
//! **In sync** means: the watch is open and etcd confirmed it (`created`). Until then, and from
//! the moment the stream closes, the cache may be stale: a principal it does not know is denied
//! (`filter:state_store`), a known one is decided on the cache. A closed watch is opened again
//! on the next timer tick from the last revision it delivered (events are not lost); when etcd
//! compacted that revision away, everything is read again.

use std::cell::RefCell;

use super::proto::{self, Event};
use super::{Containment, Etcd, Failed, KV, Op, Records, Step, answer, outbox, principals_range};
use crate::host::{Host, LogLevel};
use crate::limits::{
    ETCD_RETRY_MS, ETCD_WARN_PERIOD_MS, MAX_ETCD_ANSWER_BYTES, MAX_FLUSH_PER_TICK,
};
use crate::metrics::{Metric, Metrics};

#[derive(Debug, Default)]
struct State {
    /// Every event up to this revision is in the cache (0: nothing read yet).
    rev: i64,
    /// The initial read in flight.
    reading: Option<u32>,
    /// The watch stream, while open.
    watch: Option<u32>,
    /// etcd confirmed the watch: the cache is in sync.
    created: bool,
    /// Do not try to connect again before this time.
    retry_at_ms: u64,
    /// Outbox writes in flight.
    flushing: Vec<(u32, Op)>,
    /// When a failure was last logged (the outage of a minute is a few lines, not thousands).
    warned_ms: Option<u64>,
    /// The initial read completed since [`Watcher::take_just_read`] last asked.
    just_read: bool,
}

/// One worker's watch of the shared state store.
#[derive(Debug)]
pub(crate) struct Watcher {
    pub etcd: Etcd,
    metrics: Metrics,
    st: RefCell<State>,
}

impl Watcher {
    pub(crate) fn new(etcd: Etcd, metrics: Metrics) -> Watcher {
        Watcher {
            etcd,
            metrics,
            st: RefCell::new(State::default()),
        }
    }

    /// Whether an initial read completed since the last call (cleared).
    pub(crate) fn take_just_read(&self) -> bool {
        std::mem::take(&mut self.st.borrow_mut().just_read)
    }

    /// Whether the cache is in sync with etcd.
    pub(crate) fn synced(&self) -> bool {
        let st = self.st.borrow();
        st.watch.is_some() && st.created
    }

    /// Count a failure; log it unless another was logged in the last [`ETCD_WARN_PERIOD_MS`].
    fn fail(&self, host: &dyn Host, why: &str) {
        self.metrics.count(host, Metric::StateStoreErrors);
        let now = host.now_ms();
        let due = self
            .st
            .borrow()
            .warned_ms
            .is_none_or(|t| now.saturating_sub(t) >= ETCD_WARN_PERIOD_MS);
        if due {
            self.st.borrow_mut().warned_ms = Some(now);
            host.log(LogLevel::Warn, &format!("portcullis: state store: {why}"));
        }
    }

    /// Connect when not connected (first read, or the watch from the last revision), and write
    /// what the outbox holds.
    pub(crate) fn on_tick(&self, host: &dyn Host, records: &dyn Records) {
        let now = host.now_ms();
        let connect = {
            let st = self.st.borrow();
            st.reading.is_none() && st.watch.is_none() && now >= st.retry_at_ms
        };
        if connect {
            self.connect(host);
        }
        self.flush(host, records);
    }

    fn connect(&self, host: &dyn Host) {
        let rev = self.st.borrow().rev;
        if rev == 0 {
            let (start, end) = principals_range(&self.etcd.cfg.prefix);
            let msg = proto::range(&start, Some(&end)).finish();
            match self.etcd.call(host, KV, "Range", &msg) {
                Ok(t) => self.st.borrow_mut().reading = Some(t),
                Err(e) => self.retry_later(host, &format!("etcd cannot be called: {}", e.0)),
            }
        } else {
            self.open_watch(host, rev.saturating_add(1));
        }
    }

    fn retry_later(&self, host: &dyn Host, why: &str) {
        self.fail(host, why);
        let mut st = self.st.borrow_mut();
        st.reading = None;
        st.retry_at_ms = host.now_ms().saturating_add(ETCD_RETRY_MS);
    }

    fn open_watch(&self, host: &dyn Host, from: i64) {
        let (start, end) = principals_range(&self.etcd.cfg.prefix);
        let opened = self.etcd.open_watch(host).and_then(|t| {
            let create = proto::watch_create(&start, &end, from).finish();
            host.send_grpc_stream_message(t, &create, false).map(|()| t)
        });
        match opened {
            Ok(t) => {
                let mut st = self.st.borrow_mut();
                st.watch = Some(t);
                st.created = false;
            }
            Err(e) => self.retry_later(host, &format!("the watch cannot be opened: {}", e.0)),
        }
    }

    /// Write (compare-and-swap, joined) the containment of principals in the outbox, a few per
    /// tick, each at most once at a time.
    fn flush(&self, host: &dyn Host, records: &dyn Records) {
        let ids = outbox(host);
        for id in ids.into_iter().take(MAX_FLUSH_PER_TICK) {
            let busy = self
                .st
                .borrow()
                .flushing
                .iter()
                .any(|(_, op)| matches!(op, Op::Push { id: i, .. } if *i == id));
            if busy {
                continue;
            }
            let mut op = Op::push(id);
            match op.start(host, &self.etcd, records) {
                Ok(t) => self.st.borrow_mut().flushing.push((t, op)),
                Err(f) => {
                    self.fail(host, &f.why());
                    return;
                }
            }
        }
    }

    /// A unary call of this watcher answered: the initial read, or an outbox write. Returns
    /// whether the token was this watcher's.
    pub(crate) fn on_call_response(
        &self,
        host: &dyn Host,
        records: &dyn Records,
        token: u32,
        status: u32,
        size: usize,
    ) -> bool {
        if self.st.borrow().reading == Some(token) {
            self.read_answered(host, records, status, size);
            return true;
        }
        let pos = self
            .st
            .borrow()
            .flushing
            .iter()
            .position(|(t, _)| *t == token);
        let Some(pos) = pos else {
            return false;
        };
        let (_, op) = self.st.borrow_mut().flushing.swap_remove(pos);
        match op.step(host, &self.etcd, records, status, size) {
            Step::Done => {}
            Step::Next(op, t) => self.st.borrow_mut().flushing.push((t, op)),
            Step::Failed(Failed::Unavailable(why)) => self.fail(host, &why),
            Step::Failed(Failed::Replayed) => {}
        }
        true
    }

    fn read_answered(&self, host: &dyn Host, records: &dyn Records, status: u32, size: usize) {
        let read = answer(host, status, size).and_then(|b| {
            proto::range_response(&b).ok_or_else(|| "etcd's answer is not one".to_owned())
        });
        let r = match read {
            Ok(r) => r,
            Err(why) => return self.retry_later(host, &why),
        };
        for kv in &r.kvs {
            self.join(host, records, &kv.value, kv.mod_revision);
        }
        {
            let mut st = self.st.borrow_mut();
            st.reading = None;
            st.rev = r.revision.max(1);
            st.just_read = true;
        }
        host.log(
            LogLevel::Info,
            &format!(
                "portcullis: state store: read {} containment records at revision {}",
                r.kvs.len(),
                r.revision
            ),
        );
        self.open_watch(host, r.revision.saturating_add(1));
    }

    /// Join one stored containment value into the local record it names.
    fn join(&self, host: &dyn Host, records: &dyn Records, value: &[u8], rev: i64) {
        let Some(c) = Containment::decode(value) else {
            self.fail(host, "a containment record in etcd is not one; ignored");
            return;
        };
        let now_s = host.now_ms() / 1000;
        let joined = records.apply(host, &c.id, &mut |r| {
            let changed = c.join_into(r, records.release_keys(), now_s);
            let moved = r.etcd_rev < rev;
            if moved {
                r.etcd_rev = rev;
            }
            changed || moved
        });
        if let Err(e) = joined {
            self.fail(
                host,
                &format!("principal `{}` could not be updated from etcd: {e}", c.id),
            );
        }
    }

    /// A message on the watch stream.
    pub(crate) fn on_stream_message(
        &self,
        host: &dyn Host,
        records: &dyn Records,
        token: u32,
        size: usize,
    ) -> bool {
        if self.st.borrow().watch != Some(token) {
            return false;
        }
        let bytes = if size > MAX_ETCD_ANSWER_BYTES {
            None
        } else {
            host.grpc_call_response(size)
        };
        let Some(w) = bytes.as_deref().and_then(proto::watch_response) else {
            self.fail(host, "a watch message is not one; reading everything again");
            self.st.borrow_mut().rev = 0;
            self.close(host);
            return true;
        };
        if w.created && !self.st.borrow().created {
            self.st.borrow_mut().created = true;
            self.metrics.add(host, Metric::StateStoreWatches, 1);
            host.log(
                LogLevel::Info,
                &format!(
                    "portcullis: state store: watching from revision {} (in sync)",
                    self.st.borrow().rev.saturating_add(1)
                ),
            );
        }
        for e in &w.events {
            if let Event::Put(kv) = e {
                self.join(host, records, &kv.value, kv.mod_revision);
            }
            // A deleted key lifts nothing: only a release does (docs/state.md).
            let rev = match e {
                Event::Put(kv) | Event::Delete(kv) => kv.mod_revision,
            };
            let mut st = self.st.borrow_mut();
            st.rev = st.rev.max(rev);
        }
        if w.canceled {
            let why = if w.compact_revision > 0 {
                self.st.borrow_mut().rev = 0;
                format!(
                    "the watch's revision was compacted (now {}); reading everything again",
                    w.compact_revision
                )
            } else {
                format!("etcd canceled the watch: {}", w.cancel_reason)
            };
            self.fail(host, &why);
            self.close(host);
        }
        true
    }

    /// The watch stream closed (etcd went away, Envoy reset it).
    pub(crate) fn on_stream_close(&self, host: &dyn Host, token: u32, status: u32) -> bool {
        if self.st.borrow().watch != Some(token) {
            return false;
        }
        self.forget_watch(host);
        self.fail(
            host,
            &format!("the watch closed (gRPC status {status}); the cache is out of sync until it is open again"),
        );
        self.st.borrow_mut().retry_at_ms = host.now_ms().saturating_add(ETCD_RETRY_MS);
        true
    }

    fn forget_watch(&self, host: &dyn Host) {
        let was_created = {
            let mut st = self.st.borrow_mut();
            st.watch = None;
            std::mem::take(&mut st.created)
        };
        if was_created {
            self.metrics.add(host, Metric::StateStoreWatches, -1);
        }
    }

    fn close(&self, host: &dyn Host) {
        if let Some(t) = self.st.borrow().watch {
            host.close_grpc_stream(t);
        }
        self.forget_watch(host);
    }

    /// The configuration stops: close the watch.
    pub(crate) fn on_done(&self, host: &dyn Host) {
        self.close(host);
    }
}
