//! With the etcd backend: a decided request waits for the writes its decision needs in the shared
//! state store before it is enforced (`docs/state.md`). The containment it changed (a kill, a
//! quarantine, a taint, a revocation) is written first; then the ids of approval tokens it
//! honoured are created; last, with `state.sessions: etcd`, its session record is written with a
//! compare-and-swap on the revision it was decided on. When every write is done, the plan is
//! enforced as decided; when a containment or token write fails, `decide::refuse_uncommitted`
//! says what is enforced instead. When another replica wrote the session first, the record etcd
//! returned is cached and the request is decided again on it (at most
//! [`MAX_SESSION_COMMIT_TRIES`] times); when the session write cannot be made,
//! `decide::refuse_unsaved_session` denies it. Either way the request is answered or resumed
//! from here.

use std::collections::VecDeque;

use bundle::action::Action;

use super::{Phase, Prepared, Stream};
use crate::decide::{self, Plan, Shape};
use crate::host::{FilterAction, Host, LogLevel};
use crate::limits::MAX_SESSION_COMMIT_TRIES;
use crate::metrics::Metric;
use crate::root::Loaded;
use crate::session::Staged;
use crate::session::etcd::sessions::{self, Answer};
use crate::session::etcd::{Failed, Op, Step};

/// A decided request waiting for its writes.
#[derive(Debug)]
pub(super) struct Committing {
    shape: Shape,
    actions: Vec<Action>,
    plan: Plan,
    /// Writes not started yet.
    ops: VecDeque<Op>,
    /// The write in flight, with its call's token.
    current: Option<(u32, Op)>,
    failed: Option<Failed>,
    /// With sessions on etcd: the session record to write last, and what deciding again needs.
    staged: Option<Staged>,
    redo: Option<Redo>,
    /// The session write in flight: its call's token.
    session_call: Option<u32>,
    /// The grant of the lease the session record is written with, in flight: its call's token
    /// and the lease's TTL (`sessions::current_lease`).
    lease_call: Option<(u32, u64)>,
}

/// What a request needs to be decided again.
#[derive(Debug)]
pub(super) struct Redo {
    pub prepared: Box<Prepared>,
    /// The session the request was decided in (the decision may have cleared it).
    pub session: Option<String>,
}

/// How often a request was decided, and what it claimed in etcd already.
#[derive(Debug, Default)]
pub(super) struct Retry {
    tries: u8,
    /// Approval token ids created in etcd by an earlier try (a new try must not claim them again:
    /// it would find them used).
    claimed: Vec<[u8; 16]>,
}

/// The writes a decision needs: the containment of `changed` principals, then the approval
/// tokens the plan honoured (except those an earlier try of this request claimed).
pub(super) fn ops_of(changed: Vec<String>, plan: &Plan, retry: &Retry) -> VecDeque<Op> {
    let pushes = changed.into_iter().map(Op::push);
    let claims = plan
        .msgs
        .iter()
        .filter_map(|m| m.used_token)
        .filter(|(nonce, _)| !retry.claimed.contains(nonce))
        .map(|(nonce, expires_s)| Op::Lease { nonce, expires_s });
    pushes.chain(claims).collect()
}

impl Stream {
    /// Start the writes `ops` of a decided request, then the write of its `staged` session
    /// record; enforces the plan now when none can start.
    pub(super) fn start_commit(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        (shape, actions, plan): (Shape, Vec<Action>, Plan),
        ops: VecDeque<Op>,
        (staged, redo): (Option<Staged>, Option<Redo>),
    ) -> FilterAction {
        let mut c = Committing {
            shape,
            actions,
            plan,
            ops,
            current: None,
            failed: None,
            staged,
            redo,
            session_call: None,
            lease_call: None,
        };
        if next(host, l, &mut c) {
            self.committing = Some(c);
            self.phase = Phase::Waiting;
            return FilterAction::Pause;
        }
        self.after_ops(host, l, c)
    }

