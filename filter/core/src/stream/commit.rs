//! With the etcd backend: a decided request waits for the writes its decision needs in the shared
//! state store before it is enforced (`docs/state.md`). The containment it changed (a kill, a
//! quarantine, a taint, a revocation) is written first; then the ids of approval tokens it
//! honoured are created. When every write is done, the plan is enforced as decided; when one
//! fails, `decide::refuse_uncommitted` says what is enforced instead. Either way the request
//! is answered or resumed from here.

use std::collections::VecDeque;

use bundle::action::Action;

use super::{Phase, Stream};
use crate::decide::{self, Plan, Shape};
use crate::host::{FilterAction, Host, LogLevel};
use crate::metrics::Metric;
use crate::root::Loaded;
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
}

/// The writes a decision needs: the containment of `changed` principals, then the approval
/// tokens the plan honoured.
pub(super) fn ops_of(changed: Vec<String>, plan: &Plan) -> VecDeque<Op> {
    let pushes = changed.into_iter().map(Op::push);
    let claims = plan
        .msgs
        .iter()
        .filter_map(|m| m.used_token)
        .map(|(nonce, expires_s)| Op::Lease { nonce, expires_s });
    pushes.chain(claims).collect()
}

impl Stream {
    /// Start the writes `ops` of a decided request; enforces the plan now when none can start.
    pub(super) fn start_commit(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        (shape, actions, plan): (Shape, Vec<Action>, Plan),
        ops: VecDeque<Op>,
    ) -> FilterAction {
        let mut c = Committing {
            shape,
            actions,
            plan,
            ops,
            current: None,
            failed: None,
        };
        if next(host, l, &mut c) {
            self.committing = Some(c);
            self.phase = Phase::Waiting;
            return FilterAction::Pause;
        }
        self.finish_commit(host, l, c)
    }

    /// A gRPC call of this stream answered.
    pub fn on_grpc_call_response(&mut self, host: &dyn Host, token: u32, status: u32, size: usize) {
        let mine = self
            .committing
            .as_ref()
            .and_then(|c| c.current.as_ref())
            .is_some_and(|(t, _)| *t == token);
        if self.phase != Phase::Waiting || !mine {
            return;
        }
        let plugin = std::rc::Rc::clone(&self.plugin);
        let (Ok(l), Some(mut c)) = (&plugin.loaded, self.committing.take()) else {
            return;
        };
        let Some(etcd) = l.watcher.as_ref().map(|w| &w.etcd) else {
            return;
        };
        let Some((_, op)) = c.current.take() else {
            return;
        };
        let waiting = match op.step(host, etcd, &l.sessions, status, size) {
            Step::Done => next(host, l, &mut c),
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
        if self.finish_commit(host, l, c) == FilterAction::Continue {
            host.resume_request();
        }
    }

    /// Every write is done (or one failed): enforce the plan, or what replaces it.
    fn finish_commit(&mut self, host: &dyn Host, l: &Loaded, c: Committing) -> FilterAction {
        let plan = match &c.failed {
            None => c.plan,
            Some(f) => {
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
                decide::refuse_uncommitted(host, &l.policy, &l.sessions, c.plan, &c.actions, f)
            }
        };
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
