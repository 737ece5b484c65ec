//! The bundle decoder and verifier: bytes -> [`Program`], with checked reads only.
//!
//! Every read is bounds-checked; every count is checked against [`Limits`] before anything is
//! allocated for it; every string-pool index, matcher index, class index, jump target and tag is
//! checked before the program is returned. Jumps must go forward, so evaluating a condition runs
//! at most as many instructions as it has. Trailing bytes are refused.

use sha2::{Digest, Sha256};

use crate::error::LoadError;
use crate::limits::Limits;
use crate::program::encode::{FLAG_INTENT_HEADER, FLAG_REQUIRE_SESSION_KEY};
use crate::program::format::{
    ArgDef, ClassDef, DecisionDef, EffectDef, FORMAT_VERSION, FieldRef, HEADER_LEN, Instr,
    IntentDef, Jump, Lit, MAGIC, MIN_FORMAT_VERSION, MatcherDef, Pins, Pred, Program, RuleDef,
    ToolDef, ToolPin,
};
use crate::program::wire::{JUMP_ACCEPT, JUMP_REJECT, Wire, op};
use crate::session::Quarantine;
use crate::verdict::{Decision, Defer, Modification, PathSegment, StepUp};

/// The outer structure of a bundle: header, signature block, body.
pub(crate) struct Envelope<'a> {
    /// The 40 header bytes (magic, version, reserved, content hash).
    pub header: &'a [u8],
    /// Signature block: key id and signature.
    pub sig: Option<(String, [u8; 64])>,
    /// The body length field and the body (what follows the signature block).
    pub tail: &'a [u8],
    /// The body.
    pub body: &'a [u8],
    /// The content hash from the header.
    pub hash: [u8; 32],
    /// The format version from the header (one this build reads).
    pub version: u16,
}

fn take<'a>(
    bytes: &'a [u8],
    pos: &mut usize,
    n: usize,
    what: &'static str,
) -> Result<&'a [u8], LoadError> {
    let end = pos.checked_add(n).ok_or(LoadError::Truncated { what })?;
    let s = bytes.get(*pos..end).ok_or(LoadError::Truncated { what })?;
    *pos = end;
    Ok(s)
}

