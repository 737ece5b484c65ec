"""Portcullis approval service: the page a STEP_UP elicitation points at.

The filter (Envoy) tells it about a pending action (``POST /api/elicitations``) and, on the
client's retry, asks for the outcome (``GET /api/elicitations/<id>``). Approvers sign in from a
configured list (names with scrypt password hashes and their groups), read what the action is,
and approve or deny. Approving mints the signed approval token by running ``policyc approve``
with the group's approver key: the token format has one implementation, in Rust
(``bundle::approval``). Every decision is appended to a JSON-lines log.

Run:  python approver/approver.py serve --config approver/config.json
Hash: python approver/approver.py hash-password   (reads the password from stdin)

The service is trusted for nothing its signature does not prove: the filter verifies the token
against the approver public keys in its own configuration.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

# Bounds: the service keeps at most this many elicitations (oldest expired first, then oldest).
MAX_ELICITATIONS = 1000
MAX_NOTICE_BYTES = 256 * 1024
SESSION_COOKIE = "portcullis_approver"
PRELOGIN_COOKIE = "portcullis_approver_pre"
SESSION_TTL_S = 8 * 3600
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


# -- passwords -----------------------------------------------------------------------------------

def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$<salt b64>$<hash b64>`` for ``password``."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a ``hash_password`` line (constant-time compare)."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(base64.b64decode(digest)))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


# -- configuration -------------------------------------------------------------------------------

@dataclass
class Approver:
    name: str
    groups: list[str]
    password_scrypt: str


@dataclass
class Config:
    public_url: str
    policyc: str
    groups: dict[str, Path]  # group -> approver secret key file
    approvers: dict[str, Approver]
    decision_log: Path
    ttl_s: int = 900
    session_secret: bytes = b""
    secure_cookies: bool = False
    defer_group: str | None = None

    @classmethod
    def load(cls, path: Path) -> Config:
        raw = json.loads(path.read_text())
        allowed = {"public_url", "policyc", "groups", "approvers", "decision_log", "ttl_s", "session_secret_env",
                   "defer_group"}
        unknown = set(raw) - allowed
        if unknown:
            raise SystemExit(f"approver config: unknown keys {sorted(unknown)}")
        base = path.parent
        groups = {}
        for g, spec in raw["groups"].items():
            if set(spec) != {"key_file"}:
                raise SystemExit(f"approver config: groups.{g} takes exactly `key_file`")
            groups[g] = (base / spec["key_file"]).resolve()
        approvers = {}
        for a in raw["approvers"]:
            if set(a) != {"name", "groups", "password_scrypt"}:
                raise SystemExit("approver config: an approver has exactly `name`, `groups`, `password_scrypt`")
            if not a["password_scrypt"].startswith("scrypt$"):
                raise SystemExit(f"approver config: `{a['name']}` has no scrypt hash (no plaintext passwords)")
            for g in a["groups"]:
                if g not in groups:
                    raise SystemExit(f"approver config: `{a['name']}` names unknown group `{g}`")
            approvers[a["name"]] = Approver(a["name"], list(a["groups"]), a["password_scrypt"])
        secret_env = raw.get("session_secret_env")
        secret = os.environ.get(secret_env, "").encode() if secret_env else b""
        public_url = raw["public_url"].rstrip("/")
        defer_group = raw.get("defer_group")
        if defer_group is not None and defer_group not in groups:
            raise SystemExit(f"approver config: defer_group `{defer_group}` is not a configured group")
        return cls(defer_group=defer_group, public_url=public_url, policyc=str((base / raw["policyc"]).resolve()), groups=groups,
                   approvers=approvers, decision_log=(base / raw["decision_log"]).resolve(),
                   ttl_s=int(raw.get("ttl_s", 900)), session_secret=secret or secrets.token_bytes(32),
                   secure_cookies=public_url.startswith("https://"))


# -- state ---------------------------------------------------------------------------------------

@dataclass
class Elicitation:
    notice: dict[str, Any]
    received: float
    status: str = "pending"  # pending | approved | denied
    token: str | None = None
    by: str | None = None
    at: str | None = None
    reason: str = ""


@dataclass
class State:
    cfg: Config
    items: dict[str, Elicitation] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, notice: dict[str, Any]) -> None:
        with self.lock:
            now = time.time()
            if len(self.items) >= MAX_ELICITATIONS:
                for k in [k for k, e in self.items.items() if e.notice.get("expires_at", 0) < now]:
                    del self.items[k]
            while len(self.items) >= MAX_ELICITATIONS:
                del self.items[min(self.items, key=lambda k: self.items[k].received)]
            eid = notice["elicitation_id"]
            if eid not in self.items:
                self.items[eid] = Elicitation(notice=notice, received=now)

    def log(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True)
        with self.lock, self.cfg.decision_log.open("a") as f:
            f.write(line + "\n")
        print(f"approver: {line}", flush=True)


def utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# -- signed cookies and CSRF ---------------------------------------------------------------------

def _sign(secret: bytes, payload: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload, sort_keys=True).encode()).decode().rstrip("=")
    mac = hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def _unsign(secret: bytes, value: str | None) -> dict[str, Any] | None:
    if not value or "." not in value:
        return None
    body, mac = value.rsplit(".", 1)
    if not hmac.compare_digest(mac, hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()):
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        return None
    if not isinstance(payload, dict) or payload.get("exp", 0) < time.time():
        return None
    return payload


def csrf_token(secret: bytes, sid: str) -> str:
    return hmac.new(secret, f"csrf\0{sid}".encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret: bytes, sid: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(csrf_token(secret, sid), str(given))


# -- pages ---------------------------------------------------------------------------------------

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;justify-content:space-between}
main{max-width:980px;margin:24px auto;padding:0 16px}
section{background:#fff;border:1px solid #d8dce3;border-radius:8px;padding:16px 20px;margin-bottom:16px}
h1{font-size:22px;margin:0 0 8px} h2{font-size:16px;margin:0 0 10px;color:#3a4356}
table{border-collapse:collapse;width:100%} td,th{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f3;vertical-align:top}
th{width:200px;color:#5a6478;font-weight:600} pre{background:#f7f8fa;padding:10px;border-radius:6px;overflow:auto;margin:0}
.status{display:inline-block;padding:2px 10px;border-radius:12px;font-weight:600}
.pending{background:#fff4d6;color:#7a5600} .approved{background:#dcf5e3;color:#106b2e} .denied{background:#fde2e2;color:#9b1c1c}
.warn{background:#fde2e2;border-color:#f3b4b4} button{font-size:15px;padding:8px 18px;border-radius:6px;border:0;cursor:pointer;margin-right:8px}
.approve{background:#17803d;color:#fff} .deny{background:#b42318;color:#fff} input[type=text],input[type=password]{padding:6px;width:320px}
code{font-size:13px}
"""


