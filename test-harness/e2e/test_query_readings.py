"""A URL query's fields are arguments too (docs/filter-normalization.md, "Query parameters" and
"Requests with several readings"), held through a real Envoy forward proxy (envoy-configs/
egress-proxy, body inspection on) with the built .wasm in front of egress_upstream.py, over every
framing hostile_corpus.py sends: HTTP/1.1 with `content-length`, chunked, chunked with trailers;
h2c with `content-length`, and without one, ended by a trailers HEADERS frame. Each body goes in
three pieces, so the filter decides on the whole of it whatever the framing. Every transport must
get the same answer, and a denied request must never reach the upstream (matched by its
`x-hostile-case` tag in the upstream's record).

Packs:
- policies/egress.pcl (test_egress.py's): `no_admin_grants` reads `args.role`, and
  `redact_outbound_secrets` rewrites a secret it finds;
- testdata/scenarios/policies/request_path.pcl, the pack filter/core/tests/request_path.rs judges
  the same requests with on the mock host: `no_http_delete`, and `anonymous_notes`, which drops
  `args.author` from a POST to /notes. So the mock host and the built filter in Envoy are held to
  the same answers.

    .venv/bin/pytest test-harness/e2e/test_query_readings.py -q -p no:cacheprovider
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import hostile_corpus as hc
import portcullis_e2e as pe
from conftest import compile_or_fail

REQUEST_PATH_POLICY = pe.REPO / "testdata" / "scenarios" / "policies" / "request_path.pcl"
RUN = (("x-agent-run", "query-readings-run"),)
FORM = "application/x-www-form-urlencoded"
TRANSPORTS = hc.BODY_TRANSPORTS
# The filter's bound on the readings of one request (normalize/readings.rs, MAX_READINGS).
MAX_READINGS = 64
_serial = itertools.count()


@dataclass
class Sent:
    """One request: what the agent saw, what the upstream received of it (matched by its tag),
    and Envoy's access log line for it."""

    answer: hc.Answer
    received: list[dict]
    log: dict


@dataclass
class Proxy:
    """One egress proxy Envoy with one pack, its upstream's record and its access log."""

    stack: pe.Stack
    logged: int = 0

    def send(self, transport: str, target: str, body: bytes, *, content_type: str | None = FORM,
             headers: tuple[tuple[str, str], ...] = ()) -> Sent:
        """POST ``body`` to ``target`` (an absolute http:// URL) over ``transport``. Checks that
        Envoy's access log shows it arrived over that protocol."""
        tag = f"{transport}|{next(_serial)}|{target}"
        case = hc.Case(tag, target, body, content_type=content_type, headers=RUN + headers)
        answer = hc.send(self.stack.ports["envoy"], case, tag, transport)
        received = [rec for rec in self.stack.upstream_requests("egress") if pe.header(rec, hc.TAG) == tag]
        self.logged += 1
        log = self.stack.wait_access_log(self.logged)[self.logged - 1]
        protocol = "HTTP/2" if transport.startswith("h2") else "HTTP/1.1"
        assert (log["protocol"], log["path"]) == (protocol, case.path), (transport, log)
        return Sent(answer, received, log)


def start_proxy(tmp: Path, keys: pe.Keys, bundle: Path) -> Iterator[Proxy]:
    """Egress upstream + egress-proxy Envoy with ``bundle``; stopped however the module ends."""
    with pe.stack(tmp / "run") as stack:
        try:
            stack.egress_upstream()
            stack.envoy("egress-proxy", keys, bundle)
        except pe.E2EError as e:
            pytest.fail(str(e), pytrace=False)
        yield Proxy(stack)


