//! A plain HTTP request's query parameters, read as the arguments servers read them
//! (docs/filter-normalization.md, "Query parameters").
//!
//! Most server frameworks hand a handler the query's fields as parameters, beside or merged with
//! a form or JSON body's (PHP's `$_GET` and `$_REQUEST`, Flask's `request.args` and
//! `request.values`, Express's `req.query`, Rails' and Spring's `params`). So the policy judges a
//! request whose query has fields with those fields as arguments too, as readings of the request
//! (the strictest verdict decides; `action_readings`). Where servers disagree, each way is a
//! reading: a name given twice with different values is read as its first value (Flask, Go) and as
//! its last (PHP, Rails); a raw `;` splits fields too for older parsers (Python before 3.9.2, some
//! Java containers), so the query is also read split on it. Fields are split at their first `=`,
//! `+` is a space, escapes are decoded (a malformed one kept as written, bytes that are not UTF-8
//! read as U+FFFD), and a name ending in `[]` collects its values into an array, as form bodies
//! are read (`form.rs`).

use std::borrow::Cow;
use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::nesting;

use bundle::action::{Action, Kind};
use bundle::verdict::{Modification, PathSegment};

/// The most readings one query yields (two splits, first and last value each).
const MAX_READINGS: usize = 4;

/// A query's fields as servers split them, decoded once: the `&` split, and with a raw `;` the
/// split on both.
pub(crate) struct Query {
    splits: Vec<Vec<(String, String)>>,
}

impl Query {
    /// `query` (the part after `?`, as sent) split and decoded.
    pub(crate) fn parse(query: &str) -> Self {
        let splits = splits(query)
            .iter()
            .map(|separators| fields(query.as_bytes(), separators))
            .collect();
        Self { splits }
    }

    /// The query's fields, each way servers read them: empty when it has none (no query, or only
    /// empty fields). Distinct, the usual `&`-split first-value reading first.
    pub(crate) fn readings(&self) -> Vec<Map<String, Value>> {
        let mut out: Vec<Map<String, Value>> = Vec::new();
        for fields in self.splits.iter().filter(|f| !f.is_empty()) {
            for last in [false, true] {
                let reading = read(fields, last);
                if !out.contains(&reading) && out.len() < MAX_READINGS {
                    out.push(reading);
                }
            }
        }
        out
    }

    /// The names of the query's fields, as any split names them.
    pub(crate) fn names(&self) -> BTreeSet<&str> {
        self.splits
            .iter()
            .flatten()
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// The distinct values the query gives a field named `name` (ASCII case ignored), in either
    /// split: what a server that reads that field may read (`_method`, for the method readings).
    /// At most `limit` + 1 of them: a caller that judges each stops there anyway, and a query of
    /// thousands would otherwise cost a comparison of each with each.
    pub(crate) fn values(&self, name: &str, limit: usize) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (n, v) in self.splits.iter().flatten() {
            if n.eq_ignore_ascii_case(name) && !out.contains(&v.as_str()) {
                out.push(v);
                if out.len() > limit {
                    break;
                }
            }
        }
        out
    }
}

/// The ways servers split `query` into fields: on `&`, and with a raw `;` also on it.
fn splits(query: &str) -> &'static [&'static [u8]] {
    if query.contains(';') {
        &[b"&", b"&;"]
    } else {
        &[b"&"]
    }
}

/// `(name, value)` of each non-empty field, decoded.
fn fields(query: &[u8], separators: &[u8]) -> Vec<(String, String)> {
    query
        .split(|b| separators.contains(b))
        .filter(|f| !f.is_empty())
        .map(|field| {
            let (name, value) = match field.iter().position(|&b| b == b'=') {
                Some(eq) => (
                    field.get(..eq).unwrap_or_default(),
                    field.get(eq.saturating_add(1)..).unwrap_or_default(),
                ),
                None => (field, &[][..]),
            };
            let text =
                |b: &[u8]| String::from_utf8_lossy(&super::percent_decode(b, true)).into_owned();
            (text(name), text(value))
        })
        .collect()
}

/// One reading of `fields`: each plain name's first (or last) value; `[]` names collect all.
fn read(fields: &[(String, String)], last: bool) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in fields {
        let value = Value::String(value.clone());
        if name.ends_with("[]") {
            if let Value::Array(values) = out
                .entry(name.clone())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                values.push(value);
            }
        } else if last || !out.contains_key(name) {
            out.insert(name.clone(), value);
        }
    }
    out
}

