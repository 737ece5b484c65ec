//! In-band approval for MCP 2026-07-28 clients: the request's own capabilities
//! (`_meta["io.modelcontextprotocol/clientCapabilities"]`), the `InputRequiredResult` that carries
//! the URL elicitation, and the filter's `requestState`, which binds the retry to the action it
//! was issued for.
//!
//! `requestState` = `pcl1.` base64url(payload) `.` base64url(HMAC-SHA256(key, payload)), payload
//! the JSON `{"d": <digest hex>, "e": <elicitation id>, "x": <expiry, unix s>}`, key derived from
//! the receipt signing key (`Signer::derive_secret`), so every worker and replica sharing the
//! key reads it. A state with the prefix that does not verify, or that names another action's
//! digest, is refused; one past its expiry is ignored (a new elicitation is sent). A state
//! without the prefix is the server's and is not the filter's to read.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::normalize::JsonRpcId;
use crate::respond::{ApprovalRequest, Denial};

/// What starts a `requestState` the filter issued.
pub(crate) const STATE_PREFIX: &str = "pcl1.";
/// Domain of the MAC key derived from the receipt signing key.
pub(crate) const STATE_KEY_DOMAIN: &[u8] = b"portcullis/request-state/v1";
/// The `inputRequests` key of the approval elicitation.
pub(crate) const INPUT_KEY: &str = "portcullis-approval";
/// The `_meta` key carrying the approval request beside the input requests.
pub(crate) const META_KEY: &str = "dev.portcullis/approval_request";
/// Longest `requestState` read.
const MAX_STATE_BYTES: usize = 1024;

/// The claims of a `requestState`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestState {
    #[serde(rename = "d")]
    pub digest: String,
    #[serde(rename = "e")]
    pub id: String,
    #[serde(rename = "x")]
    pub expires_s: u64,
}

/// HMAC-SHA256 (RFC 2104).
fn hmac(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
    let mut ipad = [0x36u8; 64];
    let mut opad = [0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        if let (Some(a), Some(b)) = (ipad.get_mut(i), opad.get_mut(i)) {
            *a ^= k;
            *b ^= k;
        }
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize()
        .into()
}

/// Seal a state.
pub(crate) fn seal(key: &[u8; 32], st: &RequestState) -> String {
    let payload = serde_json::to_vec(st).unwrap_or_default();
    format!(
        "{STATE_PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(hmac(key, &payload))
    )
}

/// What a request's `requestState` is to the filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Opened {
    /// Not the filter's (no prefix): the server's, passed through.
    NotOurs,
    /// The filter's, verified, not expired.
    Valid(RequestState),
    /// The filter's, verified, expired: ignored.
    Expired,
    /// Claims to be the filter's and does not verify.
    Forged,
}

/// Read a `requestState`.
pub(crate) fn open(key: &[u8; 32], text: &str, now_s: u64) -> Opened {
    let Some(rest) = text.strip_prefix(STATE_PREFIX) else {
        return Opened::NotOurs;
    };
    if text.len() > MAX_STATE_BYTES {
        return Opened::Forged;
    }
    let Some((p, m)) = rest.split_once('.') else {
        return Opened::Forged;
    };
    let (Ok(payload), Ok(mac)) = (URL_SAFE_NO_PAD.decode(p), URL_SAFE_NO_PAD.decode(m)) else {
        return Opened::Forged;
    };
    let want = hmac(key, &payload);
    // Compare every byte (no early exit on the first difference).
    let same = mac.len() == want.len()
        && mac
            .iter()
            .zip(want.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Opened::Forged;
    }
    match serde_json::from_slice::<RequestState>(&payload) {
        Ok(st) if st.expires_s > now_s => Opened::Valid(st),
        Ok(_) => Opened::Expired,
        Err(_) => Opened::Forged,
    }
}

/// What a 2026-07-28 request says about in-band approval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Modern {
    /// `_meta["io.modelcontextprotocol/clientCapabilities"].elicitation.url` is an object.
    pub url: bool,
    /// `params.requestState`, when present.
    pub state: Option<String>,
    /// `params.inputResponses[INPUT_KEY].action`, when present.
    pub response: Option<String>,
}

