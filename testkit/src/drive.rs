//! The one scenario runner: drives a [`FilterUnderTest`] through a scenario's steps in the order
//! `testdata/scenarios/README.md` gives, and checks each step's expectation.

use serde_json::Value;

use crate::check::check;
use crate::filter::{Failure, FilterUnderTest, Observed, Setup};
use crate::fixtures;
use crate::format::{Approval, Property, Scenario, Step};

/// Runs every step of `sc` on the filter `start` returns for it; the error names the first step
/// that failed (`step {i} `{name}`: ...`) with that step's log.
pub fn run_scenario<F: FilterUnderTest>(
    sc: &Scenario,
    start: impl FnOnce(&Setup) -> Result<F, Failure>,
) -> Result<(), Failure> {
    run_with(sc, Setup::for_scenario(sc)?, start)
}

/// Runs `sc` on the filter `start` returns for `setup`.
pub fn run_with<F: FilterUnderTest>(
    sc: &Scenario,
    setup: Setup,
    start: impl FnOnce(&Setup) -> Result<F, Failure>,
) -> Result<(), Failure> {
    let mut run = Run {
        filter: start(&setup).map_err(|e| format!("plugin start: {e}"))?,
        file_props: sc.properties.clone().unwrap_or_default(),
        last_digest: None,
    };
    for (i, step) in sc.steps.iter().enumerate() {
        let at = |e: String| format!("step {i} `{}`: {e}", step.label());
        let observed = run.step(i, step).map_err(at)?;
        let mut fails = observed
            .host_errors
            .iter()
            .map(|e| format!("host misuse: {e}"))
            .collect::<Vec<_>>();
        if let Some(expect) = &step.expect {
            fails.extend(check(expect, &observed));
        }
        if !fails.is_empty() {
            let logs: Vec<String> = observed
                .logs
                .iter()
                .map(|l| format!("[{}] {}", l.level, l.message))
                .collect();
            return Err(at(format!(
                "\n  {}\n  logs of this step:\n    {}",
                fails.join("\n  "),
                logs.join("\n    ")
            )));
        }
    }
    Ok(())
}

struct Run<F> {
    filter: F,
    file_props: Vec<Property>,
    /// `approval_request.digest` of the most recent local response that carried one.
    last_digest: Option<String>,
}

impl<F: FilterUnderTest> Run<F> {
    fn step(&mut self, index: usize, step: &Step) -> Result<Observed, Failure> {
        let f = &mut self.filter;
        f.begin_step();
        if let Some(ms) = step.advance_ms {
            f.advance_ms(ms);
        }
        if step.tick == Some(true) {
            f.tick()?;
        }
        let Some(req) = &step.request else {
            return Ok(self.filter.observe());
        };
        let mut headers = req.headers.clone();
        if let Some(a) = &req.approval {
            let token = self.token(index, a)?;
            headers.push(("x-portcullis-approval".to_owned(), token));
        }
        let f = &mut self.filter;
        let mut props = self.file_props.clone();
        props.extend(step.properties.iter().flatten().cloned());
        let body = body_bytes(req.body.as_ref(), req.body_text.as_deref())?;
        let trailers = req.trailers.as_ref();
        f.request_headers(&headers, &props, body.is_none() && trailers.is_none())?;
        if let Some(body) = &body {
            let chunks = chunks(body, req.chunks.unwrap_or(1));
            let last = chunks.len().saturating_sub(1);
            for (i, chunk) in chunks.iter().enumerate() {
                if f.replied() {
                    break;
                }
                f.request_body(chunk, i == last && trailers.is_none())
                    .map_err(|e| format!("request body (chunk {i}): {e}"))?;
            }
        }
        if let Some(t) = trailers
            && !f.replied()
        {
            f.request_trailers(t)?;
        }
        if let Some(answer) = &step.http_call_response {
            f.answer_call(answer)?;
        }
        if let Some(resp) = &step.response
            && f.forwarded()
        {
            let rbody = body_bytes(resp.body.as_ref(), resp.body_text.as_deref())?;
            let rtrailers = resp.trailers.as_ref();
            f.response_headers(&resp.headers, rbody.is_none() && rtrailers.is_none())?;
            if let Some(b) = &rbody
                && !f.replied()
            {
                f.response_body(b, rtrailers.is_none())?;
            }
            if let Some(t) = rtrailers
                && !f.replied()
            {
                f.response_trailers(t)?;
            }
        }
        let observed = f.observe();
        if let Some(d) = observed
            .local_response
            .as_ref()
            .and_then(|l| approval_digest(&l.body))
        {
            self.last_digest = Some(d);
        }
        Ok(observed)
    }