/// The readings of a plain HTTP action's parameters (docs/filter-normalization.md, "Query
/// parameters" and "Nested field names"): for each way of reading the query, the body's arguments
/// (an object) with the query's fields added where the body has none (the body's value wins) and,
/// where both name one, with the query's value; the query's fields alone when the body gave no
/// object. When a field name may nest (`nesting.rs`), the same again in each dialect, applied to
/// the query's fields and, for a form body (`form_body`), to the body's. Only those that differ
/// from the action's own arguments, distinct. `query` is `a`'s, parsed, if it has one.
pub(crate) fn argument_readings(a: &Action, query: Option<&Query>, form_body: bool) -> Vec<Value> {
    readings_by_dialect(a, query, form_body)
        .into_iter()
        .map(|(v, _)| v)
        .collect()
}

/// Why `read` (one of [`argument_readings`]) is a reading of `a`, for a refusal's reason.
pub(crate) fn reading_reason(
    a: &Action,
    query: Option<&Query>,
    form_body: bool,
    read: &Value,
) -> String {
    let dialect = readings_by_dialect(a, query, form_body)
        .into_iter()
        .find_map(|(v, d)| (v == *read).then_some(d))
        .flatten();
    let body = a.arguments.as_object().filter(|_| form_body);
    let nested = dialect.and_then(|_| {
        let fields = query.iter().flat_map(|q| q.readings());
        fields
            .chain(body.cloned())
            .find_map(|f| nesting::first_nested(&f).map(|(n, p)| (n.to_owned(), p)))
    });
    match nested {
        Some((name, place)) => format!(
            "servers read the field name `{}` as `{}`",
            super::printable(&name),
            super::printable(&place)
        ),
        None => format!(
            "servers read the query's parameters as arguments too (`?{}`)",
            super::printable(&a.target.query)
        ),
    }
}

/// [`argument_readings`], each with the dialect that read the field names (`None`: as written).
fn readings_by_dialect(
    a: &Action,
    query: Option<&Query>,
    form_body: bool,
) -> Vec<(Value, Option<nesting::Dialect>)> {
    let plain = query.map(Query::readings).unwrap_or_default();
    let body = a.arguments.as_object().filter(|_| form_body);
    let nests = plain
        .iter()
        .flat_map(|q| q.keys())
        .chain(body.into_iter().flat_map(|b| b.keys()))
        .any(|k| nesting::may_nest(k));
    let dialects = std::iter::once(None).chain(
        nesting::Dialect::ALL
            .into_iter()
            .map(Some)
            .filter(|_| nests),
    );
    let mut out: Vec<(Value, Option<nesting::Dialect>)> = Vec::new();
    let mut add = |v: Value, d: Option<nesting::Dialect>| {
        if v != a.arguments && !out.iter().any(|(o, _)| *o == v) {
            out.push((v, d));
        }
    };
    for d in dialects {
        let args: Cow<'_, Value> = match (d, body) {
            (Some(d), Some(b)) => Cow::Owned(Value::Object(nesting::nest(b, d))),
            _ => Cow::Borrowed(&a.arguments),
        };
        if plain.is_empty() {
            add(args.into_owned(), d);
            continue;
        }
        for q in &plain {
            let q: Cow<'_, Map<String, Value>> = match d {
                Some(d) => Cow::Owned(nesting::nest(q, d)),
                None => Cow::Borrowed(q),
            };
            match args.as_ref() {
                Value::Object(body) => {
                    let mut body_wins = body.clone();
                    for (k, v) in q.iter() {
                        body_wins.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                    let differs = q.iter().any(|(k, v)| body.get(k).is_some_and(|b| b != v));
                    add(Value::Object(body_wins), d);
                    if differs {
                        let mut query_wins = body.clone();
                        query_wins.extend(q.into_owned());
                        add(Value::Object(query_wins), d);
                    }
                }
                _ => add(Value::Object(q.into_owned()), d),
            }
        }
    }
    out
}

