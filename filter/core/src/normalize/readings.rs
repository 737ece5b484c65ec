//! Readings: the other ways servers read a request, so the policy judges the strictest of them
//! (docs/filter-normalization.md, "Requests with several readings"), and the refusal of
//! argument names a case-blind server would bind to a field the policy reads.

use super::query::Query;
use super::urls;
use super::{JsonRpcId, Refusal, http, json, printable};

/// The other paths servers may read a normalized path as, for policy evaluation
/// (docs/filter-normalization.md, "Paths with several readings"): with its ASCII case folded,
/// with `;` parameters dropped from its segments, with trailing dots dropped from its segments,
/// and every combination of these that applies. Empty for the usual path (lowercase, no `;`, no
/// segment ending in `.`), so most requests pay one scan.
pub fn path_readings(path: &str) -> Vec<String> {
    let lower = path.bytes().any(|b| b.is_ascii_uppercase());
    let params = path.contains(';');
    let dots = path.split('/').any(|seg| {
        let seg = seg.split(';').next().unwrap_or_default();
        seg.ends_with('.') && !seg.trim_end_matches('.').is_empty()
    });
    if !(lower || params || dots) {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    for mask in 1u8..8 {
        let (l, p, d) = (mask & 1 != 0, mask & 2 != 0, mask & 4 != 0);
        if (l && !lower) || (p && !params) || (d && !dots) {
            continue;
        }
        let segs: Vec<String> = path
            .split('/')
            .map(|seg| {
                let mut seg = seg.to_owned();
                if p {
                    seg = seg.split(';').next().unwrap_or_default().to_owned();
                }
                if d && !seg.trim_end_matches('.').is_empty() {
                    seg = seg.trim_end_matches('.').to_owned();
                }
                if l {
                    seg.make_ascii_lowercase();
                }
                seg
            })
            .collect();
        let reading = segs.join("/");
        if reading != path && !out.contains(&reading) {
            out.push(reading);
        }
    }
    out
}

/// Refuse arguments that name a member the policy reads in another case (`LIMIT`, `ſkip_checks`
/// where the pack reads `limit`, `skip_checks`), at any depth: the policy would not see it, and a
/// server that matches members without case (Go's `encoding/json`, ASP.NET Core) would act on it.
/// `names` is `(folded, as written)` for every name the pack reads.
pub fn check_argument_spelling(
    arguments: &serde_json::Value,
    names: &[(String, String)],
    id: Option<&JsonRpcId>,
) -> Result<(), Refusal> {
    if names.is_empty() {
        return Ok(());
    }
    match arguments {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if !names.iter().any(|(_, n)| n == k) {
                    let folded = json::fold_key(k);
                    if let Some((_, n)) = names.iter().find(|(f, _)| *f == folded) {
                        // The policy would not see it; a server that ignores case acts on it.
                        return Err(Refusal::invalid_params(
                            format!("argument `{}` must be spelled `{n}`", printable(k)),
                            id.cloned(),
                        ));
                    }
                }
                check_argument_spelling(v, names, id)?;
            }
            Ok(())
        }
        serde_json::Value::Array(a) => a
            .iter()
            .try_for_each(|v| check_argument_spelling(v, names, id)),
        _ => Ok(()),
    }
}

/// Headers that make servers execute another method than the request's (Rails, Laravel,
/// Symfony, ASP.NET, Google APIs, many API gateways).
const METHOD_OVERRIDE_HEADERS: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
/// Headers that make servers route another path than the request's (IIS URL Rewrite, Symfony's
/// `X-Original-URL` / `X-Rewrite-Url`, Spring's `X-Forwarded-Prefix` before the path).
const PATH_OVERRIDE_HEADERS: &[&str] = &["x-original-url", "x-rewrite-url"];
const PATH_PREFIX_HEADER: &str = "x-forwarded-prefix";
/// Headers that make servers behind a trusting proxy read another host than the request's
/// (Rails' and Express's `request.host`, Django's `USE_X_FORWARDED_HOST`, host-routed tenants);
/// also `forwarded: host=` (RFC 7239). A comma-separated list names each of its hosts.
const HOST_OVERRIDE_HEADERS: &[&str] = &["x-forwarded-host", "x-host", "x-original-host"];

