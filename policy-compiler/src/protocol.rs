//! The built-in class `mcp_protocol`: MCP protocol traffic, from the versioned list in
//! [`bundle::protocol`] (`docs/policy-language.md`, "MCP protocol traffic").
//!
//! A pack that names the class anywhere (`class mcp_protocol` in a condition, `allow class
//! [mcp_protocol]`, `revoke class mcp_protocol`, `session.seen(mcp_protocol)`, ...) gets it as
//! its first class, defined as
//! `kind == mcp and (operation in [<the list's operations>] or operation prefix [<its prefixes>])`
//! for the list version it pins with `mcp_protocol N` in the pack header, or the newest. The
//! compiler writes that condition into the bundle and records the version, so the bundle's
//! meaning never depends on which list a filter knows. A pack that never names it has no such
//! class (its verdicts and receipts are unchanged).

use std::borrow::Cow;

use crate::ast::{
    ClassDef, CmpOp, CountSubject, EffectDef, Expr, FieldRef, Item, Lit, Policy, SetRef, Span,
    Spanned,
};
use bundle::verdict::RiskTier;

pub use bundle::protocol::CLASS_NAME;

/// The list version a pack is compiled with: the one it pins, or the newest.
pub fn version(p: &Policy) -> u16 {
    p.pack
        .mcp_protocol
        .as_ref()
        .map_or(bundle::protocol::LATEST, |v| v.node)
}

/// Whether the pack names the class anywhere.
pub fn used(p: &Policy) -> bool {
    p.items.iter().any(|item| match item {
        Item::Class(c) => names_class(&c.when),
        Item::Rule(r) => {
            names_class(&r.when)
                || r.effects.iter().any(|e| {
                    matches!(&e.node, EffectDef::RevokeClass(c)
                        | EffectDef::RevokePrincipalClass(c) if c == CLASS_NAME)
                })
        }
        Item::Intent(i) => i.classes.iter().any(|c| c.node == CLASS_NAME),
        Item::List(_) | Item::ToolSchema(_) => false,
    })
}

fn names_class(e: &Expr) -> bool {
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => names_class(a) || names_class(b),
        Expr::Not(a) => names_class(a),
        Expr::InClass(c) | Expr::Seen(c) => c.node == CLASS_NAME,
        Expr::Count(s, ..) => matches!(&s.node, CountSubject::Class(c) if c == CLASS_NAME),
        _ => false,
    }
}

fn sp<T>(node: T) -> Spanned<T> {
    Spanned {
        node,
        span: Span::default(),
    }
}

/// The class for list `version` (`None` for a version this compiler does not know).
pub fn class(version: u16) -> Option<ClassDef> {
    let list = bundle::protocol::list(version)?;
    let strings = |v: &[&str]| -> Vec<Spanned<Lit>> {
        v.iter().map(|s| sp(Lit::Str((*s).to_owned()))).collect()
    };
    let operation = || sp(FieldRef::Operation);
    let when = Expr::And(
        Box::new(Expr::Cmp(
            sp(FieldRef::Kind),
            CmpOp::Eq,
            sp(Lit::Str("mcp".to_owned())),
        )),
        Box::new(Expr::Or(
            Box::new(Expr::In(
                operation(),
                SetRef::Inline(strings(list.operations)),
            )),
            Box::new(Expr::Prefix(
                operation(),
                SetRef::Inline(strings(list.prefixes)),
            )),
        )),
    );
    Some(ClassDef {
        name: sp(CLASS_NAME.to_owned()),
        risk: RiskTier::Low,
        readonly: true,
        when,
        span: Span::default(),
    })
}

/// The pack's classes in evaluation order: the built-in class first (when the pack uses it and
/// its version is known), then the pack's own in source order.
pub fn classes(p: &Policy) -> Vec<Cow<'_, ClassDef>> {
    let builtin = used(p).then(|| class(version(p))).flatten();
    builtin
        .map(Cow::Owned)
        .into_iter()
        .chain(p.items.iter().filter_map(|i| match i {
            Item::Class(c) => Some(Cow::Borrowed(c)),
            _ => None,
        }))
        .collect()
}