/// Why an argument rewrite of a MODIFY cannot be made to this request, if it cannot: the filter
/// rewrites bodies, never the query, so a rewrite of an argument the query also carries (or
/// `redact_secrets` with a secret in the query) would reach the server unmade through the query.
pub(crate) fn unrewritable(a: &Action, mods: &[Modification]) -> Option<String> {
    if a.kind != Kind::Http || a.target.query.is_empty() {
        return None;
    }
    let query = Query::parse(&a.target.query);
    // The names as written, and the top-level name each dialect reads a nested one as
    // (`user[role]` carries `user`).
    let nested: Vec<String> = query
        .names()
        .iter()
        .flat_map(|n| nesting::top_names(n))
        .collect();
    let mut names = query.names();
    names.extend(nested.iter().map(String::as_str));
    for m in mods {
        let path = match m {
            Modification::RedactArg { path }
            | Modification::DropArg { path }
            | Modification::ClampArg { path, .. }
            | Modification::CoerceArg { path, .. } => path,
            Modification::RedactSecrets => {
                let mut scan = super::risk::Scan::default();
                for reading in query.readings() {
                    for (k, v) in reading {
                        scan.text(&k);
                        scan.value(&v);
                    }
                }
                if scan.risk().secrets {
                    return Some(
                        "the policy redacts secrets, and the query carries one, which the filter \
                         cannot rewrite"
                            .to_owned(),
                    );
                }
                continue;
            }
            _ => continue,
        };
        if let Some(PathSegment::Key(k)) = path.first()
            && names.contains(k.as_str())
        {
            return Some(format!(
                "the policy rewrites argument `{}`, which the query also carries, and the filter \
                 cannot rewrite a query",
                super::printable(k)
            ));
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "test indexing on known shapes")]
mod tests {
    use super::*;
    use serde_json::json;

    fn readings(query: &str) -> Vec<Map<String, Value>> {
        Query::parse(query).readings()
    }

    fn names(query: &str) -> BTreeSet<String> {
        Query::parse(query)
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    fn values(query: &str, name: &str, limit: usize) -> Vec<String> {
        Query::parse(query)
            .values(name, limit)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    fn argument_readings(a: &Action) -> Vec<Value> {
        super::argument_readings(a, Some(&Query::parse(&a.target.query)), false)
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn fields_are_read_as_forms_are() {
        assert_eq!(
            readings("role=admin&note=a+b%21&tags[]=x&tags[]=y&flag"),
            vec![obj(json!({
                "role": "admin", "note": "a b!", "tags[]": ["x", "y"], "flag": ""
            }))]
        );
        assert_eq!(readings(""), Vec::<Map<String, Value>>::new());
        assert_eq!(readings("&&"), Vec::<Map<String, Value>>::new());
        assert_eq!(
            readings("q=caf%E9&bad=%zz"),
            vec![obj(json!({"q": "caf\u{fffd}", "bad": "%zz"}))]
        );
    }

    #[test]
    fn each_way_servers_disagree_is_a_reading() {
        // A repeated name: its first value (Flask, Go) and its last (PHP, Rails).
        assert_eq!(
            readings("role=viewer&role=admin"),
            vec![
                obj(json!({"role": "viewer"})),
                obj(json!({"role": "admin"}))
            ]
        );
        // The same value twice is one reading.
        assert_eq!(readings("a=1&a=1"), vec![obj(json!({"a": "1"}))]);
        // A raw `;` splits fields too for older parsers.
        assert_eq!(
            readings("q=1;role=admin"),
            vec![
                obj(json!({"q": "1;role=admin"})),
                obj(json!({"q": "1", "role": "admin"}))
            ]
        );
        // An escaped name is the name it decodes to.
        assert_eq!(
            readings("%72ole=admin"),
            vec![obj(json!({"role": "admin"}))]
        );
        assert_eq!(
            names("a=1;b=2&c").into_iter().collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(
            values("_method=PUT&x=1;_Method=%44ELETE", "_method", 8),
            ["PUT", "DELETE"]
        );
        let many: Vec<String> = (0..1000).map(|i| format!("_method=M{i}")).collect();
        assert_eq!(values(&many.join("&"), "_method", 64).len(), 65);
    }

    #[test]
    fn readings_are_bounded() {
        assert!(readings("a=1&a=2;a=3&b=1;b=2").len() <= MAX_READINGS);
    }

    fn http(query: &str, arguments: Value) -> Action {
        let mut a = Action {
            kind: Kind::Http,
            arguments,
            ..Action::default()
        };
        a.target.query = query.to_owned();
        a
    }

    #[test]
    fn the_query_joins_the_bodys_arguments_both_ways() {
        let a = http(
            "role=admin&page=2",
            json!({"role": "viewer", "user": "bob"}),
        );
        assert_eq!(
            argument_readings(&a),
            vec![
                json!({"role": "viewer", "user": "bob", "page": "2"}),
                json!({"role": "admin", "user": "bob", "page": "2"}),
            ]
        );
        // No object from the body (none, an array, text): the query's fields alone.
        assert_eq!(
            argument_readings(&http("role=admin", Value::Null)),
            vec![json!({"role": "admin"})]
        );
        assert_eq!(
            argument_readings(&http("role=admin", json!([1]))),
            vec![json!({"role": "admin"})]
        );
        // Nothing new: no reading.
        assert!(argument_readings(&http("role=viewer", json!({"role": "viewer"}))).is_empty());
        assert!(argument_readings(&http("", json!({"role": "viewer"}))).is_empty());
    }

    #[test]
    fn nested_field_names_are_read_in_each_dialect() {
        // The query alone: as written, then qs / Rack, PHP (the same here) and dots.
        assert_eq!(
            argument_readings(&http("user[role]=admin", Value::Null)),
            vec![
                json!({"user[role]": "admin"}),
                json!({"user": {"role": "admin"}}),
            ]
        );
        assert_eq!(
            argument_readings(&http("[role]=admin&access.level=owner", Value::Null)),
            vec![
                json!({"[role]": "admin", "access.level": "owner"}),
                json!({"role": "admin", "access.level": "owner"}),
                json!({"access_level": "owner"}),
                json!({"[role]": "admin", "access": {"level": "owner"}}),
            ]
        );
        // A form body's names nest too, with the query's in the same dialect.
        let mut form = http(
            "tags[]=c",
            json!({"user[role]": "admin", "tags[]": ["a", "b"]}),
        );
        let readings = super::argument_readings(&form, Some(&Query::parse("tags[]=c")), true);
        assert!(readings.contains(&json!({"user": {"role": "admin"}, "tags": ["a", "b"]})));
        // A JSON body's member names are not nested.
        form.target.query.clear();
        assert!(super::argument_readings(&form, None, false).is_empty());
        assert_eq!(
            super::argument_readings(&form, None, true),
            vec![json!({"user": {"role": "admin"}, "tags": ["a", "b"]})]
        );
        // Plain names: the query reading only.
        assert_eq!(
            argument_readings(&http("role=admin", Value::Null)),
            vec![json!({"role": "admin"})]
        );
        let why = reading_reason(
            &form,
            None,
            true,
            &json!({"user": {"role": "admin"}, "tags": ["a", "b"]}),
        );
        assert!(why.contains("`user[role]` as `user.role`"), "{why}");
    }

    #[test]
    fn a_rewrite_of_what_the_query_carries_cannot_be_made() {
        let key = |k: &str| vec![PathSegment::Key(k.to_owned())];
        let a = http("token=abc&page=2", json!({"token": "abc"}));
        let redact = [Modification::RedactArg { path: key("token") }];
        assert!(unrewritable(&a, &redact).unwrap().contains("`token`"));
        let other = [Modification::DropArg { path: key("user") }];
        assert_eq!(unrewritable(&a, &other), None);
        let header = [Modification::StripHeader { name: "x".into() }];
        assert_eq!(unrewritable(&a, &header), None);
        // A nested name carries its top-level name to the servers that nest it.
        let nested = http("user[role]=admin", json!({"user": {"role": "viewer"}}));
        assert!(unrewritable(&nested, &[Modification::DropArg { path: key("user") }]).is_some());
        let dotted = http("access.level=owner", Value::Null);
        assert!(
            unrewritable(
                &dotted,
                &[Modification::DropArg {
                    path: key("access_level")
                }]
            )
            .is_some()
        );
        assert_eq!(
            unrewritable(&http("", json!({"token": "abc"})), &redact),
            None
        );
        // A secret in the query is not redacted by `redact_secrets`.
        let secret = http("key=AKIAIOSFODNN7EXAMPLE", Value::Null);
        assert!(unrewritable(&secret, &[Modification::RedactSecrets]).is_some());
        assert_eq!(unrewritable(&a, &[Modification::RedactSecrets]), None);
    }
}
