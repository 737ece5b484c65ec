//! Tool argument schemas: looking an argument path up in a `tool "x" { ... }` declaration.

use crate::ast::{PathSegment, ToolSchemaDef, VType};
use crate::syntax::expr::arg_path_text;

pub(super) fn schema_path_text(p: &[String]) -> String {
    arg_path_text(
        &p.iter()
            .map(|k| PathSegment::Key(k.clone()))
            .collect::<Vec<_>>(),
    )
}

pub(super) enum SchemaHit {
    Exact(VType),
    /// Inside a declared array or object (not described further).
    Inside,
    Unknown,
}

fn step_key(s: &PathSegment) -> String {
    match s {
        PathSegment::Key(k) => k.clone(),
        PathSegment::Index(n) => n.to_string(),
    }
}

pub(super) fn schema_lookup(s: &ToolSchemaDef, path: &[PathSegment]) -> SchemaHit {
    let keys: Vec<String> = path.iter().map(step_key).collect();
    for a in &s.args {
        if a.path.node == keys {
            return SchemaHit::Exact(a.ty);
        }
    }
    for a in &s.args {
        if keys.starts_with(&a.path.node) && matches!(a.ty, VType::Array | VType::Object) {
            return SchemaHit::Inside;
        }
        // A declared deeper path implies the intermediate objects exist.
        if a.path.node.starts_with(&keys) {
            return SchemaHit::Exact(VType::Object);
        }
    }
    SchemaHit::Unknown
}

pub(super) fn schema_type(s: &ToolSchemaDef, path: &[PathSegment]) -> Option<VType> {
    match schema_lookup(s, path) {
        SchemaHit::Exact(t) => Some(t),
        _ => None,
    }
}