/// Parse the envelope and check the content hash (not the signature).
pub(crate) fn envelope<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Envelope<'a>, LoadError> {
    if bytes.len() > limits.max_bundle_bytes {
        return Err(LoadError::TooLarge {
            what: "the bundle size in bytes",
            found: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
            max: u64::try_from(limits.max_bundle_bytes).unwrap_or(u64::MAX),
        });
    }
    let mut pos = 0usize;
    let magic = take(bytes, &mut pos, 4, "header")?;
    if magic != MAGIC {
        return Err(LoadError::BadMagic);
    }
    let v = take(bytes, &mut pos, 2, "header")?;
    let version = u16::from_le_bytes([*v.first().unwrap_or(&0), *v.get(1).unwrap_or(&0)]);
    if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(LoadError::UnsupportedVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let reserved = take(bytes, &mut pos, 2, "header")?;
    if reserved != [0, 0] {
        return Err(LoadError::invalid("the reserved header bytes are not zero"));
    }
    let hash_bytes = take(bytes, &mut pos, 32, "header")?;
    let mut hash = [0u8; 32];
    hash.copy_from_slice(hash_bytes);
    let header = bytes
        .get(..HEADER_LEN)
        .ok_or(LoadError::Truncated { what: "header" })?;
    let tag = *take(bytes, &mut pos, 1, "signature block")?
        .first()
        .unwrap_or(&0);
    let sig = match tag {
        0 => None,
        1 => {
            let n = *take(bytes, &mut pos, 1, "signature block")?
                .first()
                .unwrap_or(&0);
            let id = take(bytes, &mut pos, usize::from(n), "signature block")?;
            let id = std::str::from_utf8(id)
                .map_err(|_| LoadError::invalid("the signing key id is not text"))?
                .to_owned();
            let s = take(bytes, &mut pos, 64, "signature block")?;
            let mut sig = [0u8; 64];
            sig.copy_from_slice(s);
            Some((id, sig))
        }
        t => {
            return Err(LoadError::invalid(format!(
                "unknown signature block tag {t}"
            )));
        }
    };
    let tail = bytes
        .get(pos..)
        .ok_or(LoadError::Truncated { what: "body" })?;
    let l = take(bytes, &mut pos, 4, "body length")?;
    let body_len = u32::from_le_bytes([
        *l.first().unwrap_or(&0),
        *l.get(1).unwrap_or(&0),
        *l.get(2).unwrap_or(&0),
        *l.get(3).unwrap_or(&0),
    ]);
    let body = take(
        bytes,
        &mut pos,
        usize::try_from(body_len).unwrap_or(usize::MAX),
        "body",
    )?;
    if pos != bytes.len() {
        return Err(LoadError::invalid("trailing bytes after the body"));
    }
    if Sha256::digest(body).as_slice() != hash {
        return Err(LoadError::HashMismatch);
    }
    Ok(Envelope {
        header,
        sig,
        tail,
        body,
        hash,
        version,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The bundle's format version (what the layout of some sections depends on).
    version: u16,
    limits: &'a Limits,
    strings: Vec<String>,
    section: &'static str,
}

fn too_large(what: &'static str, found: u64, max: u64) -> LoadError {
    LoadError::TooLarge { what, found, max }
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], LoadError> {
        take(self.buf, &mut self.pos, n, self.section)
    }
    fn u8(&mut self) -> Result<u8, LoadError> {
        Ok(*self.bytes(1)?.first().unwrap_or(&0))
    }
    fn u16(&mut self) -> Result<u16, LoadError> {
        let b = self.bytes(2)?;
        let mut a = [0u8; 2];
        a.copy_from_slice(b);
        Ok(u16::from_le_bytes(a))
    }
    fn u32(&mut self) -> Result<u32, LoadError> {
        let b = self.bytes(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, LoadError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn f64(&mut self) -> Result<f64, LoadError> {
        Ok(f64::from_bits(self.u64()?))
    }
    fn bool(&mut self) -> Result<bool, LoadError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(LoadError::invalid(format!(
                "{}: bad boolean byte {t}",
                self.section
            ))),
        }
    }
    /// A count, checked against `max` and against the bytes left (each element takes at least
    /// `min_size` bytes), so no allocation is ever larger than the input justifies.
    fn count(&mut self, what: &'static str, max: u32, min_size: usize) -> Result<usize, LoadError> {
        let n = self.u32()?;
        if n > max {
            return Err(too_large(what, u64::from(n), u64::from(max)));
        }
        let n = usize::try_from(n).map_err(|_| too_large(what, u64::from(n), u64::from(max)))?;
        let left = self.buf.len().saturating_sub(self.pos);
        if n.saturating_mul(min_size) > left {
            return Err(LoadError::Truncated { what: self.section });
        }
        Ok(n)
    }
    fn str(&mut self) -> Result<String, LoadError> {
        let i = self.u32()?;
        usize::try_from(i)
            .ok()
            .and_then(|i| self.strings.get(i))
            .cloned()
            .ok_or_else(|| {
                LoadError::invalid(format!(
                    "{}: string index {i} is out of range",
                    self.section
                ))
            })
    }
    fn strs(&mut self, what: &'static str) -> Result<Vec<String>, LoadError> {
        let n = self.count(what, self.limits.max_matcher_elements, 4)?;
        (0..n).map(|_| self.str()).collect()
    }
    fn opt_u32(&mut self) -> Result<Option<u32>, LoadError> {
        Ok(if self.bool()? {
            Some(self.u32()?)
        } else {
            None
        })
    }
    fn opt_u64(&mut self) -> Result<Option<u64>, LoadError> {
        Ok(if self.bool()? {
            Some(self.u64()?)
        } else {
            None
        })
    }
    // Cold: kept out of line, so each of the wire tables' readers does not carry its own copy of
    // the error formatting (that alone was 1.8 KB of the filter's .wasm).
    #[cold]
    fn bad(&self, what: &str, tag: u8) -> LoadError {
        LoadError::invalid(format!("{}: unknown {what} tag {tag}", self.section))
    }
    /// A tag of `T`'s wire table (a value with an empty payload, which the caller reads).
    fn tag<T: Wire>(&mut self) -> Result<T, LoadError> {
        let t = self.u8()?;
        T::from_tag(t).ok_or_else(|| self.bad(T::WHAT, t))
    }

    fn pool(&mut self) -> Result<(), LoadError> {
        self.section = "string pool";
        let n = self.count("the number of strings", self.limits.max_strings, 4)?;
        let mut strings = Vec::with_capacity(n);
        for _ in 0..n {
            let len = self.u32()?;
            if len > self.limits.max_string_bytes {
                return Err(too_large(
                    "a string's length in bytes",
                    u64::from(len),
                    u64::from(self.limits.max_string_bytes),
                ));
            }
            let b = self.bytes(usize::try_from(len).unwrap_or(usize::MAX))?;
            let s = std::str::from_utf8(b)
                .map_err(|_| LoadError::invalid("string pool: a string is not UTF-8"))?;
            strings.push(s.to_owned());
        }
        self.strings = strings;
        Ok(())
    }

    fn path(&mut self) -> Result<Vec<PathSegment>, LoadError> {
        let n = self.count("an argument path's depth", self.limits.max_path_depth, 5)?;
        let mut p = Vec::with_capacity(n);
        for _ in 0..n {
            p.push(match self.tag()? {
                PathSegment::Key(_) => PathSegment::Key(self.str()?),
                PathSegment::Index(_) => PathSegment::Index(self.u32()?),
            });
        }
        Ok(p)
    }

    fn decision(&mut self) -> Result<DecisionDef, LoadError> {
        let decision: Decision = self.tag()?;
        let reason = self.str()?;
        let n = self.count("the number of modifications", self.limits.max_list_items, 1)?;
        let mut modifications = Vec::with_capacity(n);
        for _ in 0..n {
            let m: Modification = self.tag()?;
            modifications.push(match m {
                Modification::RedactArg { .. } => Modification::RedactArg { path: self.path()? },
                Modification::DropArg { .. } => Modification::DropArg { path: self.path()? },
                Modification::ClampArg { .. } => Modification::ClampArg {
                    path: self.path()?,
                    min: self.f64()?,
                    max: self.f64()?,
                },
                Modification::RedactSecrets => Modification::RedactSecrets,
                Modification::StripHeader { .. } => Modification::StripHeader { name: self.str()? },
                Modification::SetHeader { .. } => Modification::SetHeader {
                    name: self.str()?,
                    value: self.str()?,
                },
                Modification::RemoveTools { .. } => Modification::RemoveTools {
                    patterns: self.strs("a remove_tools list")?,
                },
                Modification::CoerceArg { .. } if self.version >= 2 => Modification::CoerceArg {
                    path: self.path()?,
                    value: self.scalar_json()?,
                },
                // Format version 1 has no coerced arguments.
                Modification::CoerceArg { .. } => return Err(self.bad(Modification::WHAT, m.tag())),
                Modification::InjectCredential { .. } if self.version >= 5 => {
                    Modification::InjectCredential { name: self.str()? }
                }
                // Before format version 5 there are no injected credentials.
                Modification::InjectCredential { .. } => {
                    return Err(LoadError::invalid(format!(
                        "{}: modification tag {} (`inject_credential`) needs bundle format version 5",
                        self.section,
                        m.tag()
                    )));
                }
            });
        }
        let step_up = if self.bool()? {
            Some(StepUp {
                group: self.str()?,
                timeout_s: self.u32()?,
            })
        } else {
            None
        };
        let defer = if self.bool()? {
            Some(Defer {
                service: self.str()?,
                timeout_ms: self.u32()?,
            })
        } else {
            None
        };
        if decision == Decision::StepUp && step_up.is_none() {
            return Err(LoadError::invalid(
                "a step_up decision has no approver group",
            ));
        }
        if decision == Decision::Defer && defer.is_none() {
            return Err(LoadError::invalid(
                "a defer decision has no context service",
            ));
        }
        Ok(DecisionDef {
            decision,
            reason,
            modifications,
            step_up,
            defer,
        })
    }

    fn field(&mut self) -> Result<FieldRef, LoadError> {
        Ok(match self.tag()? {
            FieldRef::Header(_) => FieldRef::Header(self.str()?),
            FieldRef::Arg(_) => FieldRef::Arg(self.path()?),
            FieldRef::ToolChanged | FieldRef::ToolShadowed if self.version < 4 => {
                return Err(LoadError::invalid(format!(
                    "{}: the `tool.*` fields need format version 4",
                    self.section
                )));
            }
            f => f,
        })
    }

    fn lit(&mut self) -> Result<Lit, LoadError> {
        Ok(match self.tag()? {
            Lit::Str(_) => Lit::Str(self.str()?),
            Lit::Num(_) => Lit::Num(self.f64()?),
            Lit::Bool(_) => Lit::Bool(self.bool()?),
        })
    }

    fn jump(&mut self, at: usize, len: usize) -> Result<Jump, LoadError> {
        let j = self.u16()?;
        match j {
            JUMP_ACCEPT => Ok(Jump::Accept),
            JUMP_REJECT => Ok(Jump::Reject),
            t => {
                let ti = usize::from(t);
                if ti <= at || ti >= len {
                    return Err(LoadError::invalid(format!(
                        "{}: instruction {at} jumps to {t}, which is not a later instruction",
                        self.section
                    )));
                }
                Ok(Jump::To(t))
            }
        }
    }

    /// Read condition code. `ctx` checks matcher/class references.
    fn code(&mut self, ctx: &CodeCtx<'_>) -> Result<Vec<Instr>, LoadError> {
        let n = self.count(
            "the number of instructions in one condition",
            self.limits.max_instructions_per_rule,
            5,
        )?;
        if n == 0 {
            return Err(LoadError::invalid(format!(
                "{}: a condition has no instructions",
                self.section
            )));
        }
        let mut code = Vec::with_capacity(n);
        for at in 0..n {
            let (opcode, negated) = self.opcode()?;
            let pred = self.pred(ctx, opcode)?;
            let on_true = self.jump(at, n)?;
            let on_false = self.jump(at, n)?;
            code.push(Instr {
                pred,
                negated,
                on_true,
                on_false,
            });
        }
        Ok(code)
    }

    /// A matcher index, which must name a matcher of the same kind as `want`.
    fn matcher_ref(&mut self, ctx: &CodeCtx<'_>, want: &MatcherDef) -> Result<u32, LoadError> {
        let m = self.u32()?;
        let ok = usize::try_from(m)
            .ok()
            .and_then(|i| ctx.matchers.get(i))
            .is_some_and(|def| def.tag() == want.tag());
        if !ok {
            return Err(LoadError::invalid(format!(
                "{}: matcher {m} is out of range or of the wrong kind",
                self.section
            )));
        }
        Ok(m)
    }

    /// A JSON string, number or boolean, stored as its JSON text.
    fn scalar_json(&mut self) -> Result<serde_json::Value, LoadError> {
        let text = self.str()?;
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(
                v @ (serde_json::Value::String(_)
                | serde_json::Value::Number(_)
                | serde_json::Value::Bool(_)),
            ) => Ok(v),
            _ => Err(LoadError::invalid(format!(
                "{}: a coerced value is not a JSON string, number or boolean",
                self.section
            ))),
        }
    }

    /// The opcode byte: in version 2 its [`op::NEGATED`] bit says the instruction is negated.
    fn opcode(&mut self) -> Result<(u8, bool), LoadError> {
        let raw = self.u8()?;
        if self.version >= 2 {
            Ok((raw & !op::NEGATED, raw & op::NEGATED != 0))
        } else {
            Ok((raw, false))
        }
    }

    fn pred(&mut self, ctx: &CodeCtx<'_>, opcode: u8) -> Result<Pred, LoadError> {
        Ok(match opcode {
            op::CONST => Pred::Const(self.bool()?),
            op::CMP => Pred::Cmp(self.field()?, self.tag()?, self.lit()?),
            op::IN => Pred::In(self.field()?, self.matcher_ref(ctx, &SET)?),
            op::GLOB => Pred::Glob(self.field()?, self.matcher_ref(ctx, &GLOBS)?),
            op::PREFIX => Pred::Prefix(self.field()?, self.matcher_ref(ctx, &PREFIXES)?),
            op::MATCHES => Pred::Matches(self.field()?, self.matcher_ref(ctx, &REGEX)?),
            op::IS => Pred::Is(self.field()?, self.tag()?),
            op::PRESENT => Pred::Present(self.field()?),
            op::LEN => Pred::Len(self.field()?, self.tag()?, self.f64()?),
            op::CONTAINS => Pred::Contains(self.field()?, self.str()?),
            op::IN_CLASS => {
                let c = self.u32()?;
                if !ctx.in_rule || usize::try_from(c).map_or(true, |c| c >= ctx.classes) {
                    return Err(LoadError::invalid(format!(
                        "{}: class reference {c} is out of range (or used inside a class)",
                        self.section
                    )));
                }
                Pred::InClass(c)
            }
            op::TAINTED => Pred::Tainted(self.u64()?),
            op::USED => Pred::Used(self.u64()?),
            op::SEEN => Pred::Seen(self.u64()?),
            op::COUNT_SUBJECT => {
                Pred::CountSubject(self.u64()?, self.u64()?, self.tag()?, self.u32()?)
            }
            op::COUNT_CLASS => Pred::CountClass(self.u64()?, self.u64()?, self.tag()?, self.u32()?),
            op::OUTSIDE_INTENT => {
                if !ctx.in_rule {
                    return Err(LoadError::invalid(format!(
                        "{}: `intent.outside` is used inside a class",
                        self.section
                    )));
                }
                Pred::OutsideIntent
            }
            op::PRINCIPAL_TAINTED if self.version >= 3 => Pred::PrincipalTainted(self.u64()?),
            op::QUARANTINED if self.version >= 3 => Pred::Quarantined,
            t => return Err(self.bad("opcode", t)),
        })
    }

    fn matcher(&mut self, total_regex: &mut u64) -> Result<MatcherDef, LoadError> {
        Ok(match self.tag()? {
            MatcherDef::Set { .. } => {
                let strs = self.strs("a set's size")?;
                if strs.windows(2).any(|w| w.first() >= w.get(1)) {
                    return Err(LoadError::invalid("a string set is not sorted and unique"));
                }
                let n = self.count("a set's size", self.limits.max_matcher_elements, 8)?;
                let nums = (0..n).map(|_| self.f64()).collect::<Result<Vec<_>, _>>()?;
                let n = self.count("a set's size", 2, 1)?;
                let bools = (0..n).map(|_| self.bool()).collect::<Result<Vec<_>, _>>()?;
                MatcherDef::Set { strs, nums, bools }
            }
            MatcherDef::Globs(_) => MatcherDef::Globs(self.strs("a glob list's size")?),
            MatcherDef::Prefixes(_) => MatcherDef::Prefixes(self.strs("a prefix list's size")?),
            MatcherDef::Regex { .. } => {
                let pattern = self.str()?;
                let n = self.count(
                    "a regex automaton's size in bytes",
                    self.limits.max_regex_bytes,
                    1,
                )?;
                *total_regex = total_regex.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
                if *total_regex > self.limits.max_total_regex_bytes {
                    return Err(too_large(
                        "the total size of regex automata in bytes",
                        *total_regex,
                        self.limits.max_total_regex_bytes,
                    ));
                }
                let dfa = self.bytes(n)?.to_vec();
                MatcherDef::Regex { pattern, dfa }
            }
        })
    }
}

