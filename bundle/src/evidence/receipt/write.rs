//! The canonical JSON of a version 2 receipt body, written by hand.
//!
//! A version 2 body leaves every empty member out and holds only strings, integers, booleans and
//! lists or objects of those, so its canonical form is a fixed walk: each object's members in
//! byte order of their names (the order below), each string through [`canonical::write_string`].
//! This replaces `serde_json`'s serializer on the request path, where every receipt is written
//! once to be hashed. `hand_writer_matches_generic_canonical_form` checks it against the generic
//! canonicalization (serialize to a value, sort, write) for bodies with every member set, none
//! set, and each one alone.

use crate::evidence::canonical;

use super::{
    ApprovalRef, BundleRef, CredentialRecord, LayerRecord, MatchedRule, ReceiptAction, ReceiptBody,
    ReceiptIdentity, ReceiptPrincipal, ReceiptTarget,
};

/// An object being written: members go in the order they are given, so callers give them in
/// byte order of their names. Names are ASCII without escapes (field names of the structs).
struct Object<'o> {
    out: &'o mut String,
    empty: bool,
}

impl<'o> Object<'o> {
    fn open(out: &'o mut String) -> Self {
        out.push('{');
        Object { out, empty: true }
    }

    /// Start member `name` and hand back the output for its value.
    fn member(&mut self, name: &str) -> &mut String {
        if !self.empty {
            self.out.push(',');
        }
        self.empty = false;
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
        self.out
    }

    fn str(&mut self, name: &str, v: &str) {
        canonical::write_string(self.member(name), v);
    }

    fn opt_str(&mut self, name: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(name, v);
        }
    }

    fn uint(&mut self, name: &str, v: u64) {
        self.member(name).push_str(itoa::Buffer::new().format(v));
    }

    fn bool(&mut self, name: &str, v: bool) {
        self.member(name).push_str(if v { "true" } else { "false" });
    }

    /// A list of strings, left out when empty.
    fn strs(&mut self, name: &str, v: &[String]) {
        self.list(name, v, |out, s| canonical::write_string(out, s));
    }

    /// A list, left out when empty.
    fn list<T>(&mut self, name: &str, items: &[T], mut item: impl FnMut(&mut String, &T)) {
        if items.is_empty() {
            return;
        }
        let out = self.member(name);
        out.push('[');
        for (i, v) in items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            item(out, v);
        }
        out.push(']');
    }

    fn close(self) {
        self.out.push('}');
    }
}

impl ReceiptBody {
    /// Append the canonical JSON of this body as a version 2 body: every empty member left out.
    pub(super) fn write_v2(&self, out: &mut String) {
        let mut o = Object::open(out);
        if let Some(a) = &self.action {
            write_action(o.member("action"), a);
        }
        if let Some(a) = &self.approval {
            write_approval(o.member("approval"), a);
        }
        if let Some(b) = &self.bundle {
            write_bundle(o.member("bundle"), b);
        }
        if let Some(c) = &self.credentials {
            o.list("credentials", c, write_credential);
        }
        if let Some(d) = self.decision {
            o.str("decision", d.as_str());
        }
        if let Some(d) = self.drift_milli {
            o.member("drift_milli")
                .push_str(itoa::Buffer::new().format(d));
        }
        o.strs("effects", &self.effects);
        o.str("event", self.event.as_str());
        if let Some(i) = &self.identity {
            write_identity(o.member("identity"), i);
        }
        o.opt_str("intent", self.intent.as_deref());
        o.opt_str("intent_source", self.intent_source.as_deref());
        if let Some(l) = &self.layers {
            o.list("layers", l, write_layer);
        }
        o.list("matched", &self.matched, write_matched);
        o.strs("modifications", &self.modifications);
        o.str("prev", &self.prev);
        o.opt_str("reason", self.reason.as_deref());
        o.opt_str("rule", self.rule.as_deref());
        o.uint("seq", self.seq);
        o.str("session", &self.session);
        o.opt_str("trace", self.trace.as_deref());
        o.uint("ts_ms", self.ts_ms);
        o.uint("v", self.v.into());
        o.strs("warnings", &self.warnings);
        if let Some(d) = self.would_be {
            o.str("would_be", d.as_str());
        }
        o.close();
    }
}

fn write_action(out: &mut String, a: &ReceiptAction) {
    let mut o = Object::open(out);
    o.strs("arg_keys", &a.arg_keys);
    o.strs("data_classes", &a.data_classes);
    o.str("digest", &a.digest);
    o.str("kind", a.kind.as_str());
    o.str("operation", &a.operation);
    o.opt_str("prompt", a.prompt.as_deref());
    o.opt_str("resource", a.resource.as_deref());
    o.bool("secrets", a.secrets);
    o.uint("size", a.size);
    write_target(o.member("target"), &a.target);
    o.opt_str("tool", a.tool.as_deref());
    o.close();
}

fn write_target(out: &mut String, t: &ReceiptTarget) {
    let mut o = Object::open(out);
    o.str("host", &t.host);
    o.str("path", &t.path);
    o.uint("port", t.port.into());
    o.str("scheme", &t.scheme);
    o.str("server", &t.server);
    o.close();
}

fn write_approval(out: &mut String, a: &ApprovalRef) {
    let mut o = Object::open(out);
    o.str("group", &a.group);
    o.str("key_id", &a.key_id);
    o.str("token_id", &a.token_id);
    o.close();
}

fn write_bundle(out: &mut String, b: &BundleRef) {
    let mut o = Object::open(out);
    o.str("hash", &b.hash);
    o.str("pack", &b.pack);
    o.str("version", &b.version);
    o.close();
}

fn write_credential(out: &mut String, c: &CredentialRecord) {
    let mut o = Object::open(out);
    o.str("audience", &c.audience);
    o.bool("cached", c.cached);
    o.str("id", &c.id);
    o.str("name", &c.name);
    o.str("scope", &c.scope);
    o.close();
}

fn write_identity(out: &mut String, i: &ReceiptIdentity) {
    let mut o = Object::open(out);
    write_principal(o.member("agent"), &i.agent);
    write_principal(o.member("human"), &i.human);
    write_principal(o.member("workload"), &i.workload);
    o.close();
}

fn write_principal(out: &mut String, p: &ReceiptPrincipal) {
    let mut o = Object::open(out);
    o.str("auth", p.auth.as_str());
    o.opt_str("id", p.id.as_deref());
    o.close();
}

fn write_layer(out: &mut String, l: &LayerRecord) {
    let mut o = Object::open(out);
    o.str("assigned", &l.assigned);
    o.str("decision", l.decision.as_str());
    o.str("hash", &l.hash);
    o.str("mode", l.mode.as_str());
    o.str("pack", &l.pack);
    o.str("rule", &l.rule);
    o.str("version", &l.version);
    o.bool("winner", l.winner);
    o.close();
}

fn write_matched(out: &mut String, m: &MatchedRule) {
    let mut o = Object::open(out);
    o.str("decision", m.decision.as_str());
    o.str("mode", m.mode.as_str());
    o.str("rule", &m.rule);
    o.close();
}
