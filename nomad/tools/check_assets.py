#!/usr/bin/env python3
"""Structural checks of wafleet's deployment assets (run by scripts/test.d/deploy).

Nomad and Consul binaries cannot run on the build machines, so this parses every HCL file with
python-hcl2 (without evaluating expressions: "${NOMAD_ALLOC_INDEX}" stays a literal) and checks
the properties the fleet depends on (issue 6, docs/deployment.md):

* every .hcl parses; every job declares the same shared variables; the vars files set only
  declared variables (Nomad rejects undeclared ones, hashicorp/nomad#16136);
* worker job: count = shards, --shard ${NOMAD_ALLOC_INDEX}, host volume on the data volume and
  mounted where --data points, update max_parallel 1 + auto_revert + health from checks with no
  canaries, an http check on /readyz, kill_timeout >= --drain-grace-secs + margin and <= the
  client's max_kill_timeout (30 s), shutdown_delay set, distinct_hosts, restart/reschedule,
  Nomad service named differently from the worker's own, secrets only from Nomad Variables;
* router job: >= 2 routers on distinct hosts, Consul DNS reachable, checks; backup job: hourly
  periodic batch without overlap running `wafleet backup`;
* every volume source is a host volume the Ansible nomad role declares;
* every flag passed to wafleet is in the COMMON.md contract and, with --wafleet-bin, in
  `wafleet <cmd> --help` (skipped, with a message, for a command that is still a stub);
* every wafleet_* metric in the alert rules and the dashboard is in nomad/monitoring/metrics.txt;
  Prometheus discovers the services the jobs register; the dashboard is valid JSON;
* the Consul configs, policies and initial shard map are consistent;
* every inventory can place its environment's jobs: distinct_hosts means `shards` worker hosts
  plus one spare (N+1) and `routers` router hosts.
"""

import argparse
import json
import os
import re
import subprocess
import sys

import hcl2
import yaml
from hcl2.utils import SerializationOptions

ROOT = os.environ.get("WAFLEET_ASSETS_ROOT") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPTS = SerializationOptions(with_comments=False, explicit_blocks=False,
                            strip_string_quotes=True, preserve_heredocs=False)

# The CLI contract (COMMON.md "CLI flags"); global flags are accepted by every subcommand.
CONTRACT = {
    "worker": {"--shard", "--data", "--listen", "--advertise", "--kv-prefix",
               "--session-ttl-secs", "--lock-delay-secs", "--drain-grace-secs", "--wa-url",
               "--restore-concurrency", "--qr-timeout-secs"},
    "router": {"--listen", "--kv-prefix", "--dns-cache-ttl-ms", "--upstream-timeout-secs",
               "--table-file"},
    "backup": {"--data", "--dest", "--keep"},
    "restore": {"--backup", "--data", "--workspace", "--session"},
    "consul-dev": {"--http", "--dns", "--acl-token", "--node", "--datacenter"},
}
GLOBAL_FLAGS = {"--log-format"}
# A crashed worker must serve again within this (issue 13 item 6) ...
HEAL_BUDGET_SECS = 20
# ... of which the restarted worker itself needs up to this (takeover, shard lock,
# registration, health, restore; measured in docs/chaos.md "Heal time").
WORKER_HEAL_SECS = 12
# Nomad client default max_kill_timeout; a larger kill_timeout is silently capped.
MAX_KILL_TIMEOUT_SECS = 30
# Time the worker needs after its drain grace to release locks and exit.
DRAIN_MARGIN_SECS = 3

failures = []
notes = []


def fail(msg):
    failures.append(msg)


def note(msg):
    notes.append(msg)


def check(cond, msg):
    if not cond:
        fail(msg)
    return cond


# === HCL helpers ===

def load_hcl(path):
    with open(path) as f:
        return hcl2.load(f, serialization_options=OPTS)


def body(d, key):
    """The single unlabelled block `key` of d (or {})."""
    v = d.get(key)
    if isinstance(v, list):
        return v[0] if v else {}
    return v or {}


def bodies(d, key):
    v = d.get(key) or []
    return v if isinstance(v, list) else [v]


def labelled(d, key):
    """[(label, body)] of the labelled blocks `key` of d."""
    out = []
    for item in bodies(d, key):
        for label, b in item.items():
            out.append((label, b))
    return out


def resolve(v, variables):
    """Substitutes ${var.x} with the variable's value (whole-string references keep the type)."""
    if isinstance(v, str):
        m = re.fullmatch(r"\$\{var\.(\w+)\}", v)
        if m:
            return variables.get(m.group(1), v)
        return re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables.get(m.group(1), m.group(0))), v)
    return v