struct CodeCtx<'a> {
    matchers: &'a [MatcherDef],
    classes: usize,
    in_rule: bool,
}

/// Templates of the four matcher kinds (what an instruction's matcher index must name).
const SET: MatcherDef = MatcherDef::Set {
    strs: Vec::new(),
    nums: Vec::new(),
    bools: Vec::new(),
};
const GLOBS: MatcherDef = MatcherDef::Globs(Vec::new());
const PREFIXES: MatcherDef = MatcherDef::Prefixes(Vec::new());
const REGEX: MatcherDef = MatcherDef::Regex {
    pattern: String::new(),
    dfa: Vec::new(),
};

/// Decode and verify the body of a bundle of format `version` (one this build reads).
pub(crate) fn body(body: &[u8], limits: &Limits, format: u16) -> Result<Program, LoadError> {
    let mut r = Reader {
        buf: body,
        pos: 0,
        version: format,
        limits,
        strings: Vec::new(),
        section: "body",
    };
    r.pool()?;
    r.section = "pack header";
    let pack = r.str()?;
    let version = r.str()?;
    let mode = r.tag()?;
    let default = r.decision()?;
    let unknown_session = r.decision()?;
    // Any list version is accepted: its members are in the class's code, so the VM never needs
    // the list itself (a newer compiler's list runs on this build unchanged).
    let mcp_protocol = match format {
        1 => None,
        _ => match r.u16()? {
            0 => None,
            v => Some(v),
        },
    };
    let flags = if format >= 3 { r.u8()? } else { 0 };
    if flags & !(FLAG_INTENT_HEADER | FLAG_REQUIRE_SESSION_KEY) != 0 {
        return Err(LoadError::invalid(format!(
            "pack header: unknown pack flags {flags:#04x}"
        )));
    }

    r.section = "matchers";
    let n = r.count("the number of matchers", limits.max_matchers, 1)?;
    let mut matchers = Vec::with_capacity(n);
    let mut total_regex = 0u64;
    for _ in 0..n {
        matchers.push(r.matcher(&mut total_regex)?);
    }

    r.section = "classes";
    let n = r.count("the number of classes", limits.max_classes, 7)?;
    let mut classes = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str()?;
        let risk = r.tag()?;
        let readonly = r.bool()?;
        let ctx = CodeCtx {
            matchers: &matchers,
            classes: 0,
            in_rule: false,
        };
        let code = r.code(&ctx)?;
        classes.push(ClassDef {
            name,
            risk,
            readonly,
            code,
        });
    }

    r.section = "intents";
    let n = r.count("the number of intents", limits.max_intents, 8)?;
    let mut intents = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str()?;
        let k = r.count("an intent's class list", limits.max_matcher_elements, 4)?;
        let mut cls = Vec::with_capacity(k);
        for _ in 0..k {
            let c = r.u32()?;
            if usize::try_from(c).map_or(true, |c| c >= classes.len()) {
                return Err(LoadError::invalid(format!(
                    "intents: class index {c} is out of range"
                )));
            }
            cls.push(c);
        }
        let tools = r.strs("an intent's tool list")?;
        let hosts = r.strs("an intent's host list")?;
        let data = r.strs("an intent's data list")?;
        let max_actions = r.opt_u32()?;
        let max_egress_bytes = r.opt_u64()?;
        let max_duration_ms = r.opt_u64()?;
        let max_approvals = r.opt_u32()?;
        let outside = r.decision()?;
        intents.push(IntentDef {
            name,
            classes: cls,
            tools,
            hosts,
            data,
            max_actions,
            max_egress_bytes,
            max_duration_ms,
            max_approvals,
            outside,
        });
    }

    r.section = "rules";
    let n = r.count("the number of rules", limits.max_rules, 8)?;
    let mut rules = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str()?;
        let mode = r.tag()?;
        let decision = r.decision()?;
        let k = r.count("the number of effects in a rule", limits.max_list_items, 1)?;
        let mut effects = Vec::with_capacity(k);
        for _ in 0..k {
            effects.push(match r.tag()? {
                EffectDef::Taint(_) => EffectDef::Taint(r.str()?),
                EffectDef::RevokeTool(_) => {
                    EffectDef::RevokeTool(if r.bool()? { Some(r.str()?) } else { None })
                }
                EffectDef::RevokeClass(_) => EffectDef::RevokeClass(r.str()?),
                EffectDef::RevokePrincipalTool(_) if format >= 3 => {
                    EffectDef::RevokePrincipalTool(if r.bool()? { Some(r.str()?) } else { None })
                }
                EffectDef::RevokePrincipalClass(_) if format >= 3 => {
                    EffectDef::RevokePrincipalClass(r.str()?)
                }
                EffectDef::RevokePrincipalTool(_) | EffectDef::RevokePrincipalClass(_) => {
                    return Err(LoadError::invalid(
                        "rules: a principal-wide revocation needs format version 3",
                    ));
                }
                e @ (EffectDef::ReadOnly | EffectDef::Kill) => e,
                EffectDef::Quarantine(_) if format >= 3 => EffectDef::Quarantine(match r.u8()? {
                    1 => Quarantine::ReadOnly,
                    2 => Quarantine::Full,
                    b => {
                        return Err(LoadError::invalid(format!(
                            "rules: unknown quarantine extent {b}"
                        )));
                    }
                }),
                EffectDef::Quarantine(_) => {
                    return Err(LoadError::invalid(
                        "rules: a `quarantine` effect needs format version 3",
                    ));
                }
            });
        }
        let kind = r.tag()?;
        let operations = r.strs("a rule's pinned operations")?;
        let tools = r.strs("a rule's pinned tools")?;
        let hosts = r.strs("a rule's pinned hosts")?;
        let ctx = CodeCtx {
            matchers: &matchers,
            classes: classes.len(),
            in_rule: true,
        };
        let code = r.code(&ctx)?;
        rules.push(RuleDef {
            name,
            mode,
            decision,
            effects,
            pins: Pins {
                kind,
                operations,
                tools,
                hosts,
            },
            code,
        });
    }
    let tools = if format >= 2 {
        r.section = "tools";
        tools(&mut r, limits)?
    } else {
        Vec::new()
    };
    // Version 4: the tool pins, an optional last section.
    let tool_pins = if format >= 4 && r.pos < body.len() {
        r.section = "tool pins";
        tool_pins(&mut r, limits)?
    } else {
        Vec::new()
    };
    if r.pos != body.len() {
        return Err(LoadError::invalid(match format {
            1 => "trailing bytes after the last rule",
            2 | 3 => "trailing bytes after the last tool declaration",
            _ => "trailing bytes after the last tool pin",
        }));
    }
    Ok(Program {
        pack,
        version,
        mode,
        default,
        unknown_session,
        mcp_protocol,
        intent_header: flags & FLAG_INTENT_HEADER != 0,
        require_session_key: flags & FLAG_REQUIRE_SESSION_KEY != 0,
        matchers,
        classes,
        intents,
        rules,
        tools,
        tool_pins,
    })
}