/// Every other way a server may read a plain HTTP action (docs/filter-normalization.md, "Requests
/// with several readings"): the method named by a method-override header or a `_method` query
/// parameter or body field, the path named by a path-override header (or prefixed by
/// `x-forwarded-prefix`), the host named by a forwarding header (`x-forwarded-host`, `forwarded:
/// host=`), and each path's [`path_readings`]; for a request that switches protocols (`upgrade`),
/// the `CONNECT` it becomes; for an MCP resource, the URI as the server resolves it
/// (`http::resource_reading`); for a plain HTTP request whose query has fields, its arguments with
/// those fields in them (`query::argument_readings`); for arguments with a path or URL string,
/// those read as the tool reads them (`dots.rs`, `urls.rs`). Empty for the usual request, which
/// pays one look at its path, query, headers and argument strings. Each reading is the action with
/// its `operation`, `target.host` and `target.path`, its `resource` or its `arguments` replaced.
///
/// The argument readings only when `reads_args` (the pack reads arguments: otherwise no verdict
/// can depend on them). More than [`MAX_READINGS`] is an error, found before any reading is
/// built: the headers and query of one request can name thousands of methods, hosts and paths,
/// and judging each would let one request cost the filter that many evaluations.
pub fn action_readings(
    a: &bundle::action::Action,
    reads_args: bool,
) -> Result<Vec<bundle::action::Action>, TooManyReadings> {
    let is_http = a.kind == bundle::action::Kind::Http;
    // The query decoded and split as servers read it (`query.rs`): `_method=%44ELETE` and
    // `x=1;_method=DELETE` name DELETE to them.
    let params = Params::of(a);
    let query = params.query.as_ref();
    // One walk over the headers: the methods, paths and hosts they name, and whether the request
    // switches protocols.
    let mut operations = vec![a.operation.clone()];
    let mut paths = vec![a.target.path.clone()];
    let mut hosts = vec![a.target.host.clone()];
    let mut upgrades = false;
    let add_method = |operations: &mut Vec<String>, m: &str| {
        let m = m.trim().to_ascii_uppercase();
        if m.is_empty() || operations.contains(&m) {
            return Ok(());
        }
        if operations.len() > MAX_READINGS {
            return Err(TooManyReadings);
        }
        operations.push(m);
        Ok(())
    };
    for (name, value) in a.headers.iter() {
        let value = value.trim();
        let name = name.as_str();
        if is_http && METHOD_OVERRIDE_HEADERS.contains(&name) {
            add_method(&mut operations, value)?;
        } else if is_http && name == "upgrade" {
            upgrades |= !value.is_empty() && !value.eq_ignore_ascii_case("h2c");
        } else if PATH_OVERRIDE_HEADERS.contains(&name) || name == PATH_PREFIX_HEADER {
            if paths.len() > MAX_READINGS {
                return Err(TooManyReadings);
            }
            let p = if name == PATH_PREFIX_HEADER {
                format!("{}{}", value.trim_end_matches('/'), a.target.path)
            } else {
                value.to_owned()
            };
            paths.push(http::normalize_origin_path(&p, true).map_or(p, |n| n.path));
        } else if HOST_OVERRIDE_HEADERS.contains(&name) || name == "forwarded" {
            for h in value.split(',').filter_map(|v| named_host(name, v)) {
                if !hosts.contains(&h) {
                    if hosts.len() > MAX_READINGS {
                        return Err(TooManyReadings);
                    }
                    hosts.push(h);
                }
            }
        }
    }
    for m in query
        .into_iter()
        .flat_map(|q| q.values("_method", MAX_READINGS))
    {
        add_method(&mut operations, m)?;
    }
    // `_method` in the body too: Rails (`Rack::MethodOverride`) and Symfony read it from a form,
    // Laravel from a form or a JSON object.
    if is_http && let Some(body) = a.arguments.as_object() {
        let named = body
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("_method"));
        for m in named.filter_map(|(_, v)| v.as_str()) {
            add_method(&mut operations, m)?;
        }
    }
    // A request that switches protocols (`upgrade: websocket`) opens a tunnel to its host once
    // the server agrees, and nothing after the switch passes the filter: it is judged as the
    // CONNECT it becomes, too.
    if upgrades && !operations.iter().any(|o| o == "CONNECT") {
        operations.push("CONNECT".to_owned());
    }
    let more: Vec<String> = paths.iter().flat_map(|p| path_readings(p)).collect();
    paths.extend(more);
    let crossed = operations
        .len()
        .saturating_mul(paths.len())
        .saturating_mul(hosts.len());
    if crossed > MAX_READINGS.saturating_add(1) {
        return Err(TooManyReadings);
    }
    let mut triples: Vec<(&str, &str, &str)> = Vec::new();
    for op in &operations {
        for host in &hosts {
            for path in &paths {
                let triple = (op.as_str(), host.as_str(), path.as_str());
                if !triples.contains(&triple) {
                    triples.push(triple);
                }
            }
        }
    }
    // The query's fields, which servers read as parameters (`query.rs`), under every method, host
    // and path the request may be read as: a server that takes `_method` from the query takes the
    // other fields from it too.
    // And a form's or the query's field names as servers nest them (`nesting.rs`).
    let mut arguments = if reads_args {
        params.readings(a)
    } else {
        Vec::new()
    };
    // Parameter values trimmed, as Laravel and Django read them (`trim.rs`): of the arguments as
    // sent and of each parameter reading, for plain HTTP (MCP servers take values as sent).
    if reads_args && is_http {
        read_again(&mut arguments, &a.arguments, super::trim::trimmed);
    }
    // Paths and URLs as the tool reads them (`dots.rs`, `urls.rs`): of the arguments as sent and
    // of each query reading.
    if reads_args {
        read_again(&mut arguments, &a.arguments, super::dots::argument_readings);
    }
    // Every triple with each argument reading and with its own, but the request as sent.
    let count = triples
        .len()
        .saturating_mul(arguments.len().saturating_add(1))
        .saturating_sub(1);
    if count > MAX_READINGS {
        return Err(TooManyReadings);
    }
    let mut out: Vec<bundle::action::Action> = Vec::new();
    let sent = (
        a.operation.as_str(),
        a.target.host.as_str(),
        a.target.path.as_str(),
    );
    for (op, host, path) in triples {
        let original = (op, host, path) == sent;
        if original && arguments.is_empty() {
            // The request as sent: nothing to read differently (the usual case, no copy made).
            continue;
        }
        let mut r = a.clone();
        op.clone_into(&mut r.operation);
        host.clone_into(&mut r.target.host);
        path.clone_into(&mut r.target.path);
        for args in &arguments {
            let mut with = r.clone();
            with.set_arguments(args.clone());
            out.push(with);
        }
        if !original {
            out.push(r);
        }
    }
    // A resource as the server resolves it (`file:///work/../etc/passwd` is `/etc/passwd`), and
    // an `http(s)` one as its HTTP client reads it (`urls.rs`, both parsers).
    if let Some(uri) = a.resource.as_deref() {
        let mut resolved: Vec<String> = Vec::new();
        let readings = [
            http::resource_reading(uri).ok().flatten(),
            urls::canonical(uri, urls::Parser::Whatwg),
            urls::canonical(uri, urls::Parser::Rfc3986),
        ];
        for r in readings.into_iter().flatten() {
            if !resolved.contains(&r) {
                resolved.push(r);
            }
        }
        for uri in resolved {
            let mut r = a.clone();
            r.resource = Some(uri);
            out.push(r);
        }
    }
    Ok(out)
}

