//! Shared test data.
#![allow(
    dead_code,
    reason = "test support: not every test binary uses every helper"
)]

/// A pack that uses every construct of the grammar at least once.
pub const EVERYTHING: &str = r#"
# header comment
pack "everything" {
  version "2.1.0"
  mode warn
  default allow "open by default"
  unknown_session step_up "lost state" { group "oncall" timeout 2m }
}

let hosts = ["a.example", "*.b.example",]
let ports = [443, 8443]
let empty = []

class reads risk low readonly {
  when kind == mcp and tool in ["read_file", "list_dir"]
}
class writes risk critical {
  when not class reads and (tool glob "write_*" or tool prefix ["put", "post"])
}

intent task {
  description "a task"
  allow class [reads, writes]
  allow tool ["git_*"]
  allow host ["registry.npmjs.org"]
  allow data ["pii"]
  max actions 10
  max approvals 2
  max egress_bytes 10MiB
  max duration 30m
  outside defer "ask" { service "ctx" timeout 250ms }
}

tool "query_db" {
  args.sql: string,
  args.limit: number
  args.opts: object,
  args["odd key"]: bool,
}

rule all_fields mode audit {
  when operation == "tools/call" and resource present and prompt present
    and target.host in hosts and target.port in ports and target.path prefix "/api"
    and target.query != "" and target.scheme == "https" and target.server == "srv"
    and identity.agent == "bot" and identity.human_auth == jwt and identity.workload_auth != none
    and header.x-api-key present and header["content-type"] glob "application/*"
    and request.size <= 64KiB and risk.secrets == true and risk.data_classes contains "pii"
    and session.id present and trace.id present and intent == "task"
    and session.actions >= 3 and session.egress_bytes < 1MB and session.approvals > 0
    and session.elapsed > 15m and session.drift >= 0.5
  deny "everything"
}

rule session_preds {
  when session.tainted("secret") or session.used("fetch_url") or session.seen(reads)
    or session.count(tool "git_push", within 10m) >= 3 or session.count(class writes, within 1h) < 2
    or intent.outside or true or false
  allow "preds" then taint "x", revoke tool "deploy", revoke tool, revoke class writes, read_only, kill
}

rule args_tests {
  when args.sql matches "(?i)select .*" and args.limit is number and len(args.sql) < 1000
    and args.opts.deep[0]["k"] == -1.5 and args present
  modify "clamp" { clamp args.limit 1..100; redact args.sql drop args.opts
    redact_secrets; strip_header "authorization"; set_header "x-a" "b"; remove_tools ["admin_*"] }
}
"#;
