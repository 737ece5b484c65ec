//! Fuzz request normalization (MCP JSON-RPC and plain HTTP): it must never panic, and the
//! result must not depend on how the body was split into chunks.
//!
//! Input layout: byte 0 picks options (bit 0: batches allowed, bit 1: inspect HTTP bodies,
//! bit 2: feed the 2026-07-28 routing headers), byte 1 is a split stride; the rest is the body.
//! The body's first line (up to 64 bytes) is also used as the raw `:path` and authority for the
//! HTTP normalizer, so hostile targets are fuzzed too.
#![no_main]

use bundle::verdict::{Modification, PathSegment};
use filter_core::normalize::{
    BodyBuffer, NormalizeConfig, RequestHead, Route, apply_http_modifications, apply_modifications,
    needs_body, normalize_http, normalize_mcp, normalize_mcp_headers_only, route,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&stride, body)) = rest.split_first() else {
        return;
    };
    let cfg = NormalizeConfig {
        allow_batches: flags & 1 != 0,
        inspect_http_bodies: flags & 2 != 0,
        max_body_bytes: 64 * 1024,
        ..NormalizeConfig::default()
    };
    let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    if flags & 4 != 0 {
        headers.push(("mcp-method".to_owned(), "tools/call".to_owned()));
        headers.push(("mcp-name".to_owned(), "=?base64?YWRk?=".to_owned()));
    }
    let head = RequestHead {
        method: "POST".into(),
        scheme: "http".into(),
        authority: "workbench.local".into(),
        path: "/mcp".into(),
        headers,
    };

    // Whole body vs. the same body pushed in chunks.
    let whole = normalize_mcp(&head, body, &cfg);
    let mut buf = BodyBuffer::new(cfg.max_body_bytes);
    let step = usize::from(stride).max(1);
    let mut refused = false;
    for chunk in body.chunks(step) {
        if buf.push(chunk).is_err() {
            refused = true;
            break;
        }
    }
    if !refused {
        assert_eq!(whole, normalize_mcp(&head, buf.as_bytes(), &cfg));
    }

    // A normalized body must survive every rewrite without a panic.
    if let Ok(req) = &whole {
        let mods = [
            Modification::RedactSecrets,
            Modification::RedactArg {
                path: vec![PathSegment::Key("a".into())],
            },
            Modification::DropArg {
                path: vec![PathSegment::Index(0)],
            },
            Modification::ClampArg {
                path: vec![PathSegment::Key("b".into())],
                min: 0.0,
                max: 1.0,
            },
        ];
        for i in 0..req.messages.len() {
            let _ = apply_modifications(body, i, &mods);
        }
    }
    let _ = apply_http_modifications(body, &[Modification::RedactSecrets]);

    // The body as an egress form (its fields become arguments).
    let form_cfg = NormalizeConfig {
        inspect_http_bodies: true,
        max_body_bytes: 64 * 1024,
        ..NormalizeConfig::default()
    };
    let form_head = RequestHead {
        method: "POST".into(),
        scheme: "https".into(),
        authority: "api.example".into(),
        path: "/x".into(),
        headers: vec![(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned(),
        )],
    };
    let _ = normalize_http(&form_head, Some(body), &form_cfg);
    let multipart_head = RequestHead {
        headers: vec![(
            "content-type".to_owned(),
            "multipart/form-data; boundary=XyZ".to_owned(),
        )],
        ..form_head
    };
    let _ = normalize_http(&multipart_head, Some(body), &form_cfg);

    // Hostile request targets.
    let line = body.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(&line[..line.len().min(64)]).into_owned();
    for (method, authority, path) in [
        ("GET", line.as_str(), "/x"),
        ("POST", "h", line.as_str()),
        ("CONNECT", line.as_str(), ""),
        ("GET", "h", line.as_str()),
    ] {
        let h = RequestHead {
            method: method.into(),
            scheme: "https".into(),
            authority: authority.into(),
            path: path.into(),
            headers: vec![],
        };
        let r = route(&h, &cfg);
        let _ = needs_body(&h, r, &cfg);
        match r {
            Route::McpStream | Route::McpDelete => {
                let _ = normalize_mcp_headers_only(&h, r, &cfg);
            }
            _ => {
                let _ = normalize_http(&h, Some(body), &cfg);
            }
        }
    }
});