/// Add to `readings` what `read` makes of the arguments as sent (`sent`) and of each reading so
/// far: each once, none equal to `sent`.
fn read_again<R: IntoIterator<Item = serde_json::Value>>(
    readings: &mut Vec<serde_json::Value>,
    sent: &serde_json::Value,
    read: impl Fn(&serde_json::Value) -> R,
) {
    let more: Vec<serde_json::Value> = std::iter::once(sent)
        .chain(readings.iter())
        .flat_map(read)
        .collect();
    for r in more {
        if r != *sent && !readings.contains(&r) {
            readings.push(r);
        }
    }
}

/// What of a plain HTTP action servers read as parameters besides its arguments: its query's
/// fields (`query.rs`), and, when its body is a form, the form's field names as they nest them
/// (`nesting.rs`).
struct Params {
    query: Option<Query>,
    /// The arguments were read from a form (urlencoded or multipart); a JSON body's member names
    /// are never nested.
    form_body: bool,
}

impl Params {
    fn of(a: &bundle::action::Action) -> Self {
        let is_http = a.kind == bundle::action::Kind::Http;
        let form_body = is_http
            && a.headers
                .iter()
                .filter(|(name, _)| name == "content-type")
                .any(|(_, value)| {
                    let mime = value.split(';').next().unwrap_or_default().trim();
                    mime.eq_ignore_ascii_case("application/x-www-form-urlencoded")
                        || mime.eq_ignore_ascii_case("multipart/form-data")
                });
        Self {
            query: (is_http && !a.target.query.is_empty()).then(|| Query::parse(&a.target.query)),
            form_body,
        }
    }