/// The tool pins (version 4): at least one (an empty section is not written), sorted by
/// (server, name) and unique, so the filter finds a pin by binary search and never has two.
fn tool_pins(r: &mut Reader<'_>, limits: &Limits) -> Result<Vec<ToolPin>, LoadError> {
    let n = r.count("the number of tool pins", limits.max_tool_pins, 40)?;
    if n == 0 {
        return Err(LoadError::invalid(
            "tool pins: an empty section (a bundle without pins has none)",
        ));
    }
    let mut pins: Vec<ToolPin> = Vec::with_capacity(n);
    for _ in 0..n {
        let server = r.str()?;
        let name = r.str()?;
        let digest = <[u8; 32]>::try_from(r.bytes(32)?)
            .map_err(|_| LoadError::Truncated { what: "tool pins" })?;
        if pins
            .last()
            .is_some_and(|p| (p.server.as_str(), p.name.as_str()) >= (&server, &name))
        {
            return Err(LoadError::invalid(
                "tool pins: the pins are not sorted by server and tool name and unique",
            ));
        }
        pins.push(ToolPin {
            server,
            name,
            digest,
        });
    }
    Ok(pins)
}

/// The tool declarations (version 2): sorted by name and unique, so the VM finds a tool's
/// declaration by binary search and never has two to choose from.
fn tools(r: &mut Reader<'_>, limits: &Limits) -> Result<Vec<ToolDef>, LoadError> {
    let n = r.count("the number of tool declarations", limits.max_tools, 8)?;
    let mut tools: Vec<ToolDef> = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str()?;
        if tools.last().is_some_and(|prev| prev.name >= name) {
            return Err(LoadError::invalid(
                "tools: the declarations are not sorted by tool name and unique",
            ));
        }
        let k = r.count(
            "the number of arguments of one tool",
            limits.max_tool_args,
            6,
        )?;
        let mut args = Vec::with_capacity(k);
        for _ in 0..k {
            let depth = r.count("an argument path's depth", limits.max_path_depth, 4)?;
            let path = (0..depth).map(|_| r.str()).collect::<Result<Vec<_>, _>>()?;
            let ty = r.tag()?;
            let coerce = r.bool()?;
            args.push(ArgDef { path, ty, coerce });
        }
        tools.push(ToolDef { name, args });
    }
    Ok(tools)
}
