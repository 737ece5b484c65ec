//! `inject credential` on a stream: after a MODIFY that injects a credential, the request waits
//! for an RFC 8693 token exchange at the operator's STS (an Envoy call-out, as a DEFER waits for
//! its context service), unless the cache holds one. The request then goes on with the minted
//! credential in the configured header, recorded by a signed `credential` receipt (its id,
//! audience and scope; never the token). No verified subject token, a call-out that cannot be
//! sent, no answer in time, another status or a bad answer: DENY by `filter:credential`.

use bundle::action::Action;
use bundle::receipt::{CredentialRecord, Receipt};
use bundle::verdict::{Decision, Verdict};

use super::outputs::{receipt_extra, receipts_out, set_state};
use super::{Forward, Phase, Stream};
use crate::config::FailureMode;
use crate::config::credentials::Definition;
use crate::credentials::{self, cache, exchange};
use crate::decide::{self, MsgResult, Shape};
use crate::host::{FilterAction, Host, LogLevel};
use crate::limits::MAX_STS_ANSWER_BYTES;
use crate::metrics::Metric;
use crate::normalize::{JsonRpcId, McpMessageKind};
use crate::respond::Denial;
use crate::results::Inspector;
use crate::root::Loaded;
use crate::rules::FilterRule;

/// What a forwarded request with an injected credential carries once the credential is there:
/// the decision's receipts and headers, and the response inspector.
#[derive(Debug)]
pub(super) struct Held {
    pub decision: Decision,
    pub rule: String,
    pub chain_name: String,
    /// The decision's receipts (and their JSON lines), the credential receipt is added to.
    pub receipts: Vec<(Receipt, String)>,
    pub warnings: Vec<String>,
    pub inspector: Option<Inspector>,
}

/// A credential being minted.
#[derive(Debug)]
pub(super) struct Minting {
    /// The call-out's token (0 before it is sent).
    token: u32,
    name: String,
    key: cache::CacheKey,
    audience: String,
    scope: String,
    action: Action,
    verdict: Verdict,
    id: Option<JsonRpcId>,
    answer_with_jsonrpc: bool,
    held: Held,
}

impl Minting {
    /// Whether the call-out `token` is this one's.
    pub(super) fn is(&self, token: u32) -> bool {
        self.token != 0 && self.token == token
    }
}