    /// `a`'s arguments as servers read its parameters (`query::argument_readings`), other than
    /// as the action has them; empty without a query or a form.
    fn readings(&self, a: &bundle::action::Action) -> Vec<serde_json::Value> {
        if self.query.is_none() && !self.form_body {
            return Vec::new();
        }
        super::query::argument_readings(a, self.query.as_ref(), self.form_body)
    }
}

/// A plain HTTP action's arguments with its query's fields in them, and with its form's and
/// query's field names nested as servers nest them: each way servers read its parameters
/// (`query.rs`, `nesting.rs`). Empty when no server reads them other than as the action has them.
pub(crate) fn parameter_readings(a: &bundle::action::Action) -> Vec<serde_json::Value> {
    Params::of(a).readings(a)
}

/// Why `read`, one of the argument readings [`action_readings`] built from a plain HTTP action's
/// query, form field names or trimmed values, is a reading of `a` (for the refusal's reason).
pub(crate) fn parameter_reading_reason(
    a: &bundle::action::Action,
    read: &serde_json::Value,
) -> String {
    let p = Params::of(a);
    let params = p.readings(a);
    if !params.contains(read)
        && let Some((sent, trimmed)) = std::iter::once(&a.arguments)
            .chain(&params)
            .find_map(super::trim::first_untrimmed)
    {
        return format!(
            "frameworks that trim parameter values (Laravel, Django) read `{}` as `{}`",
            printable(sent),
            printable(trimmed)
        );
    }
    super::query::reading_reason(a, p.query.as_ref(), p.form_body, read)
}

/// The host one element of a host header names: the value of `x-forwarded-host` and the like,
/// the `host=` parameter of a `forwarded` element (quoted or not).
fn named_host(header: &str, element: &str) -> Option<String> {
    if header != "forwarded" {
        return super::urls::host_reading(element);
    }
    let param = element.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("host").then_some(v.trim())
    })?;
    super::urls::host_reading(param.trim_matches('"'))
}

/// The most readings of one request the filter judges ([`action_readings`]). A request with more
/// (its headers and query name that many methods, paths and parameter sets: no client sends that)
/// is denied, since the readings left unjudged could be the ones a server executes.
pub const MAX_READINGS: usize = 64;

/// A request has more than [`MAX_READINGS`] readings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyReadings;

#[cfg(test)]
mod tests {
    use super::*;
    use bundle::action::{Action, Kind};

    fn action_readings_all(a: &Action) -> Result<Vec<Action>, TooManyReadings> {
        action_readings(a, true)
    }

    fn http(query: &str, headers: Vec<(String, String)>) -> Action {
        let mut a = Action {
            kind: Kind::Http,
            operation: "GET".into(),
            headers: headers.into(),
            ..Action::default()
        };
        a.target.path = "/public".into();
        a.target.query = query.into();
        a
    }

    #[test]
    fn every_header_that_names_a_reading_is_bound_by_the_digest() {
        // An approval of one reading is no approval of another: the action digest must cover
        // every header `action_readings` reads a method, path or host from.
        let read = METHOD_OVERRIDE_HEADERS
            .iter()
            .chain(PATH_OVERRIDE_HEADERS)
            .chain(HOST_OVERRIDE_HEADERS)
            .chain(&[PATH_PREFIX_HEADER, "forwarded"]);
        for h in read {
            assert!(
                bundle::receipt::READING_HEADERS.contains(h),
                "{h} is read but not bound"
            );
        }
    }