    /// The `x-portcullis-approval` header value the step asks for.
    fn token(&self, index: usize, a: &Approval) -> Result<String, Failure> {
        if let Some(raw) = &a.raw {
            return Ok(raw.clone());
        }
        let digest_hex = match a.digest.as_deref().unwrap_or("previous") {
            "previous" => self
                .last_digest
                .clone()
                .ok_or("approval digest `previous`, but no earlier step asked for approval")?,
            d => d.to_owned(),
        };
        let digest: [u8; 32] = hex::decode(&digest_hex)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| format!("approval digest `{digest_hex}` is not 64 hex digits"))?;
        let seed = match a.signer.as_deref().unwrap_or("approver") {
            "approver" => fixtures::APPROVER_KEY_SEED,
            "stranger" => fixtures::STRANGER_KEY_SEED,
            other => return Err(format!("unknown approval signer `{other}`")),
        };
        let now_s = i64::try_from(self.filter.now_ms() / 1000).unwrap_or(i64::MAX);
        let issued = now_s.saturating_add(a.issued_offset_s.unwrap_or(0));
        let nonce = a
            .nonce
            .unwrap_or_else(|| u8::try_from(index).unwrap_or(u8::MAX));
        Ok(bundle::approval::mint(
            &digest,
            a.group.as_deref().unwrap_or("release-managers"),
            &fixtures::key(seed),
            u64::try_from(issued).unwrap_or(0),
            u32::try_from(a.ttl_s.unwrap_or(300)).unwrap_or(u32::MAX),
            [nonce; 16],
        ))
    }
}

/// `body` serialized compactly, else `text` as UTF-8, else no body.
pub fn body_bytes(body: Option<&Value>, text: Option<&str>) -> Result<Option<Vec<u8>>, Failure> {
    match (body, text) {
        (Some(b), _) => serde_json::to_vec(b).map(Some).map_err(|e| e.to_string()),
        (None, Some(t)) => Ok(Some(t.as_bytes().to_vec())),
        (None, None) => Ok(None),
    }
}

/// `body` in `n` (at least 1) pieces of equal length, the last taking the remainder; an empty
/// body is one empty piece.
fn chunks(body: &[u8], n: u64) -> Vec<&[u8]> {
    let n = usize::try_from(n.max(1)).unwrap_or(usize::MAX);
    let size = body.len().div_ceil(n).max(1);
    if body.is_empty() {
        vec![body]
    } else {
        body.chunks(size).collect()
    }
}

/// `error.data.approval_request.digest` of a JSON-RPC error, or `approval_request.digest` of an
/// HTTP 428 body.
fn approval_digest(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.pointer("/error/data/approval_request/digest")
        .or_else(|| v.pointer("/approval_request/digest"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Runs every scenario of the corpus (only the one named by the `SCENARIO` environment
/// variable, when set) and returns how many ran; the error lists every failed file.
pub fn run_corpus<F: FilterUnderTest>(
    start: impl Fn(&Setup) -> Result<F, Failure>,
) -> Result<usize, Failure> {
    let only = std::env::var("SCENARIO").ok();
    let files = crate::corpus::scenario_files();
    if files.len() < 12 {
        return Err(format!(
            "expected at least 12 scenarios, found {}",
            files.len()
        ));
    }
    let mut failures = Vec::new();
    let mut ran = 0_usize;
    for f in &files {
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned());
        if only.is_some() && only != stem {
            continue;
        }
        ran = ran.saturating_add(1);
        if let Err(e) = crate::corpus::load(f).and_then(|sc| run_scenario(&sc, &start)) {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    if ran == 0 {
        return Err(format!("no scenario matched SCENARIO={only:?}"));
    }
    if !failures.is_empty() {
        return Err(format!(
            "{} of {ran} scenarios failed:\n\n{}",
            failures.len(),
            failures.join("\n\n")
        ));
    }
    Ok(ran)
}

/// Every step that ends a stream with trailers must assert something only a filter that handles
/// trailers gets right: run on a filter without its trailers callbacks (the stream then goes on
/// undecided), the scenario up to that step (earlier streams ending without trailers) must fail
/// at that step. Returns how many steps were tried; the error lists the steps that passed anyway.
pub fn trailers_guard<F: FilterUnderTest>(
    start: impl Fn(&Setup) -> Result<F, Failure>,
) -> Result<usize, Failure> {
    let mut checked = 0_usize;
    let mut passed_anyway = Vec::new();
    for (path, sc) in crate::corpus::corpus()? {
        for (i, step) in sc.steps.iter().enumerate() {
            if !step.ends_with_trailers() {
                continue;
            }
            checked = checked.saturating_add(1);
            let upto = sc.up_to_with_trailers_only_last(i.saturating_add(1));
            let mut setup = Setup::for_scenario(&upto)?;
            setup.trailers_callbacks = false;
            match run_with(&upto, setup, &start) {
                Err(e) if e.starts_with(&format!("step {i} ")) => {}
                other => passed_anyway.push(format!(
                    "{} step {i} `{}`: {other:?}",
                    path.display(),
                    step.label()
                )),
            }
        }
    }
    if passed_anyway.is_empty() {
        Ok(checked)
    } else {
        Err(format!(
            "these steps do not fail when the filter ignores trailers:\n{}",
            passed_anyway.join("\n")
        ))
    }
}