@pytest.fixture(scope="module")
def egress(keys: pe.Keys, egress_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The egress proxy with policies/egress.pcl."""
    yield from start_proxy(tmp_path_factory.mktemp("egress-query"), keys, egress_bundle)


@pytest.fixture(scope="module")
def request_path(keys: pe.Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The egress proxy with testdata/scenarios/policies/request_path.pcl."""
    tmp = tmp_path_factory.mktemp("request-path-query")
    bundle = compile_or_fail(REQUEST_PATH_POLICY, tmp / "request_path.bundle", keys)
    yield from start_proxy(tmp, keys, bundle)


def denied(sent: Sent, rule: str, why: str) -> dict:
    """The agent got the filter's 403 naming ``rule`` (and the access log the same), and nothing
    reached the upstream; the answer's JSON."""
    doc = sent.answer.json() or {}
    assert sent.answer.status == 403, (why, sent.answer.summary())
    assert (doc.get("decision"), doc.get("rule")) == ("DENY", rule), (why, sent.answer.summary())
    assert (sent.log["decision"], sent.log["rule"]) == ("DENY", rule), (why, sent.log)
    assert sent.received == [], (why, "reached the upstream", sent.received)
    return doc


def forwarded(sent: Sent, decision: str, why: str) -> dict:
    """The upstream answered the agent, and received the request once, which the filter decided
    with ``decision``; the upstream's record of it."""
    assert len(sent.received) == 1, (why, sent.answer.summary(), sent.received)
    doc = sent.answer.json() or {}
    assert sent.answer.status == 200 and doc.get("upstream") == "egress", (why, sent.answer.summary())
    assert (doc.get("method"), doc.get("path")) == (sent.received[0]["method"], sent.received[0]["path"]), (why, doc)
    assert sent.answer.headers.get("x-portcullis-decision") == sent.log["decision"] == decision, (why, sent.log)
    return sent.received[0]


# -- egress.pcl: the cases of test_egress.test_query_parameters_are_arguments_too -------------------

MEMBERSHIPS = "http://api.github.com/orgs/acme/memberships"
QUERY_GRANTS = [
    ("role=admin", b"user=bob&role=viewer"),         # beside a body that grants less
    ("role=admin", b""),                             # alone
    ("user=bob&role=viewer&role=admin", b""),        # repeated: PHP and Rails read the last
    ("user=bob;role=admin", b""),                    # older parsers split on `;`
    ("%72ole=admi%6E", b"user=bob"),                 # escaped name and value
]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_grant_in_the_query_is_denied_over_every_framing(egress: Proxy, transport: str) -> None:
    """Servers read the query's fields as parameters (PHP's `$_REQUEST`, Flask's
    `request.values`, Rails' `params`): the admin grant in the query is denied by
    `no_admin_grants` over every framing, however the query spells or repeats it; a secret in the
    query, which `redact_secrets` cannot rewrite, is denied (`filter:modify`) rather than sent out
    unredacted. A query with neither passes, query and body as sent."""
    for query, body in QUERY_GRANTS:
        doc = denied(egress.send(transport, f"{MEMBERSHIPS}?{query}", body), "no_admin_grants", query)
        assert "query's parameters as arguments" in doc["reason"], (query, doc)
    doc = denied(egress.send(transport, f"{MEMBERSHIPS}?key=AKIAIOSFODNN7EXAMPLE", b"user=bob"), "filter:modify",
                 "secret in the query")
    assert "the query carries one" in doc["reason"], doc
    rec = forwarded(egress.send(transport, f"{MEMBERSHIPS}?page=2", b"user=bob&role=viewer"), "ALLOW", "plain query")
    assert (rec["path"], rec["body"]) == ("/orgs/acme/memberships?page=2", "user=bob&role=viewer"), rec


# -- request_path.pcl: `_method` in the query as servers read it ------------------------------------

ITEM = "http://tools.example/api/items/1"
ITEM_BODY = b'{"id":1}'


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("query", [
    "_method=%44ELETE",          # an escaped value: the server decodes it
    "_m%65thod=DELETE",          # an escaped name
    "x=1;_method=DELETE",        # after a raw `;`: older parsers split on it
    "_method=PATCH&_method=DELETE",  # repeated: PHP and Rails take the last
])
def test_an_encoded_method_override_in_the_query_is_judged(request_path: Proxy, transport: str,
                                                           query: str) -> None:
    """Rails, Laravel and Symfony execute the method a `_method` query parameter names, read as
    they read any parameter: escapes decoded, a raw `;` a separator, the last of a repeated name.
    A POST the pack allows, whose query names DELETE in any of these spellings, is judged as the
    DELETE too and denied (`no_http_delete`); the same POST without the override passes."""
    json_body = "application/json"
    doc = denied(request_path.send(transport, f"{ITEM}?{query}", ITEM_BODY, content_type=json_body),
                 "no_http_delete", query)
    assert "`DELETE /api/items/1`" in doc["reason"], doc
    rec = forwarded(request_path.send(transport, f"{ITEM}?x=1", ITEM_BODY, content_type=json_body), "ALLOW",
                    "no override")
    assert (rec["method"], rec["path"], rec["body"]) == ("POST", "/api/items/1?x=1", '{"id":1}'), rec


# -- request_path.pcl: a MODIFY the query would slip past ---------------------------------------------

NOTES = "http://tools.example/notes"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_modify_of_an_argument_the_query_carries_is_denied(request_path: Proxy, transport: str) -> None:
    """`anonymous_notes` drops `args.author` from a note. The filter rewrites bodies, never the
    query, so a note whose query also carries `author` (with the body's author, another, or none
    in the body) is denied (`filter:modify`) instead of reaching the server with its author; a
    note whose query carries other fields has the author dropped from its body, as usual."""
    for query, body in [
        ("author=ann", {"text": "hi", "author": "ann"}),
        ("author=bob", {"text": "hi", "author": "ann"}),
        ("author=ann", {"text": "hi"}),
        ("draft=1;author=ann", {"text": "hi"}),  # after a raw `;`
        ("%61uthor=ann", {"text": "hi"}),         # an escaped name
    ]:
        doc = denied(request_path.send(transport, f"{NOTES}?{query}", hc.js(body), content_type="application/json"),
                     "filter:modify", query)
        assert "which the query also carries" in doc["reason"], (query, doc)
    rec = forwarded(request_path.send(transport, f"{NOTES}?draft=1", hc.js({"text": "hi", "author": "ann"}),
                                      content_type="application/json"), "MODIFY", "author in the body only")
    assert rec["path"] == "/notes?draft=1" and json.loads(rec["body"]) == {"text": "hi"}, rec


# -- request_path.pcl: field names servers nest ------------------------------------------------------

MEMBERS = "http://tools.example/members"
# Each grants admin to some server family's reading of its field names (normalize/nesting.rs):
# qs / Rack (`[role]`, `member[role]`, `roles[]`), PHP (a leading space, `.` or space read as `_`, an
# unclosed bracket read as `_`), ASP.NET / Spring (`member.role`); escaped brackets decode to them.
NESTED_GRANTS = [
    "[role]=admin",
    "member[role]=admin",
    "roles[]=viewer&roles[]=admin",
    "roles[0]=viewer&roles[1]=admin",
    "+role=admin",
    "grant.role=admin",
    "grant+role=admin",
    "grant[role=admin",
    "member.role=admin",
    "member%5Brole%5D=admin",
]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_field_names_are_judged_as_servers_nest_them(request_path: Proxy, transport: str) -> None:
    """Express (qs), Rails (Rack), PHP, ASP.NET and Spring read a form or query field named
    `member[role]` as `member.role`, `[role]` as `role`, `roles[]` as the array `roles`, and PHP
    `grant.role` as `grant_role`. `no_admin_grants` reads those arguments: each grant, in a form
    body, in the query, and in a multipart body, is denied over every framing and never reaches the
    upstream. A form body that starts with `{` or `[` but is no JSON is read as the form its label
    says. Nested names that grant nothing (JSON:API's `filter[status]`) pass unchanged."""
    for fields in NESTED_GRANTS:
        for target, body in [(MEMBERS, fields.encode()), (f"{MEMBERS}?{fields}", b"user=bob")]:
            doc = denied(request_path.send(transport, target, body), "no_admin_grants", f"{target} {body!r}")
            assert "servers read the field name" in doc["reason"], (target, body, doc)
    multipart = (b'--b0undary\r\ncontent-disposition: form-data; name="member[role]"\r\n\r\nadmin\r\n'
                 b"--b0undary--\r\n")
    denied(request_path.send(transport, MEMBERS, multipart, content_type="multipart/form-data; boundary=b0undary"),
           "no_admin_grants", "multipart member[role]")
    denied(request_path.send(transport, MEMBERS, b"{x}=1&role=admin"), "no_admin_grants", "form starting with {")
    for target, body in [(MEMBERS, b"member[role]=viewer&roles[]=viewer"),
                         (f"{MEMBERS}?filter[status]=open&page[size]=10", b"user=bob")]:
        rec = forwarded(request_path.send(transport, target, body), "ALLOW", f"{target} {body!r}")
        assert rec["body"] == body.decode(), rec


# -- request_path.pcl: values frameworks trim ---------------------------------------------------------

TRIMMED_GRANTS = [
    (MEMBERS, b"role=+admin", FORM),
    (MEMBERS, b"role=admin%00", FORM),
    (MEMBERS, b"role=%E2%80%8Badmin%0A", FORM),
    (f"{MEMBERS}?role=%09admin", b"user=bob", FORM),
    (MEMBERS, b'{"role":"admin "}', "application/json"),
    (MEMBERS, b'{"member":{"role":"\\u0000admin"}}', "application/json"),
    (MEMBERS, b"role%00x=admin", FORM),  # PHP ends a field name at a NUL
]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_values_are_judged_as_frameworks_that_trim_them(request_path: Proxy, transport: str) -> None:
    """Laravel's `TrimStrings` middleware (in every new application) and Django's form fields trim
    parameter values of white space, NUL and invisible marks, so ` admin` and `admin\\0` grant
    admin to them: each, in a form, the query or a JSON body, is denied by `no_admin_grants` over
    every framing and never reaches the upstream. Spaces inside a value pass as sent."""
    for target, body, ctype in TRIMMED_GRANTS:
        doc = denied(request_path.send(transport, target, body, content_type=ctype), "no_admin_grants",
                     f"{target} {body!r}")
        if b"%00x" not in body:
            assert "frameworks that trim parameter values" in doc["reason"], (target, body, doc)
    rec = forwarded(request_path.send(transport, MEMBERS, b"role=+viewer+&note=a+b"), "ALLOW", "inner spaces")
    assert rec["body"] == "role=+viewer+&note=a+b", rec


# -- request_path.pcl: the bound on readings ----------------------------------------------------------

# Four readings of this query's fields (query.rs): split on `&` (`tag` is `1;tag=2` first, `3;tag=4`
# last) and on `&` and `;` (`1` first, `4` last).
FOUR_WAYS = "tag=1;tag=2&tag=3;tag=4"
PUBLIC = "http://tools.example/public"


def readings(methods: int, paths: int, query_readings: int) -> int:
    """How many readings the filter counts besides the request as sent (readings.rs,
    `action_readings`): every method with every path, each with each reading of its arguments
    with the query in them and without, less the request as sent."""
    return methods * paths * (query_readings + 1) - 1


def overrides(name: str, values: list[str]) -> tuple[tuple[str, str], ...]:
    """One ``name`` header per value (each line a reading, as servers read any of them)."""
    return tuple((name, v) for v in values)


def methods(n: int) -> list[str]:
    """``n`` method names a server would execute, none of them one the pack denies."""
    return [f"M{i}" for i in range(n)]


def paths(n: int) -> list[str]:
    """``n`` paths outside /admin."""
    return [f"/public/p{i}" for i in range(n)]


# (what, query, headers, the readings the filter counts): each at the bound (just under it where
# the product cannot be 65) and one past it.
CAP_CASES = [
    ("paths x query", FOUR_WAYS, overrides("x-original-url", paths(12)), readings(1, 13, 4)),
    ("paths x query, one more path", FOUR_WAYS, overrides("x-original-url", paths(13)), readings(1, 14, 4)),
    ("methods x query", FOUR_WAYS, overrides("x-http-method-override", methods(12)), readings(13, 1, 4)),
    ("methods x query, one more method", FOUR_WAYS, overrides("x-http-method-override", methods(13)),
     readings(14, 1, 4)),
    ("methods x paths, no query", "",
     overrides("x-method-override", methods(4)) + overrides("x-rewrite-url", paths(12)), readings(5, 13, 0)),
    ("methods x paths, one more method", "",
     overrides("x-method-override", methods(5)) + overrides("x-rewrite-url", paths(12)), readings(6, 13, 0)),
    ("methods x paths x query", "page=2",
     overrides("x-http-method", methods(3)) + overrides("x-original-url", paths(7)), readings(4, 8, 1)),
    ("methods x paths x query, one more path", "page=2",
     overrides("x-http-method", methods(3)) + overrides("x-original-url", paths(8)), readings(4, 9, 1)),
    # The query's two readings: the first `_method` and the last.
    ("70 _method values in the query", "&".join(f"_method={m}" for m in methods(70)), (), readings(71, 1, 2)),
]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("what", "query", "headers", "count"), CAP_CASES, ids=[c[0] for c in CAP_CASES])
def test_a_request_with_more_than_64_readings_is_refused(request_path: Proxy, transport: str, what: str,
                                                         query: str, headers: tuple[tuple[str, str], ...],
                                                         count: int) -> None:
    """Override headers and the query can name more methods, paths and parameter sets than the
    filter judges; a reading left unjudged could be the one a server executes, so a request with
    more than 64 readings is denied (`filter:refused`) and never reaches the server. One at the
    bound is decided as usual: this pack allows it (none of its readings is denied), and it
    reaches the server as sent."""
    target = f"{PUBLIC}?{query}" if query else PUBLIC
    sent = request_path.send(transport, target, hc.js({"note": "hi"}), content_type="application/json",
                             headers=headers)
    if count > MAX_READINGS:
        doc = denied(sent, "filter:refused", what)
        assert f"at most {MAX_READINGS}" in doc["reason"], doc
    else:
        rec = forwarded(sent, "ALLOW", what)
        overridden = [(k, v) for k, v in rec["headers"] if k in {h for h, _ in headers}]
        assert (rec["path"], overridden) == (target[len("http://tools.example"):], list(headers)), rec