    #[test]
    fn readings_are_counted_before_they_are_built() {
        // The usual request: none.
        assert_eq!(action_readings_all(&http("", Vec::new())), Ok(Vec::new()));
        // Within the bound: each method with the query's fields, and each method without them.
        let a = http("_method=PUT&role=admin", Vec::new());
        let readings = action_readings_all(&a).unwrap();
        assert_eq!(
            readings
                .iter()
                .map(|r| (r.operation.as_str(), r.arguments.is_null()))
                .collect::<Vec<_>>(),
            [("GET", false), ("PUT", false), ("PUT", true)]
        );
        // `_method` as servers read it: decoded, and after a `;`.
        for query in ["_method=%44ELETE", "x=1;_method=delete"] {
            let ops: Vec<String> = action_readings_all(&http(query, Vec::new()))
                .unwrap()
                .into_iter()
                .map(|r| r.operation)
                .collect();
            assert!(ops.contains(&"DELETE".to_owned()), "{query}: {ops:?}");
        }
        // Thousands of methods in the query or in override headers: refused, not built.
        let query: Vec<String> = (0..5000).map(|i| format!("_method=M{i}")).collect();
        assert_eq!(
            action_readings_all(&http(&query.join("&"), Vec::new())),
            Err(TooManyReadings)
        );
        let headers = (0..5000)
            .map(|i| ("x-original-url".to_owned(), format!("/p{i}")))
            .collect();
        assert_eq!(
            action_readings_all(&http("", headers)),
            Err(TooManyReadings)
        );
        let headers = (0..5000)
            .map(|i| ("x-http-method-override".to_owned(), format!("M{i}")))
            .collect();
        assert_eq!(
            action_readings_all(&http("", headers)),
            Err(TooManyReadings)
        );
        // Path overrides and prefixes count together.
        let headers = (0..66)
            .map(|i| {
                let name = if i % 2 == 0 {
                    "x-rewrite-url"
                } else {
                    "x-forwarded-prefix"
                };
                (name.to_owned(), format!("/p{i}"))
            })
            .collect();
        assert_eq!(
            action_readings_all(&http("", headers)),
            Err(TooManyReadings)
        );
        // A resource URI as the server resolves it, and an http one as its client reads it.
        let mut res = http("", Vec::new());
        res.kind = Kind::Mcp;
        res.resource = Some("HTTP://0xA9FEA9FE/a/../latest".into());
        let read: Vec<Option<String>> = action_readings_all(&res)
            .unwrap()
            .into_iter()
            .map(|r| r.resource)
            .collect();
        assert!(
            read.contains(&Some("http://169.254.169.254/latest".into())),
            "{read:?}"
        );
        // A host header names the host a server behind a trusting proxy reads.
        let a = http(
            "",
            vec![
                (
                    "x-forwarded-host".into(),
                    "Admin.Example:8443, 0xA9FEA9FE".into(),
                ),
                (
                    "forwarded".into(),
                    "for=192.0.2.1;host=\"meta.example\", for=x".into(),
                ),
            ],
        );
        let hosts: Vec<String> = action_readings_all(&a)
            .unwrap()
            .into_iter()
            .map(|r| r.target.host)
            .collect();
        assert_eq!(hosts, ["admin.example", "169.254.169.254", "meta.example"]);
        let headers = (0..5000)
            .map(|i| ("x-forwarded-host".to_owned(), format!("h{i}.example")))
            .collect();
        assert_eq!(
            action_readings_all(&http("", headers)),
            Err(TooManyReadings)
        );
        // An MCP request's query is not read as arguments, nor its `_method`.
        let mut mcp = http("_method=DELETE&role=admin", Vec::new());
        mcp.kind = Kind::Mcp;
        assert_eq!(action_readings_all(&mcp), Ok(Vec::new()));
        // `_method` in a form or JSON body names the method too, whatever the pack reads.
        let mut form = http("", Vec::new());
        form.operation = "POST".into();
        form.arguments = serde_json::json!({"id": "1", "_method": "delete"});
        let ops: Vec<String> = action_readings(&form, false)
            .unwrap()
            .into_iter()
            .map(|r| r.operation)
            .collect();
        assert_eq!(ops, ["DELETE"]);
        // A pack that reads no arguments: the query's fields are not judged as them.
        let a = http("_method=PUT&role=admin", Vec::new());
        assert_eq!(action_readings(&a, false).unwrap().len(), 1);
        // Just past the bound by the product of methods and argument readings.
        let query: Vec<String> = (0..30).map(|i| format!("_method=M{i}")).collect();
        let a = http(&format!("{}&role=admin", query.join("&")), Vec::new());
        assert_eq!(action_readings_all(&a), Err(TooManyReadings));
    }
}