impl Stream {
    /// Inject the credential `m` names into the request `action` is: from the cache, or after an
    /// exchange at its STS (the stream then waits: `Pause`). `Continue` when the request goes on
    /// now; `Pause` when it waits or was denied.
    pub(super) fn start_credential(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        shape: &Shape,
        m: &MsgResult,
        action: &Action,
        held: Held,
    ) -> FilterAction {
        let (id, answer_with_jsonrpc) = match shape {
            Shape::Mcp { msgs, .. } => match msgs.first() {
                Some((id, McpMessageKind::Request)) => (id.clone(), true),
                _ => (None, false),
            },
            _ => (None, false),
        };
        let cfg = &l.policy.cfg;
        let name = m.credential.clone().unwrap_or_default();
        let mut minting = Minting {
            token: 0,
            key: cache::CacheKey::new(&name, "", "", ""),
            name,
            audience: String::new(),
            scope: String::new(),
            action: action.clone(),
            verdict: m.verdict.clone(),
            id,
            answer_with_jsonrpc,
            held,
        };
        let Some(def) = cfg.credentials.definitions.get(&minting.name) else {
            let why = format!("credential `{}` is not configured", minting.name);
            return self.credential_failed(host, l, minting, &why);
        };
        minting.audience = credentials::audience_of(def, action).to_owned();
        minting.scope = credentials::access_of(action, &m.verdict, &l.policy)
            .scope(def)
            .to_owned();
        let subject = match credentials::subject_token(host, &cfg.identity, &self.head.headers) {
            Ok(t) => t,
            Err(why) => {
                let why = format!("credential `{}` cannot be minted: {why}", minting.name);
                return self.credential_failed(host, l, minting, &why);
            }
        };
        // Per principal; a subject without one is its own principal.
        let principal = self.principal.clone().unwrap_or_else(|| {
            use sha2::{Digest, Sha256};
            format!("jwt:{}", hex::encode(Sha256::digest(subject.as_bytes())))
        });
        minting.key =
            cache::CacheKey::new(&minting.name, &principal, &minting.audience, &minting.scope);
        if let Some(e) = cache::get(host, &minting.key, host.now_ms()) {
            self.credential_ready(host, l, minting, def, &e.token, &e.scope, true);
            return if self.phase == Phase::Forwarded {
                FilterAction::Continue
            } else {
                FilterAction::Pause
            };
        }
        let body = exchange::request_body(&subject, &minting.audience, &minting.scope);
        let headers = [
            (":method", "POST"),
            (":path", def.sts.path.as_str()),
            (":authority", def.sts.authority.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
            ("accept", "application/json"),
        ];
        match host.dispatch_http_call(
            &def.sts.cluster,
            &headers,
            &body,
            u64::from(def.sts.timeout_ms),
        ) {
            Ok(token) => {
                minting.token = token;
                self.minting = Some(minting);
                self.phase = Phase::Waiting;
                FilterAction::Pause
            }
            Err(e) => {
                host.log(
                    LogLevel::Error,
                    &format!(
                        "portcullis: cannot call the STS `{}`: {}",
                        def.sts.cluster, e.0
                    ),
                );
                self.plugin.metrics.count(host, Metric::Errors);
                let why = format!(
                    "credential `{}` cannot be minted: the STS could not be called",
                    minting.name
                );
                self.credential_failed(host, l, minting, &why)
            }
        }
    }

    /// The STS answered (or did not: no headers).
    pub(super) fn credential_answered(&mut self, host: &dyn Host, l: &Loaded, body_size: usize) {
        let Some(minting) = self.minting.take() else {
            return;
        };
        let headers = host.http_call_response_headers();
        let answer = if headers.is_empty() {
            Err("the STS did not answer in time".to_owned())
        } else if body_size > MAX_STS_ANSWER_BYTES {
            Err(format!(
                "the STS answer is longer than {MAX_STS_ANSWER_BYTES} bytes"
            ))
        } else {
            let status = super::pseudo(&headers, ":status");
            let body = if body_size > 0 {
                host.http_call_response_body(body_size).unwrap_or_default()
            } else {
                Vec::new()
            };
            exchange::read_answer(&status, &body, &minting.scope)
        };
        let Some(def) = l.policy.cfg.credentials.definitions.get(&minting.name) else {
            let why = format!("credential `{}` is not configured", minting.name);
            self.credential_failed(host, l, minting, &why);
            return;
        };
        match answer {
            Ok(minted) => {
                if let Some(expires_in) = minted.expires_in {
                    cache::put(
                        host,
                        &minting.key,
                        host.now_ms(),
                        expires_in,
                        l.policy.cfg.credentials.skew_s,
                        &minted.token,
                        &minted.scope,
                    );
                }
                self.credential_ready(host, l, minting, def, &minted.token, &minted.scope, false);
                if self.phase == Phase::Forwarded {
                    host.resume_request();
                }
            }
            Err(why) => {
                let why = format!("credential `{}` cannot be minted: {why}", minting.name);
                self.credential_failed(host, l, minting, &why);
            }
        }
    }

    /// The credential is there: seal its receipt, set its header, forward the request.
    #[expect(
        clippy::too_many_arguments,
        reason = "the minting, its definition and the three facts of the token"
    )]
    fn credential_ready(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        minting: Minting,
        def: &Definition,
        token: &str,
        scope: &str,
        cached: bool,
    ) {
        let record = CredentialRecord {
            audience: minting.audience.clone(),
            cached,
            id: credentials::credential_id(token),
            name: minting.name.clone(),
            scope: scope.to_owned(),
        };
        let d = decide::Deferred {
            chain_name: &minting.held.chain_name,
            session: self.session.as_deref(),
            action: &minting.action,
            verdict: &minting.verdict,
        };
        let sealed = decide::seal_credential(host, &l.policy, &l.sessions, &d, Ok(record.clone()));
        if sealed.is_none() && l.policy.cfg.failure_mode == FailureMode::Closed {
            let why = "the credential receipt could not be saved".to_owned();
            self.credential_failed(host, l, minting, &why);
            return;
        }
        host.log(
            LogLevel::Info,
            &format!(
                "portcullis: credential `{}` {} for `{}` scope `{}` id `{}` session `{}`",
                record.name,
                if cached { "from the cache" } else { "minted" },
                record.audience,
                record.scope,
                record.id,
                minting.held.chain_name
            ),
        );
        let used = if cached {
            Metric::CredentialsCached
        } else {
            Metric::CredentialsMinted
        };
        self.plugin.metrics.count(host, used);
        let mut receipts = minting.held.receipts;
        if let Some(r) = sealed {
            let line = r.to_json();
            receipts.push((r, line));
        }
        let refs: Vec<(&Receipt, &str)> = receipts.iter().map(|(r, s)| (r, s.as_str())).collect();
        let (json, header) = receipts_out(&refs, l.policy.cfg.receipts.header);
        // Whatever the agent or a rule put there, the header holds the minted credential only.
        host.set_request_header(&def.header, None);
        let value = format!("{}{token}{}", def.prefix, def.suffix);
        host.set_request_header(&def.header, Some(&value));
        self.forward(
            host,
            Forward {
                decision: minting.held.decision,
                rule: &minting.held.rule,
                chain_name: &minting.held.chain_name,
                json,
                receipt_header: header,
                warnings: &minting.held.warnings,
                inspector: minting.held.inspector,
            },
        );
    }

    /// The credential cannot be had: DENY by `filter:credential` with a signed receipt.
    fn credential_failed(
        &mut self,
        host: &dyn Host,
        l: &Loaded,
        minting: Minting,
        why: &str,
    ) -> FilterAction {
        let d = decide::Deferred {
            chain_name: &minting.held.chain_name,
            session: self.session.as_deref(),
            action: &minting.action,
            verdict: &minting.verdict,
        };
        let sealed = decide::seal_credential(host, &l.policy, &l.sessions, &d, Err(why));
        host.log(
            LogLevel::Warn,
            &format!(
                "portcullis: DENY `{}` session `{}` rule `{}`: {why}",
                minting.action.subject(),
                minting.held.chain_name,
                FilterRule::Credential.as_str()
            ),
        );
        let mut receipts = minting.held.receipts;
        let receipt_id = sealed.as_ref().map(|r| bundle::receipt::hash_hex(&r.hash));
        if let Some(r) = sealed {
            let line = r.to_json();
            receipts.push((r, line));
        }
        let refs: Vec<(&Receipt, &str)> = receipts.iter().map(|(r, s)| (r, s.as_str())).collect();
        let (json, header) = receipts_out(&refs, l.policy.cfg.receipts.header);
        let rule = FilterRule::Credential.as_str();
        set_state(
            host,
            Decision::Deny.as_str(),
            rule,
            &minting.held.chain_name,
            json.as_deref(),
        );
        self.plugin.metrics.count(host, Metric::Deny);
        self.plugin.metrics.count(host, Metric::CredentialsFailed);
        let denial = Denial::deny(rule, why, receipt_id);
        let extra = receipt_extra(&header);
        self.answer(
            host,
            &denial,
            minting.id.as_ref(),
            minting.answer_with_jsonrpc,
            &extra,
        );
        self.phase = Phase::Answered;
        FilterAction::Pause
    }
}