def page(title: str, body: str, who: str | None = None) -> HTMLResponse:
    right = (f'<form method="post" action="/logout" style="margin:0">signed in as <b>{html.escape(who)}</b> '
             f'<button style="padding:2px 10px">sign out</button></form>') if who else ""
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{STYLE}</style></head><body data-ready='1'><header><b>Portcullis approvals</b>{right}</header>"
           f"<main>{body}</main></body></html>")
    return HTMLResponse(doc, headers={"content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                      "form-action 'self'; frame-ancestors 'none'",
                                      "x-frame-options": "DENY", "referrer-policy": "no-referrer",
                                      "cache-control": "no-store"})


def esc(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def rows(pairs: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs) + "</table>"


def principal(p: dict[str, Any] | None) -> str:
    if not p or not p.get("id"):
        return "<i>unknown</i>"
    return f"<code>{esc(p['id'])}</code> ({esc(p.get('auth', ''))})"


def render_elicitation(e: Elicitation, eid: str, approver: Approver, csrf: str) -> str:
    n = e.notice
    a = n.get("action", {})
    ident = n.get("identity", {}) or {}
    st = n.get("session_state", {}) or {}
    untrusted = n.get("untrusted_source", {}) or {}
    effect = n.get("expected_effect", {}) or {}
    recent = st.get("recent_actions", []) or []
    taints = st.get("taints", []) or []
    target = a.get("target", {}) or {}
    risk = a.get("risk", {}) or {}
    status = f'<span class="status {esc(e.status)}" id="status">{esc(e.status)}</span>'
    deferred = ("<p id='kind'><b>Deferred action</b> (DEFER): approving lets the agent's retry of this exact "
                "action through once; no token is minted.</p>") if n.get("kind") == "defer" else ""
    parts = [f"<section>{deferred}<h1>{esc(a.get('operation'))} <code>{esc(a.get('tool') or target.get('host'))}</code> {status}</h1>"
             f"<p>{esc(n.get('reason'))} <small>(rule <code>{esc(n.get('rule'))}</code>)</small></p>"
             + rows([("expected effect", esc(effect.get("summary"))),
                     ("session effects", esc(", ".join(json.dumps(x) for x in effect.get("session_effects", [])) or "none")),
                     ("approver group", f"<code>{esc(n.get('group'))}</code>"),
                     ("expires", esc(utc(n.get("expires_at", 0)))),
                     ("action digest", f"<code>{esc(n.get('digest'))}</code>")]) + "</section>"]
    parts.append("<section id='arguments'><h2>Action and parameters</h2>"
                 + rows([("kind / operation", esc(f"{a.get('kind')} {a.get('operation')}")),
                         ("target", esc(json.dumps(target, sort_keys=True))),
                         ("arguments", f"<pre>{esc(json.dumps(a.get('arguments'), indent=2, sort_keys=True))}</pre>"),
                         ("secret-like values", "yes" if risk.get("secrets") else "no"),
                         ("data classes in arguments", esc(", ".join(risk.get("data_classes", [])) or "none"))])
                 + "</section>")
    parts.append("<section id='identity'><h2>Who is asking</h2>"
                 + rows([("agent", principal(ident.get("agent"))), ("human", principal(ident.get("human"))),
                         ("workload", principal(ident.get("workload"))),
                         ("principal", f"<code>{esc(n.get('principal') or '')}</code>"),
                         ("session", f"<code>{esc(n.get('session'))}</code>"),
                         ("intent", f"<code>{esc(n.get('intent') or 'none declared')}</code>")]) + "</section>")
    recent_rows = "".join(f"<tr><td>{esc(utc(r.get('at_ms', 0) / 1000))}</td><td><code>{esc(r.get('subject'))}</code></td>"
                          f"<td>{esc(', '.join(r.get('classes', [])))}</td></tr>" for r in recent)
    taint_rows = "".join(f"<li><code>{esc(t.get('taint'))}</code> set by rule(s) {esc(', '.join(t.get('set_by_rules', [])) or '?')}</li>"
                         for t in taints)
    parts.append(f"<section id='session'><h2>The session so far ({esc(st.get('actions'))} actions, "
                 f"{esc(st.get('approvals'))} approvals{', read-only' if st.get('read_only') else ''})</h2>"
                 f"<table><tr><th>when</th><th>subject</th><th>classes</th></tr>{recent_rows or '<tr><td colspan=3>none</td></tr>'}</table>"
                 f"<h2 style='margin-top:12px'>Taints</h2><ul>{taint_rows or '<li>none</li>'}</ul></section>")
    cls = "warn" if untrusted.get("present") else ""
    parts.append(f"<section id='untrusted' class='{cls}'><h2>Untrusted content</h2>"
                 + rows([("in the session", "yes" if untrusted.get("present") else "no"),
                         ("from", esc("; ".join(untrusted.get("sources", [])) or "nothing untrusted was read"))])
                 + "</section>")
    if e.status != "pending":
        parts.append(f"<section id='decision'><h2>Decision</h2>{esc(e.status)} by <b>{esc(e.by)}</b> at {esc(e.at)}"
                     f"{(': ' + esc(e.reason)) if e.reason else ''}</section>")
    elif n.get("group") not in approver.groups:
        parts.append(f"<section id='decision' class='warn'>You are not in group <code>{esc(n.get('group'))}</code>: "
                     "you cannot decide this action.</section>")
    else:
        parts.append(f"<section id='decision'><h2>Decide</h2><form method='post' action='/approve/{esc(eid)}/decide'>"
                     f"<input type='hidden' name='csrf' value='{esc(csrf)}'>"
                     "<p><input type='text' name='reason' placeholder='reason (optional)' maxlength='300'></p>"
                     "<button class='approve' name='decision' value='approve' id='approve'>Approve</button>"
                     "<button class='deny' name='decision' value='deny' id='deny'>Deny</button></form></section>")
    return "".join(parts)


# -- application ---------------------------------------------------------------------------------

def build_app(cfg: Config) -> Starlette:
    state = State(cfg)
    secret = cfg.session_secret

    def signed_in(request: Request) -> tuple[Approver, str] | None:
        s = _unsign(secret, request.cookies.get(SESSION_COOKIE))
        if not s or s.get("name") not in cfg.approvers:
            return None
        return cfg.approvers[s["name"]], s["sid"]

    def set_cookie(resp: Response, name: str, value: str, max_age: int) -> None:
        resp.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict", secure=cfg.secure_cookies,
                        path="/")

    def safe_next(nxt: str | None) -> str:
        return nxt if nxt and nxt.startswith("/approve/") and "//" not in nxt else "/"

    async def api_create(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_NOTICE_BYTES:
            return JSONResponse({"error": "too large"}, status_code=413)
        try:
            notice = json.loads(body)
            eid = notice["elicitation_id"]
            assert isinstance(eid, str) and eid.isalnum() and len(eid) <= 64
            assert notice["group"] in cfg.groups
        except (ValueError, KeyError, TypeError, AssertionError):
            return JSONResponse({"error": "not an elicitation notice for a configured group"}, status_code=400)
        state.add(notice)
        state.log({"event": "pending", "elicitation_id": eid, "digest": notice.get("digest"),
                   "group": notice.get("group"), "at": utc(time.time()), "rule": notice.get("rule")})
        return JSONResponse({"elicitation_id": eid, "url": f"{cfg.public_url}/approve/{eid}"}, status_code=201)

    async def api_get(request: Request) -> Response:
        e = state.items.get(request.path_params["eid"])
        if e is None or e.notice.get("kind") == "defer":
            return JSONResponse({"status": "unknown"}, status_code=404)
        if e.status == "approved":
            return JSONResponse({"status": "approved", "token": e.token, "by": e.by, "at": e.at})
        if e.status == "denied":
            return JSONResponse({"status": "denied", "by": e.by, "at": e.at, "reason": e.reason})
        return JSONResponse({"status": "pending"})

    async def defer_decide(request: Request) -> Response:
        """The DEFER context service API (`context_services.<name>.path`): the filter waits for
        this answer for the rule's timeout (milliseconds), so no human can decide inside it. An
        action is held for a human: the first call registers it on the page and answers deny
        with the page's URL; an approver decides there; the agent's retry of the same action
        (same digest) gets that decision, an allow once."""
        if cfg.defer_group is None:
            return JSONResponse({"decision": "deny", "reason": "this approval service decides no deferred actions"})
        body = await request.body()
        try:
            d = json.loads(body[:MAX_NOTICE_BYTES])
            digest = d["digest"]
            assert isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
        except (ValueError, KeyError, TypeError, AssertionError):
            return JSONResponse({"decision": "deny", "reason": "not a DEFER call-out"})
        eid = "d" + hashlib.sha256(f"defer\0{digest}".encode()).hexdigest()[:31]
        now = time.time()
        with state.lock:
            e = state.items.get(eid)
            if e is not None and e.notice.get("expires_at", 0) < now:
                del state.items[eid]
                e = None
            if e is not None and e.status == "approved":
                del state.items[eid]  # one allow per decision
        if e is not None and e.status == "approved":
            state.log({"event": "defer_allowed", "elicitation_id": eid, "digest": digest, "by": e.by, "at": utc(now)})
            return JSONResponse({"decision": "allow", "reason": f"approved by {e.by} at {e.at}"})
        if e is not None and e.status == "denied":
            return JSONResponse({"decision": "deny", "reason": f"denied by {e.by} at {e.at}"
                                 + (f": {e.reason}" if e.reason else "")})
        if e is None:
            action = d.get("action") or {}
            keys = action.get("arg_keys") or []
            state.add({"elicitation_id": eid, "kind": "defer", "digest": digest, "group": cfg.defer_group,
                       "expires_at": now + cfg.ttl_s, "rule": d.get("rule"), "reason": d.get("reason"),
                       "session": d.get("session"), "identity": d.get("identity"), "intent": d.get("intent"),
                       "action": {"kind": action.get("kind"), "operation": action.get("operation"),
                                  "tool": action.get("tool"), "target": action.get("target"),
                                  "arguments": {k: "(value not sent with a DEFER)" for k in keys}},
                       "expected_effect": {"summary": f"{action.get('operation')} `{action.get('tool') or ''}` "
                                                      "(deferred by the policy)"}})
            state.log({"event": "pending", "kind": "defer", "elicitation_id": eid, "digest": digest,
                       "group": cfg.defer_group, "at": utc(now), "rule": d.get("rule")})
        return JSONResponse({"decision": "deny", "reason": f"held for a human in group {cfg.defer_group}: "
                             f"{cfg.public_url}/approve/{eid} (retry the same action after approval)"})

    async def login_form(request: Request) -> Response:
        pre = secrets.token_hex(16)
        nxt = safe_next(request.query_params.get("next"))
        err = request.query_params.get("error")
        body = ("<section><h1>Sign in</h1>" + ("<p class='status denied'>wrong name or password</p>" if err else "")
                + f"<form method='post' action='/login'><input type='hidden' name='csrf' value='{csrf_token(secret, pre)}'>"
                f"<input type='hidden' name='next' value='{esc(nxt)}'>"
                "<p><input type='text' name='name' id='name' placeholder='name' autocomplete='username'></p>"
                "<p><input type='password' name='password' id='password' placeholder='password' autocomplete='current-password'></p>"
                "<button class='approve' id='signin'>Sign in</button></form></section>")
        resp = page("Sign in", body)
        set_cookie(resp, PRELOGIN_COOKIE, _sign(secret, {"pre": pre, "exp": time.time() + 600}), 600)
        return resp

    async def login(request: Request) -> Response:
        form = await request.form()
        pre = _unsign(secret, request.cookies.get(PRELOGIN_COOKIE))
        if not pre or not csrf_ok(secret, pre["pre"], form.get("csrf")):
            return PlainTextResponse("stale or forged sign-in form", status_code=403)
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        nxt = safe_next(str(form.get("next", "")))
        a = cfg.approvers.get(name)
        if a is None or not check_password(password, a.password_scrypt):
            state.log({"event": "sign_in_failed", "name": name[:64], "at": utc(time.time())})
            return RedirectResponse(f"/login?error=1&next={quote(nxt)}", status_code=303)
        resp = RedirectResponse(nxt, status_code=303)
        sid = secrets.token_hex(16)
        set_cookie(resp, SESSION_COOKIE, _sign(secret, {"name": name, "sid": sid, "exp": time.time() + SESSION_TTL_S}),
                   SESSION_TTL_S)
        resp.delete_cookie(PRELOGIN_COOKIE, path="/")
        state.log({"event": "sign_in", "name": name, "at": utc(time.time())})
        return resp

    async def logout(request: Request) -> Response:
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    async def show(request: Request) -> Response:
        eid = request.path_params["eid"]
        who = signed_in(request)
        if who is None:
            return RedirectResponse(f"/login?next={quote('/approve/' + eid)}", status_code=303)
        approver, sid = who
        e = state.items.get(eid)
        if e is None:
            return page("Unknown", "<section><h1>No such pending action</h1></section>", approver.name)
        resp = page("Approve action", render_elicitation(e, eid, approver, csrf_token(secret, sid)), approver.name)
        if e.notice.get("group") not in approver.groups:
            resp.status_code = 403
        return resp

    async def decide(request: Request) -> Response:
        eid = request.path_params["eid"]
        who = signed_in(request)
        if who is None:
            return PlainTextResponse("sign in first", status_code=401)
        approver, sid = who
        form = await request.form()
        if not csrf_ok(secret, sid, form.get("csrf")):
            return PlainTextResponse("forged or stale form (CSRF token)", status_code=403)
        e = state.items.get(eid)
        if e is None:
            return PlainTextResponse("no such pending action", status_code=404)
        group = e.notice.get("group")
        if group not in approver.groups:
            state.log({"event": "refused", "elicitation_id": eid, "by": approver.name, "group": group,
                       "at": utc(time.time()), "why": "not in group"})
            return PlainTextResponse(f"{approver.name} is not in group {group}", status_code=403)
        decision = form.get("decision")
        reason = str(form.get("reason", ""))[:300]
        now = time.time()
        if e.status != "pending":
            return RedirectResponse(f"/approve/{eid}", status_code=303)
        if decision == "approve" and e.notice.get("kind") == "defer":
            # A DEFER's context service answers allow or deny; there is no token to mint.
            e.status = "approved"
        elif decision == "approve":
            remaining = int(e.notice.get("expires_at", 0) - now)
            if remaining <= 0:
                return PlainTextResponse("this request expired; the agent must ask again", status_code=410)
            ttl = max(1, min(cfg.ttl_s, remaining))
            proc = subprocess.run([cfg.policyc, "approve", "--digest", e.notice["digest"], "--group", group,
                                   "--key", str(cfg.groups[group]), "--ttl", f"{ttl}s"],
                                  capture_output=True, text=True, timeout=30)
            if proc.returncode != 0:
                state.log({"event": "mint_failed", "elicitation_id": eid, "by": approver.name, "at": utc(now),
                           "error": proc.stderr.strip()[-500:]})
                return PlainTextResponse("could not mint the approval token", status_code=500)
            e.token, e.status = proc.stdout.strip(), "approved"
        elif decision == "deny":
            e.status = "denied"
        else:
            return PlainTextResponse("decision must be approve or deny", status_code=400)
        e.by, e.at, e.reason = approver.name, utc(now), reason
        state.log({"event": e.status, "elicitation_id": eid, "digest": e.notice.get("digest"), "group": group,
                   "by": approver.name, "at": e.at, "reason": reason, "rule": e.notice.get("rule"),
                   "tool": (e.notice.get("action") or {}).get("tool"), "session": e.notice.get("session")})
        return RedirectResponse(f"/approve/{eid}", status_code=303)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/api/elicitations", api_create, methods=["POST"]),
        Route("/api/elicitations/{eid:str}", api_get, methods=["GET"]),
        Route("/decide", defer_decide, methods=["POST"]),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/approve/{eid:str}", show, methods=["GET"]),
        Route("/approve/{eid:str}/decide", decide, methods=["POST"]),
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve the page and the API")
    s.add_argument("--config", type=Path, required=True)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8700)
    sub.add_parser("hash-password", help="print the scrypt line for a password read from stdin")
    args = ap.parse_args(argv)
    if args.cmd == "hash-password":
        pw = sys.stdin.readline().rstrip("\n")
        if not pw:
            print("empty password", file=sys.stderr)
            return 2
        print(hash_password(pw))
        return 0
    cfg = Config.load(args.config)
    if urlsplit(cfg.public_url).scheme not in ("http", "https"):
        raise SystemExit("public_url must be http(s)")
    uvicorn.run(build_app(cfg), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