/// Read a single JSON-RPC request body for in-band approval (2026-07-28). `None` when the
/// request declares no per-request capabilities and carries no `requestState` (an earlier era).
pub(crate) fn modern(body: &[u8]) -> Option<Modern> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let params = v.get("params")?;
    let caps = params
        .get("_meta")
        .and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"));
    let state = params
        .get("requestState")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if caps.is_none() && state.is_none() {
        return None;
    }
    Some(Modern {
        url: caps
            .and_then(|c| c.pointer("/elicitation/url"))
            .is_some_and(Value::is_object),
        state,
        response: params
            .get("inputResponses")
            .and_then(|r| r.get(INPUT_KEY))
            .and_then(|r| r.get("action"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The body without the filter's `requestState` and `inputResponses` (the server never issued
/// them). `None` when the body is not a JSON-RPC object with `params`.
pub(crate) fn strip(body: &[u8]) -> Option<Vec<u8>> {
    let mut v: Value = serde_json::from_slice(body).ok()?;
    let params = v.get_mut("params")?.as_object_mut()?;
    params.remove("requestState");
    params.remove("inputResponses");
    serde_json::to_vec(&v).ok()
}

/// The `InputRequiredResult` answering a STEP_UP: the URL elicitation (unless `state_only`: the
/// client already answered it and the approval is still pending, so it polls) and the state.
pub(crate) fn input_required(
    id: Option<&JsonRpcId>,
    denial: &Denial,
    req: &ApprovalRequest,
    url: &str,
    state: &str,
    state_only: bool,
) -> Value {
    let mut data = denial
        .jsonrpc_error(id)
        .get("error")
        .and_then(|e| e.get("data"))
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(r) = data
        .get_mut("approval_request")
        .and_then(Value::as_object_mut)
    {
        r.insert("url".into(), Value::from(url));
    }
    let mut result = json!({
        "resultType": "input_required",
        "requestState": state,
        "_meta": { META_KEY: data },
    });
    if !state_only && let Some(obj) = result.as_object_mut() {
        obj.insert(
            "inputRequests".into(),
            json!({ INPUT_KEY: {
                "method": "elicitation/create",
                "params": {
                    "mode": "url",
                    "url": url,
                    "message": format!(
                        "A human in group `{}` must approve this action: {}",
                        req.group, req.reason
                    ),
                },
            }}),
        );
    }
    json!({
        "jsonrpc": "2.0",
        "id": id.map_or(Value::Null, JsonRpcId::to_json),
        "result": result,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2_shape() {
        // RFC 4231 test case 2 uses a 4-byte key; ours are 32 bytes, zero-padded the same way.
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(b"Jefe");
        assert_eq!(
            hex::encode(hmac(&key, b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn states_verify_bind_and_expire() {
        let key = [7u8; 32];
        let st = RequestState {
            digest: "ab".repeat(32),
            id: "e".repeat(32),
            expires_s: 100,
        };
        let sealed = seal(&key, &st);
        assert!(sealed.starts_with(STATE_PREFIX));
        assert_eq!(open(&key, &sealed, 99), Opened::Valid(st.clone()));
        assert_eq!(open(&key, &sealed, 100), Opened::Expired);
        assert_eq!(open(&[8u8; 32], &sealed, 99), Opened::Forged, "another key");
        assert_eq!(open(&key, "server-state", 99), Opened::NotOurs);
        // Another action's digest under a forged MAC.
        let other = RequestState {
            digest: "cd".repeat(32),
            ..st
        };
        let (head, _) = seal(&key, &other)
            .rsplit_once('.')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        let (_, mac) = sealed.rsplit_once('.').unwrap();
        assert_eq!(open(&key, &format!("{head}.{mac}"), 99), Opened::Forged);
        for bad in [
            "pcl1.",
            "pcl1.x",
            "pcl1.!!.!!",
            &format!("pcl1.{}", "A".repeat(2000)),
        ] {
            assert_eq!(open(&key, bad, 99), Opened::Forged, "{bad}");
        }
    }

    #[test]
    fn modern_requests_and_strip() {
        let body = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"deploy","arguments":{},"_meta":{"io.modelcontextprotocol/clientCapabilities":{"elicitation":{"url":{}}}},"requestState":"pcl1.a.b","inputResponses":{"portcullis-approval":{"action":"accept"}}}}"#;
        let m = modern(body).unwrap();
        assert!(m.url);
        assert_eq!(m.state.as_deref(), Some("pcl1.a.b"));
        assert_eq!(m.response.as_deref(), Some("accept"));
        let s: Value = serde_json::from_slice(&strip(body).unwrap()).unwrap();
        assert!(s["params"].get("requestState").is_none());
        assert!(s["params"].get("inputResponses").is_none());
        assert_eq!(s["params"]["name"], "deploy");
        assert!(
            modern(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x"}}"#)
                .is_none()
        );
        let no_url = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/clientCapabilities":{}}}}"#;
        assert!(!modern(no_url).unwrap().url);
    }
}