    /// A gRPC call of this stream answered.
    pub fn on_grpc_call_response(&mut self, host: &dyn Host, token: u32, status: u32, size: usize) {
        let mine = self.committing.as_ref().is_some_and(|c| {
            c.current.as_ref().is_some_and(|(t, _)| *t == token)
                || c.session_call == Some(token)
                || c.lease_call.is_some_and(|(t, _)| t == token)
        });
        if self.phase != Phase::Waiting || !mine {
            return;
        }
        let plugin = std::rc::Rc::clone(&self.plugin);
        let (Ok(l), Some(mut c)) = (&plugin.loaded, self.committing.take()) else {
            return;
        };
        if let Some((_, ttl_s)) = c.lease_call.take_if(|(t, _)| *t == token) {
            let a = match sessions::lease_granted(host, status, size, host.now_ms(), ttl_s) {
                Ok(lease) => self.write_session(host, l, c, lease),
                Err(f) => self.session_unsaved(host, l, c, &f),
            };
            if a == FilterAction::Continue {
                host.resume_request();
            }
            return;
        }
        if c.session_call == Some(token) {
            let a = self.session_answered(host, l, c, sessions::read_answer(host, status, size));
            if a == FilterAction::Continue {
                host.resume_request();
            }
            return;
        }
        // INVARIANT: `mine` held, so a write is in flight; a stream commits only with a watcher.
        let (Some(etcd), Some((_, op))) = (l.watcher.as_ref().map(|w| &w.etcd), c.current.take())
        else {
            return;
        };
        let claim = match &op {
            Op::Claim { nonce, .. } => Some(*nonce),
            _ => None,
        };
        let waiting = match op.step(host, etcd, &l.sessions, status, size) {
            Step::Done => {
                if let Some(nonce) = claim {
                    self.retry.claimed.push(nonce);
                }
                next(host, l, &mut c)
            }
            Step::Next(op, t) => {
                c.current = Some((t, op));
                true
            }
            Step::Failed(f) => {
                c.failed = Some(f);
                false
            }
        };
        if waiting {
            self.committing = Some(c);
            return;
        }
        if self.after_ops(host, l, c) == FilterAction::Continue {
            host.resume_request();
        }
    }

    /// The containment and token writes are done (or one failed): apply a failure to the plan,
    /// then write the session record, or enforce.
    fn after_ops(&mut self, host: &dyn Host, l: &Loaded, mut c: Committing) -> FilterAction {
        if let Some(f) = c.failed.take() {
            host.log(
                LogLevel::Error,
                &format!(
                    "portcullis: state store: a write of session `{}` failed: {}",
                    c.plan.chain_name,
                    f.why()
                ),
            );
            if matches!(f, Failed::Unavailable(_)) {
                self.plugin.metrics.count(host, Metric::StateStoreErrors);
            }
            // The refusal's receipt is added to the staged session record, if there is one.
            if let Some(s) = c.staged.take() {
                l.sessions.restage(s);
            }
            c.plan =
                decide::refuse_uncommitted(host, &l.policy, &l.sessions, c.plan, &c.actions, &f);
            c.staged = l.sessions.take_staged();
        }
        let Some(staged) = &c.staged else {
            return self.enforce(host, l, &c.shape, &c.actions, c.plan);
        };
        // A record to put needs the session lease (`sessions.rs`): granted first when this
        // process has none with enough time left; a probe puts nothing and needs none.
        let idle_ms = l.policy.cfg.session.idle_ttl_ms;
        let lease = if staged.puts() {
            sessions::current_lease(host, host.now_ms(), idle_ms)
        } else {
            Some(0)
        };
        if let Some(lease) = lease {
            return self.write_session(host, l, c, lease);
        }
        let ttl_s = sessions::lease_ttl_s(idle_ms);
        let granted = match l.watcher.as_ref() {
            Some(w) => sessions::grant_lease(host, &w.etcd, ttl_s),
            None => Err(Failed::Unavailable(
                "no state store is configured".to_owned(),
            )),
        };
        self.await_store(host, l, c, granted, |c, token| {
            c.lease_call = Some((token, ttl_s));
        })
    }