def worker_memory_budget(values, defaults):
    """A worker's memory floor in MB: sessions_per_shard x session_memory_mb (measured PSS per
    session plus headroom, docs/deployment.md Sizing) + worker_overhead_mb, each taken from
    `values` (a vars file or the resolved job variables) or else from the job's defaults."""
    def get(name):
        v = values.get(name, defaults.get(name))
        check(isinstance(v, int) or (isinstance(v, str) and v.isdigit()),
              f"variable {name} must be a number to check the worker's memory (got {v!r})")
        return int(v) if v is not None and str(v).isdigit() else 0
    return get("sessions_per_shard") * get("session_memory_mb") + get("worker_overhead_mb")


def defaults_of(docs):
    """The worker job's variable defaults."""
    return {name: b.get("default") for name, b in
            declared_variables(docs["nomad/wafleet-worker.nomad.hcl"]).items()}


def secs(duration):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(duration))
    if not m:
        return None
    n, unit = int(m.group(1)), m.group(2)
    return {"ms": n / 1000, "s": n, "m": n * 60, "h": n * 3600}[unit]


def flag_value(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


# === loading ===

def all_hcl_files():
    out = []
    for top in ("nomad", "consul", "ansible"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                if f.endswith(".hcl") or f.endswith(".hcl.tmpl"):
                    out.append(os.path.join(dirpath, f))
    return sorted(out)


def job_files():
    return sorted(p for p in all_hcl_files() if p.endswith(".nomad.hcl"))


def declared_variables(doc):
    out = {}
    for item in bodies(doc, "variable"):
        for name, b in item.items():
            out[name] = b
    return out


def job_of(doc):
    (name, j), = labelled(doc, "job")
    return name, j


def tasks_of(job):
    for gname, g in labelled(job, "group"):
        for tname, t in labelled(g, "task"):
            yield gname, g, tname, t


# === checks ===

def check_parse():
    docs = {}
    for p in all_hcl_files():
        rel = os.path.relpath(p, ROOT)
        try:
            docs[rel] = load_hcl(p)
        except Exception as e:  # the parser raises several exception types
            fail(f"{rel}: does not parse: {e}")
    return docs


def check_variables(docs):
    jobs = {rel: d for rel, d in docs.items() if rel.endswith(".nomad.hcl")}
    sets = {rel: set(declared_variables(d)) for rel, d in jobs.items()}
    ref = sets.get("nomad/wafleet-worker.nomad.hcl", set())
    for rel, s in sets.items():
        check(s == ref, f"{rel}: declares {sorted(s ^ ref)} differently from the worker job "
                        "(every job declares the same shared variables)")
    envs = {}
    for rel, d in docs.items():
        if rel.startswith("nomad/vars/"):
            envs[rel] = d
            for k in d:
                check(k in ref, f"{rel}: sets undeclared variable {k} (Nomad rejects the file)")
            for k in ("wafleet_version", "shards", "datacenters"):
                check(k in d, f"{rel}: must set {k}")
            check(int(d.get("routers", 2)) >= 2, f"{rel}: routers must be >= 2")
            if "memory_mb" in d and "sessions_per_shard" in d:
                budget = worker_memory_budget(d, defaults_of(docs))
                check(int(d["memory_mb"]) >= budget,
                      f"{rel}: memory_mb {d['memory_mb']} < sessions_per_shard x session_memory_mb"
                      f" + worker_overhead_mb = {budget}")
                check(int(d.get("memory_max_mb", d["memory_mb"])) >= int(d["memory_mb"]),
                      f"{rel}: memory_max_mb below memory_mb")
    check({"nomad/vars/staging.vars.hcl", "nomad/vars/production.vars.hcl"} <= set(envs),
          "nomad/vars/ needs staging.vars.hcl and production.vars.hcl")
    defaults = {name: b.get("default") for name, b in
                declared_variables(docs["nomad/wafleet-worker.nomad.hcl"]).items()}
    return defaults, envs


def wafleet_invocations(job, variables):
    """[(task label, args)] of every task running the wafleet binary."""
    out = []
    for _, _, tname, t in tasks_of(job):
        cfg = body(t, "config")
        cmd = resolve(cfg.get("command", ""), variables)
        if cmd.endswith("/wafleet") or cmd == "wafleet":
            out.append((tname, [str(resolve(a, variables)) for a in cfg.get("args", [])]))
    return out


def check_no_inline_secrets(rel, text):
    for m in re.finditer(r"(?i)(token|secret|password)\s*=\s*\"([^\"$]{8,})\"", text):
        fail(f"{rel}: looks like an inline secret ({m.group(1)} = \"…\"); use Nomad Variables")
    for m in re.finditer(r"^\s*(CONSUL_HTTP_TOKEN|WAFLEET_ADMIN_TOKEN|WAFLEET_TOKEN_SECRET)\s*=\s*\"",
                         text, re.M):
        fail(f"{rel}: {m.group(1)} set in an env block; secrets come from the template")


def service_names(job):
    names = set()
    for _, g in labelled(job, "group"):
        for s in bodies(g, "service"):
            names.add(s.get("name"))
        for _, _, _, t in [(None, None, None, t) for _, t in labelled(g, "task")]:
            for s in bodies(t, "service"):
                names.add(s.get("name"))
    return names


def http_checks(svc):
    return [c for c in bodies(svc, "check") if c.get("type") == "http"]


def check_worker(doc, variables, host_volumes):
    rel = "nomad/wafleet-worker.nomad.hcl"
    name, job = job_of(doc)
    check(name == "wafleet-worker" and job.get("type") == "service", f"{rel}: service job wafleet-worker")
    up = body(job, "update")
    check(up.get("max_parallel") == 1, f"{rel}: update.max_parallel must be 1")
    check(up.get("auto_revert") is True, f"{rel}: update.auto_revert must be true")
    check(up.get("health_check", "checks") == "checks", f"{rel}: update.health_check must be checks")
    check(int(up.get("canary", 0)) == 0, f"{rel}: no canaries (a canary can never take the shard lock)")
    check(any(c.get("operator") == "distinct_hosts" and str(c.get("value")).lower() == "true"
              for c in bodies(job, "constraint")), f"{rel}: distinct_hosts constraint missing")
    (gname, g), = labelled(job, "group")
    check(g.get("count") == "${var.shards}", f"{rel}: group count must be var.shards")
    check(bodies(g, "restart") and bodies(g, "reschedule"), f"{rel}: restart and reschedule blocks")
    # Heal budget (issue 13 item 6): a crashed worker restarted in place serves again within
    # HEAL_BUDGET_SECS; Nomad waits restart.delay plus up to 25 % jitter before the restart.
    for r in bodies(g, "restart"):
        delay = secs(r.get("delay", "15s"))
        check(delay is not None and delay * 1.25 + WORKER_HEAL_SECS <= HEAL_BUDGET_SECS,
              f"{rel}: restart.delay {r.get('delay', '15s (default)')} x 1.25 + {WORKER_HEAL_SECS}s "
              f"(worker takeover and restore) exceeds the {HEAL_BUDGET_SECS}s heal budget")
        check(r.get("mode", "fail") in ("fail", "delay"), f"{rel}: restart.mode fail or delay")
    check(secs(g.get("shutdown_delay", "0s")) and secs(g["shutdown_delay"]) > 0,
          f"{rel}: shutdown_delay must be set")
    vols = dict(labelled(g, "volume"))
    for vname, v in vols.items():
        check(v.get("type") == "host", f"{rel}: volume {vname} must be a host volume")
        src = resolve(v.get("source"), variables)
        check(src in host_volumes, f"{rel}: volume source {src} is not a host_volume of "
                                   f"ansible (nomad_host_volumes: {sorted(host_volumes)})")
    svcs = bodies(g, "service")
    check(svcs, f"{rel}: a Nomad service block is needed for health")
    for s in svcs:
        check(s.get("name") not in ("wafleet-worker", None),
              f"{rel}: Nomad service must not be named wafleet-worker (the worker registers that itself)")
        check(any(c.get("path") == "/readyz" for c in http_checks(s)),
              f"{rel}: http check on /readyz missing")
        check("shard-${NOMAD_ALLOC_INDEX}" in (s.get("tags") or []), f"{rel}: tag shard-${{NOMAD_ALLOC_INDEX}}")
    inv = wafleet_invocations(job, variables)
    check(len(inv) == 1, f"{rel}: exactly one task runs wafleet")
    for tname, args in inv:
        t = dict(labelled(g, "task"))[tname]
        check(args[:1] == ["worker"], f"{rel}: task {tname} must run `wafleet worker`")
        check(flag_value(args, "--shard") == "${NOMAD_ALLOC_INDEX}", f"{rel}: --shard ${{NOMAD_ALLOC_INDEX}}")
        grace = int(flag_value(args, "--drain-grace-secs") or 25)
        kt = secs(t.get("kill_timeout", "5s"))
        check(kt is not None and kt >= grace + DRAIN_MARGIN_SECS,
              f"{rel}: kill_timeout {t.get('kill_timeout')} < drain grace {grace}s + {DRAIN_MARGIN_SECS}s")
        check(kt is not None and kt <= MAX_KILL_TIMEOUT_SECS,
              f"{rel}: kill_timeout {t.get('kill_timeout')} exceeds the client max_kill_timeout (30s)")
        check(t.get("kill_signal") in ("SIGINT", "SIGTERM"), f"{rel}: kill_signal SIGINT or SIGTERM")
        mounts = {m.get("destination"): m for m in bodies(t, "volume_mount")}
        data = flag_value(args, "--data")
        check(data in mounts and mounts[data].get("volume") in vols and not mounts[data].get("read_only"),
              f"{rel}: --data {data} must be the writable mount of a host volume")
        check(any("nomadVar" in tp.get("data", "") for tp in bodies(t, "template")),
              f"{rel}: secrets must come from a nomadVar template")
        res = body(t, "resources")
        mem = resolve(res.get("memory"), variables)
        budget = worker_memory_budget(variables, variables)
        check(isinstance(mem, int) and mem >= budget,
              f"{rel}: memory {mem} must cover sessions_per_shard x session_memory_mb"
              f" + worker_overhead_mb = {budget} MB")
        env = body(t, "env")
        check(env.get("WAFLEET_CONSUL_DNS") and env.get("CONSUL_HTTP_ADDR"),
              f"{rel}: CONSUL_HTTP_ADDR and WAFLEET_CONSUL_DNS must point at the local agent")
        # Without fallbacks a local agent restart past the fencing deadline fences the worker.
        check(env.get("WAFLEET_CONSUL_FALLBACK_ADDRS")
              or any("WAFLEET_CONSUL_FALLBACK_ADDRS" in tp.get("data", "") for tp in bodies(t, "template")),
              f"{rel}: WAFLEET_CONSUL_FALLBACK_ADDRS (other Consul agents or servers) must be set")
    return inv, service_names(job)


def check_router(doc, variables, envs):
    rel = "nomad/wafleet-router.nomad.hcl"
    name, job = job_of(doc)
    check(name == "wafleet-router" and job.get("type") in ("service", "system"), f"{rel}: service or system job")
    (gname, g), = labelled(job, "group")
    if job.get("type") == "service":
        count = resolve(g.get("count"), variables)
        check(isinstance(count, int) and count >= 2, f"{rel}: at least two routers (count {count})")
        check(any(c.get("operator") == "distinct_hosts" for c in bodies(job, "constraint")),
              f"{rel}: distinct_hosts constraint missing")
    for s in bodies(g, "service"):
        check(s.get("name") not in ("wafleet-router", None),
              f"{rel}: Nomad service must not be named wafleet-router (the router registers that itself)")
        check(any(c.get("path") == "/readyz" for c in http_checks(s)), f"{rel}: http check on /readyz missing")
    inv = wafleet_invocations(job, variables)
    for tname, args in inv:
        t = dict(labelled(g, "task"))[tname]
        check(args[:1] == ["router"], f"{rel}: task {tname} must run `wafleet router`")
        check(body(t, "env").get("WAFLEET_CONSUL_DNS"), f"{rel}: WAFLEET_CONSUL_DNS (Consul DNS) must be set")
        kt = secs(t.get("kill_timeout", "5s"))
        check(kt is not None and kt <= MAX_KILL_TIMEOUT_SECS, f"{rel}: kill_timeout above 30s")
    return inv, service_names(job)


def check_backup(doc, variables, host_volumes):
    rel = "nomad/wafleet-backup.nomad.hcl"
    name, job = job_of(doc)
    check(job.get("type") == "batch", f"{rel}: batch job")
    per = body(job, "periodic")
    crons = per.get("crons") or ([per["cron"]] if "cron" in per else [])
    check(crons == ["0 * * * *"], f"{rel}: periodic hourly (crons = [\"0 * * * *\"]), got {crons}")
    check(per.get("prohibit_overlap") is True, f"{rel}: prohibit_overlap = true")
    (gname, g), = labelled(job, "group")
    for vname, v in labelled(g, "volume"):
        src = resolve(v.get("source"), variables)
        check(src in host_volumes, f"{rel}: volume source {src} is not an ansible host_volume")
    inv = wafleet_invocations(job, variables)
    check(inv and inv[0][1][:1] == ["backup"], f"{rel}: must run `wafleet backup`")
    return inv, service_names(job)


def check_prometheus(doc, variables, host_volumes, registered):
    rel = "nomad/monitoring/prometheus.nomad.hcl"
    name, job = job_of(doc)
    (gname, g), = labelled(job, "group")
    for vname, v in labelled(g, "volume"):
        src = resolve(v.get("source"), variables)
        check(src in host_volumes, f"{rel}: volume source {src} is not an ansible host_volume")
    text = open(os.path.join(ROOT, rel)).read()
    services = set(re.findall(r'services:\s*\["([^"]+)"\]', text))
    check("consul_sd_configs" in text, f"{rel}: Prometheus must use consul_sd_configs")
    for s in ("wafleet-worker-http", "wafleet-router-http"):
        check(s in services, f"{rel}: Prometheus must discover {s}")
        check(s in registered, f"{rel}: discovers {s}, which no job registers")
    check("/etc/wafleet/prometheus/rules/" in text, f"{rel}: rule_files must load the rules volume")


def check_flags(all_invocations, wafleet_bin):
    helps = {}
    global_flags = set(GLOBAL_FLAGS)
    if wafleet_bin:
        top = subprocess.run([wafleet_bin, "--help"], capture_output=True, text=True, timeout=30)
        global_flags |= set(re.findall(r"--[a-z][a-z0-9-]*", top.stdout))
    for rel, tname, args in all_invocations:
        if not args:
            fail(f"{rel}: task {tname} runs wafleet without a subcommand")
            continue
        cmd = args[0]
        flags = {a.split("=", 1)[0] for a in args[1:] if a.startswith("--")}
        contract = CONTRACT.get(cmd)
        check(contract is not None, f"{rel}: `wafleet {cmd}` is not a contract command")
        for f in sorted(flags - (contract or set()) - GLOBAL_FLAGS):
            fail(f"{rel}: `wafleet {cmd} {f}` is not in the COMMON.md CLI contract")
        if not wafleet_bin:
            continue
        if cmd not in helps:
            r = subprocess.run([wafleet_bin, cmd, "--help"], capture_output=True, text=True, timeout=30)
            helps[cmd] = (r.returncode, r.stdout + r.stderr)
        rc, out = helps[cmd]
        if rc != 0:
            fail(f"`wafleet {cmd} --help` failed: {out.strip()[:200]}")
            continue
        known = set(re.findall(r"--[a-z][a-z0-9-]*", out))
        if not (known - {"--help", "--version"} - global_flags):
            note(f"`wafleet {cmd}` has no flags yet (still a stub on this branch): "
                 f"flag check against its --help skipped for {rel}")
            continue
        for f in sorted(flags - known - global_flags):
            fail(f"{rel}: `wafleet {cmd}` has no flag {f} (see `wafleet {cmd} --help`)")


def load_metrics():
    out = {}
    with open(os.path.join(ROOT, "nomad/monitoring/metrics.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].split()
            if line:
                out[line[0]] = line[1]
    return out


def metric_names(expr, known):
    names = set()
    for n in re.findall(r"\bwafleet_[a-z0-9_]+", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", n)
        if base != n and known.get(base) == "histogram":
            n = base
        names.add(n)
    return names


def check_metrics():
    known = load_metrics()
    rules_dir = os.path.join(ROOT, "nomad/monitoring/rules")
    exprs = []
    for f in sorted(os.listdir(rules_dir)):
        if f.endswith(".yml"):
            with open(os.path.join(rules_dir, f)) as fh:
                doc = yaml.safe_load(fh)
            for grp in doc.get("groups", []):
                for r in grp.get("rules", []):
                    exprs.append((f"rules/{f} {r.get('alert') or r.get('record')}", r["expr"]))
                    ann = r.get("annotations", {})
                    check("docs/operations.md#" in ann.get("description", ""),
                          f"rules/{f} {r.get('alert')}: description must link its runbook section")
    path = os.path.join(ROOT, "nomad/monitoring/grafana/wafleet-dashboard.json")
    try:
        with open(path) as fh:
            dash = json.load(fh)
    except ValueError as e:
        fail(f"grafana dashboard is not valid JSON: {e}")
        dash = {"panels": []}
    ids = [p.get("id") for p in dash.get("panels", [])]
    check(len(ids) == len(set(ids)), "grafana dashboard: panel ids must be unique")
    check(dash.get("uid") and dash.get("title"), "grafana dashboard: uid and title")
    for p in dash.get("panels", []):
        if p.get("type") == "row":
            continue
        check(p.get("targets"), f"grafana panel '{p.get('title')}' has no query")
        for t in p.get("targets", []):
            exprs.append((f"dashboard '{p.get('title')}'", t.get("expr", "")))
    used = set()
    for where, e in exprs:
        for n in metric_names(e, known):
            used.add(n)
            check(n in known, f"{where}: metric {n} is not in metrics.txt (COMMON.md contract)")
    wanted = {"wafleet_sessions", "wafleet_router_requests_total", "wafleet_qr_latency_seconds",
              "wafleet_send_latency_seconds", "wafleet_session_memory_bytes", "wafleet_webhook_backlog",
              "wafleet_worker_fenced_total", "wafleet_router_shard_healthy"}
    for n in sorted(wanted - used):
        fail(f"monitoring: {n} is used by neither the alert rules nor the dashboard")
    return known


def check_consul(docs, defaults):
    for rel in ("consul/server.hcl", "consul/client.hcl"):
        d = docs.get(rel)
        if not check(d is not None, f"{rel} missing"):
            continue
        acl = body(d, "acl")
        check(acl.get("enabled") is True and acl.get("default_policy") == "deny",
              f"{rel}: ACLs enabled with default deny")
        dns = body(d, "dns_config")
        check(isinstance(dns.get("service_ttl"), dict), f"{rel}: dns_config.service_ttl")
        check(d.get("recursors"), f"{rel}: recursors")
        check(body(d, "ports").get("dns") == 8600 and d.get("client_addr") == "127.0.0.1",
              f"{rel}: DNS on 127.0.0.1:8600 (WAFLEET_CONSUL_DNS default)")
    w = docs.get("consul/policies/wafleet-worker.hcl", {})
    kp = dict(labelled(w, "key_prefix"))
    check(kp.get("wafleet/locks/", {}).get("policy") == "write", "worker policy: write wafleet/locks/")
    check(dict(labelled(w, "key")).get("wafleet/shardmap", {}).get("policy") == "read",
          "worker policy: read wafleet/shardmap")
    check(dict(labelled(w, "service")).get("wafleet-worker", {}).get("policy") == "write",
          "worker policy: write service wafleet-worker only")
    check(not labelled(w, "service_prefix") and not labelled(w, "session_prefix"),
          "worker policy: no prefix-wide service or session rules")
    s = docs.get("consul/policies/wafleet-worker-session.hcl.tmpl", {})
    check(dict(labelled(s, "session")).get("NODE_NAME", {}).get("policy") == "write",
          "worker session policy template: session \"NODE_NAME\" write")
    r = docs.get("consul/policies/wafleet-router.hcl", {})
    check(dict(labelled(r, "service")).get("wafleet-router", {}).get("policy") == "write",
          "router policy: write service wafleet-router")
    check(all(b.get("policy") == "read" for _, b in labelled(r, "key") + labelled(r, "key_prefix")),
          "router policy: keys read-only")
    o = docs.get("consul/policies/wafleet-operator.hcl", {})
    check(dict(labelled(o, "key_prefix")).get("wafleet/", {}).get("policy") == "write",
          "operator policy: write wafleet/")
    with open(os.path.join(ROOT, "consul/shardmap.json")) as f:
        m = json.load(f)
    ids = [s_["id"] for s_ in m.get("shards", [])]
    check(m.get("version", 0) >= 1 and ids == list(range(len(ids))) and
          all(s_["weight"] > 0 for s_ in m["shards"]), "consul/shardmap.json: version >= 1, shards 0..n-1, weights > 0")
    check(len(ids) == defaults.get("shards"),
          f"consul/shardmap.json has {len(ids)} shards but the jobs' default shards is {defaults.get('shards')}")


def check_nomad_acl(docs):
    d = docs.get("nomad/acl/wafleet-deployer.hcl")
    if not check(d is not None, "nomad/acl/wafleet-deployer.hcl missing"):
        return
    ns = dict(labelled(d, "namespace")).get("default", {})
    caps = set(ns.get("capabilities", []))
    check({"parse-job", "submit-job", "read-job"} <= caps, "deployer policy: parse, submit and read jobs")
    paths = dict(labelled(body(ns, "variables"), "path"))
    check(set(paths) == {"nomad/jobs/wafleet-*"}, "deployer policy: variables only under nomad/jobs/wafleet-*")
    check(not bodies(d, "node") and not bodies(d, "agent") and not bodies(d, "operator"),
          "deployer policy: no node, agent or operator rules")


def inventory_groups(node, out=None, name="all"):
    """{group: set(hosts)} of a YAML inventory, hosts of child groups included in parents."""
    out = {} if out is None else out
    hosts = set((node or {}).get("hosts") or {})
    for child, sub in ((node or {}).get("children") or {}).items():
        hosts |= inventory_groups(sub, out, child)[child]
    out[name] = out.get(name, set()) | hosts
    return out


def check_placement(defaults, envs):
    """Every inventory can place its environment's jobs: the worker and router jobs use
    distinct_hosts, so `shards` allocations need that many hosts of the worker role, and one
    more so a lost host's shard can be rescheduled (N+1); `routers` need as many router hosts."""
    with open(os.path.join(ROOT, "ansible/group_vars/all.yml")) as f:
        default_env = (yaml.safe_load(f) or {}).get("wafleet_env", "staging")
    inventories = sorted(
        os.path.join("ansible/inventory", d, "hosts.yml")
        for d in os.listdir(os.path.join(ROOT, "ansible/inventory"))
        if os.path.isfile(os.path.join(ROOT, "ansible/inventory", d, "hosts.yml")))
    check(inventories, "ansible/inventory/*/hosts.yml: no example inventory")
    seen_envs = set()
    for rel in inventories + ["ansible/tests/fake-inventory.yml"]:
        path = os.path.join(ROOT, rel)
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            inv = yaml.safe_load(f) or {}
        top = inv.get("all") or {}
        env = (top.get("vars") or {}).get("wafleet_env", default_env)
        vars_rel = f"nomad/vars/{env}.vars.hcl"
        if vars_rel not in envs:
            fail(f"{rel}: wafleet_env {env!r} has no {vars_rel}")
            continue
        seen_envs.add(vars_rel)
        v = dict(defaults)
        v.update(envs[vars_rel])
        groups = inventory_groups(top)
        shards, routers = int(v.get("shards") or 0), int(v.get("routers") or 0)
        workers = len(groups.get("workers", ()))
        check(workers >= shards + 1,
              f"{rel}: {vars_rel} runs {shards} shards, one per host (distinct_hosts), so it needs "
              f"{shards + 1} worker hosts ({shards} + 1 spare to reschedule a lost host's shard); "
              f"the inventory has {workers}")
        if not rel.startswith("ansible/tests/"):
            # The fake cluster of the deploy test places routers anywhere; real inventories
            # need router hosts (meta.wafleet_role = router).
            n = len(groups.get("routers", ()))
            check(n >= routers,
                  f"{rel}: {vars_rel} runs {routers} routers on distinct hosts; the inventory has {n} router hosts")
    for vars_rel in sorted(set(envs) - seen_envs):
        fail(f"{vars_rel}: no inventory under ansible/inventory/ uses it (placement unchecked)")


def ansible_host_volumes():
    with open(os.path.join(ROOT, "ansible/group_vars/all.yml")) as f:
        gv = yaml.safe_load(f)
    vols = {v["name"] for v in gv.get("nomad_host_volumes", [])}
    exports = {e["volume"] for e in gv.get("nfs_exports", [])}
    check(exports <= vols, f"ansible: every NFS export must be a Nomad host volume ({exports - vols})")
    tmpl = open(os.path.join(ROOT, "ansible/roles/nomad/templates/nomad.hcl.j2")).read()
    check("host_volume \"{{ v.name }}\"" in tmpl and "nomad_host_volumes" in tmpl,
          "ansible nomad role: the client config must declare nomad_host_volumes")
    return vols


# Each mutation breaks one property; --self-test proves the checker notices every one.
MUTATIONS = [
    ("nomad/wafleet-worker.nomad.hcl", 'kill_timeout = "30s"', 'kill_timeout = "20s"'),
    ("nomad/wafleet-worker.nomad.hcl", 'delay    = "2s"', 'delay    = "15s"'),
    ("nomad/wafleet-worker.nomad.hcl", 'kill_timeout = "30s"', 'kill_timeout = "60s"'),
    ("nomad/wafleet-worker.nomad.hcl", '"--shard", "${NOMAD_ALLOC_INDEX}"', '"--shard", "0"'),
    ("nomad/wafleet-worker.nomad.hcl", '"--data", "/data"', '"--data", "/srv"'),
    ("nomad/wafleet-worker.nomad.hcl", '"--drain-grace-secs", "25"', '"--drain-grace", "25"'),
    ("nomad/wafleet-worker.nomad.hcl", "max_parallel      = 1", "max_parallel      = 2"),
    ("nomad/wafleet-worker.nomad.hcl", 'name        = "wafleet-worker-http"', 'name        = "wafleet-worker"'),
    ("nomad/wafleet-worker.nomad.hcl", 'path     = "/readyz"', 'path     = "/healthz"'),
    ("nomad/wafleet-worker.nomad.hcl", 'source    = var.data_volume', 'source    = "nfs"'),
    ("nomad/wafleet-router.nomad.hcl", 'WAFLEET_CONSUL_DNS = "127.0.0.1:8600"', 'X = "1"'),
    ("nomad/wafleet-backup.nomad.hcl", '"--keep", "${var.backup_keep}"', '"--retain", "${var.backup_keep}"'),
    ("nomad/wafleet-backup.nomad.hcl", 'crons            = ["0 * * * *"]', 'crons            = ["0 0 * * *"]'),
    ("nomad/vars/staging.vars.hcl", "shards             = 2", "shards             = 2\nshard_count = 2"),
    ("nomad/monitoring/rules/wafleet.yml", "wafleet_webhook_backlog) > 1000", "wafleet_webhook_queue) > 1000"),
    ("nomad/monitoring/grafana/wafleet-dashboard.json", "wafleet_send_latency_seconds_bucket", "wafleet_send_seconds_bucket"),
    ("consul/policies/wafleet-worker.hcl", 'service "wafleet-worker"', 'service_prefix ""'),
    # No Consul fallback for the worker: an agent restart would fence it.
    ("nomad/wafleet-worker.nomad.hcl", "WAFLEET_CONSUL_FALLBACK_ADDRS={{ .consul_fallback_addrs }}", "X={{ .consul_fallback_addrs }}"),
    ("nomad/wafleet-worker.nomad.hcl", "job \"wafleet-worker\" {", "job \"wafleet-worker\" {\n  x = \"unterminated\n"),
    # Memory arithmetic: a per-session budget above what memory_mb reserves, in the job's
    # default and in a vars file.
    ("nomad/wafleet-worker.nomad.hcl", "default     = 350", "default     = 400"),
    ("nomad/vars/production.vars.hcl", "memory_mb          = 7512", "memory_mb          = 7000"),
    # Placement (distinct_hosts): one shard more than hosts, and no spare host.
    ("nomad/vars/production.vars.hcl", "shards             = 8", "shards             = 9"),
    ("ansible/inventory/example/hosts.yml", "            worker-9: {ansible_host: 10.0.1.9}\n", ""),
    ("ansible/inventory/staging/hosts.yml", "            stg-router-2: {ansible_host: 10.1.2.2}\n", ""),
    ("ansible/tests/fake-inventory.yml", "            worker-3:\n", ""),
]


def self_test(wafleet_bin):
    """Runs the checker on mutated copies of the assets; each copy must fail."""
    import shutil
    import tempfile
    ok = True
    for rel, old, new in MUTATIONS:
        with tempfile.TemporaryDirectory() as tmp:
            for top in ("nomad", "consul", "ansible"):
                shutil.copytree(os.path.join(ROOT, top), os.path.join(tmp, top),
                                ignore=shutil.ignore_patterns("__pycache__"))
            path = os.path.join(tmp, rel)
            with open(path) as f:
                text = f.read()
            if old not in text:
                print(f"self-test: mutation target not found in {rel}: {old!r}")
                ok = False
                continue
            with open(path, "w") as f:
                f.write(text.replace(old, new, 1))
            cmd = [sys.executable, os.path.abspath(__file__)]
            if wafleet_bin:
                cmd += ["--wafleet-bin", wafleet_bin]
            r = subprocess.run(cmd, capture_output=True, text=True,
                               env=dict(os.environ, WAFLEET_ASSETS_ROOT=tmp))
            if r.returncode == 0:
                print(f"self-test: NOT detected: {rel}: {old!r} -> {new!r}")
                ok = False
    print(f"check_assets self-test: {len(MUTATIONS)} mutations, "
          f"{'all detected' if ok else 'some NOT detected'}")
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wafleet-bin", help="built wafleet binary to compare flags with its --help")
    ap.add_argument("--self-test", action="store_true", help="check that broken copies are caught")
    args = ap.parse_args()
    if args.self_test:
        return self_test(args.wafleet_bin)

    docs = check_parse()
    defaults, envs = check_variables(docs)
    host_volumes = ansible_host_volumes()
    invocations = []
    registered = set()
    for env_name, env_vars in [("defaults", {})] + sorted(envs.items()):
        variables = dict(defaults)
        variables.update(env_vars)
        if variables.get("wafleet_version") is None:
            variables["wafleet_version"] = "0.0.0"
        for rel, fn in (("nomad/wafleet-worker.nomad.hcl", lambda d: check_worker(d, variables, host_volumes)),
                        ("nomad/wafleet-router.nomad.hcl", lambda d: check_router(d, variables, envs)),
                        ("nomad/wafleet-backup.nomad.hcl", lambda d: check_backup(d, variables, host_volumes))):
            if rel not in docs:
                fail(f"{rel} missing")
                continue
            inv, names = fn(docs[rel])
            registered |= names
            invocations += [(rel, t, a) for t, a in inv]
        if "nomad/monitoring/prometheus.nomad.hcl" in docs:
            check_prometheus(docs["nomad/monitoring/prometheus.nomad.hcl"], variables, host_volumes, registered)
    for rel in docs:
        if rel.endswith(".nomad.hcl"):
            check_no_inline_secrets(rel, open(os.path.join(ROOT, rel)).read())
    check_flags(invocations, args.wafleet_bin)
    check_metrics()
    check_consul(docs, defaults)
    check_nomad_acl(docs)
    check_placement(defaults, envs)

    for n in sorted(set(notes)):
        print(f"note: {n}")
    if failures:
        for f in dict.fromkeys(failures):
            print(f"FAIL: {f}")
        print(f"check_assets: {len(set(failures))} problem(s) in {len(docs)} HCL files")
        return 1
    print(f"check_assets: {len(docs)} HCL files parse; jobs, variables, volumes, flags, metrics "
          f"and Consul assets are consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
