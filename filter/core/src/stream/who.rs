//! Who a request is, before it is decided (`docs/containment.md`): the record of its principal,
//! the task grant verified for that principal, the run it is decided in (a keyless request of a
//! known principal joins its current run), and the intent a trusted source declares.

use bundle::action::{Action, IntentSource};
use bundle::grant::Grant;

use super::Stream;
use crate::config::RunSource;
use crate::host::Host;
use crate::identity;
use crate::normalize::Refusal;
use crate::root::Loaded;
use crate::session::{PrincipalRecord, StoreFailed};

/// What the stream knows of the request's principal before the decision.
pub(super) struct Who {
    /// The principal's record as read (`None`: no principal is known).
    pub record: Option<Result<PrincipalRecord, StoreFailed>>,
    /// The verified task grant, if the request carried one.
    pub grant: Option<Grant>,
    /// The intent a trusted source declares, and which source: a grant, else a JWT claim.
    pub trusted: Option<(String, IntentSource)>,
}

impl Stream {
    /// Resolve who the request is; sets the session it is decided in. A task grant that does not
    /// verify is refused (403).
    pub(super) fn who(&mut self, host: &dyn Host, l: &Loaded) -> Result<Who, Refusal> {
        let cfg = &l.policy.cfg;
        let grant = self.verified_grant(host, l)?;
        let record = self
            .principal
            .as_deref()
            .map(|p| l.sessions.principal(host, p));
        if let (Some(p), Some(Ok(r))) = (self.principal.as_deref(), &record) {
            let run_id = match cfg.session.run {
                RunSource::Grant => grant.as_ref().and_then(|g| g.run.clone()),
                RunSource::Claim => self.run_id(host, l),
                RunSource::Key | RunSource::Principal => None,
            };
            let run = l
                .sessions
                .run_of(host, p, r, self.key.as_deref(), run_id.as_deref());
            self.session = Some(run);
        }
        let intent_claim = cfg
            .identity
            .jwt
            .as_ref()
            .and_then(|j| j.intent_claim.as_deref());
        let claimed = identity::jwt_claim_of(host, &cfg.identity, intent_claim);
        let trusted = grant
            .as_ref()
            .map(|g| (g.intent.clone(), IntentSource::Grant))
            .or(claimed.map(|c| (c, IntentSource::Claim)));
        Ok(Who {
            record,
            grant,
            trusted,
        })
    }

    /// The task grant of the request, verified for its principal against `task_grant_keys`:
    /// `None` when it carries none; refused (403) when it carries one that does not verify, or
    /// when no verified identity could hold it.
    fn verified_grant(&self, host: &dyn Host, l: &Loaded) -> Result<Option<Grant>, Refusal> {
        let Some(token) = self.grant_token.as_deref() else {
            return Ok(None);
        };
        let Some(principal) = self.principal.as_deref() else {
            return Err(Refusal::forbidden(
                "a task grant needs a verified agent identity to belong to",
            ));
        };
        bundle::grant::verify(
            token,
            &l.policy.cfg.task_grant_keys,
            principal,
            host.now_ms() / 1000,
        )
        .map(Some)
        .map_err(|e| Refusal::forbidden(format!("the task grant is refused: {e} ({})", e.as_str())))
    }

    /// The run id the verified JWT names (`identity.jwt.run_claim`): visible ASCII, at most 128
    /// bytes, else none.
    fn run_id(&self, host: &dyn Host, l: &Loaded) -> Option<String> {
        let cfg = &l.policy.cfg;
        let claim = cfg.identity.jwt.as_ref()?.run_claim.as_deref();
        identity::jwt_claim_of(host, &cfg.identity, claim)
            .filter(|v| v.len() <= 128 && v.bytes().all(|b| (0x21..=0x7e).contains(&b)))
    }
}

/// Make `intent` from a trusted `source` the action's declared intent. An agent header that
/// names another one contradicts it: `IntentSource::Conflict`, which the policy never trusts.
pub(super) fn trusted_intent(a: &mut Action, intent: &str, source: IntentSource) {
    let conflict = a.intent_source == IntentSource::Header
        && a.declared_intent.as_deref().is_some_and(|h| h != intent);
    a.declared_intent = Some(intent.to_owned());
    a.intent_source = if conflict {
        IntentSource::Conflict
    } else {
        source
    };
}