    /// Wait for the store call `started` (its token kept in `c` by `keep`), or, when it could not
    /// be sent, go on as a failed write.
    fn await_store(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        mut c: Committing,
        started: Result<u32, Failed>,
        keep: impl FnOnce(&mut Committing, u32),
    ) -> FilterAction {
        match started {
            Ok(token) => {
                keep(&mut c, token);
                self.committing = Some(c);
                self.phase = Phase::Waiting;
                FilterAction::Pause
            }
            Err(f) => self.session_unsaved(host, l, c, &f),
        }
    }

    /// Send the staged session record's compare-and-swap, its put attached to `lease`.
    fn write_session(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        c: Committing,
        lease: i64,
    ) -> FilterAction {
        let Some(staged) = &c.staged else {
            return self.enforce(host, l, &c.shape, &c.actions, c.plan);
        };
        let started = match (l.watcher.as_ref(), staged.value()) {
            (Some(w), Ok(value)) => sessions::start(
                host,
                &w.etcd,
                &staged.session,
                staged.base_rev,
                value.as_deref(),
                lease,
            ),
            (None, _) => Err(Failed::Unavailable(
                "no state store is configured".to_owned(),
            )),
            (_, Err(why)) => Err(Failed::Unavailable(why)),
        };
        self.await_store(host, l, c, started, |c, token| c.session_call = Some(token))
    }

    /// Etcd answered the session write.
    fn session_answered(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        mut c: Committing,
        answer: Answer,
    ) -> FilterAction {
        let Some(staged) = c.staged.take() else {
            return self.enforce(host, l, &c.shape, &c.actions, c.plan);
        };
        match answer {
            Answer::Current(rev) => {
                l.sessions.committed(host, staged, rev);
                self.enforce(host, l, &c.shape, &c.actions, c.plan)
            }
            Answer::Stale(rev, value) => {
                // Another replica wrote the session since this cache read it: decide again on
                // what etcd holds (its chain head, counters, taints and kills).
                l.sessions
                    .adopt(host, &staged.session, staged.owner, rev, value.as_deref());
                self.retry.tries = self.retry.tries.saturating_add(1);
                match c.redo.take() {
                    Some(redo) if self.retry.tries < MAX_SESSION_COMMIT_TRIES => {
                        self.session = redo.session;
                        self.decide_and_enforce(host, l, *redo.prepared)
                    }
                    _ => {
                        let f = Failed::Unavailable(format!(
                            "other replicas wrote session `{}` first {} times",
                            staged.session, self.retry.tries
                        ));
                        self.session_unsaved(host, l, c, &f)
                    }
                }
            }
            Answer::Failed(f) => self.session_unsaved(host, l, c, &f),
        }
    }

    /// The session record could not be written: the request is denied (`filter:state_store`).
    fn session_unsaved(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        c: Committing,
        f: &Failed,
    ) -> FilterAction {
        host.log(
            LogLevel::Error,
            &format!(
                "portcullis: state store: session `{}` could not be written: {}",
                c.plan.chain_name,
                f.why()
            ),
        );
        self.plugin.metrics.count(host, Metric::StateStoreErrors);
        let plan = decide::refuse_unsaved_session(
            host,
            &l.policy,
            &l.sessions,
            c.plan,
            &c.actions,
            &f.why(),
        );
        self.enforce(host, l, &c.shape, &c.actions, plan)
    }
}

/// Start the next write; `false` when there is none left or one could not start (recorded in
/// `c.failed`: the writes after it are not made).
fn next(host: &dyn Host, l: &Loaded, c: &mut Committing) -> bool {
    let Some(etcd) = l.watcher.as_ref().map(|w| &w.etcd) else {
        return false;
    };
    let Some(mut op) = c.ops.pop_front() else {
        return false;
    };
    match op.start(host, etcd, &l.sessions) {
        Ok(t) => {
            c.current = Some((t, op));
            true
        }
        Err(f) => {
            c.failed = Some(f);
            false
        }
    }
}
