#!/usr/bin/env python3
"""A tiny in-memory stand-in for the Nomad and Consul HTTP API subsets that
scripts/consul-bootstrap and ansible/roles/deploy use, so CI can run the deploy, rollout and
rollback playbooks end to end without Nomad or Consul binaries (scripts/test.d/deploy).

It is a test double, not an emulator: jobs are "parsed" with python-hcl2 only far enough to
know the job id, its group count (var.shards) and wafleet_version; a deployment replaces one
allocation per poll, in index order (update.max_parallel = 1); a version whose name contains
"bad" never becomes healthy, so its deployment fails after a few polls and, like Nomad's
auto_revert, the last stable job version is registered again. Consul's view of wafleet-worker
follows the healthy worker allocations (one passing instance per shard, Meta.version).

Consul: PUT/GET /v1/kv/<key> (?cas=0, ?raw), /v1/acl/policies, /v1/acl/policy[/name/<n>|/<id>],
/v1/acl/tokens?policy=, /v1/acl/token[/<accessor>], PUT /v1/agent/token/default,
GET /v1/health/service/wafleet-worker[?passing][&tag=shard-k].
Nomad: POST /v1/jobs/parse, POST /v1/job/<id>/plan, POST /v1/jobs, GET /v1/job/<id>,
GET /v1/job/<id>/allocations, GET /v1/job/<id>/deployment, POST /v1/deployment/fail/<id>,
GET/PUT /v1/var/<path>. Extra: GET /_state (everything, for the test's assertions).

Nomad clients and their Consul fingerprint (--nodes a,b,c, --nodes-dir DIR): each node's agent
config is DIR/<node>/*.hcl; a node's Consul token is the `consul { token = "…" }` found there,
else the agent's default token (PUT /v1/agent/token/default). As a real Nomad client does, the
fingerprint reads GET /v1/agent/self with that token, which Consul answers only with agent:read
(`agent_prefix "" { policy = "read" }` or `agent "<node>"` in one of the token's policies); only
then does the node get attr.consul.version. Nomad adds the implicit constraint
`${attr.consul.version} semver >= 1.8.0` to every group with a Consul service, so without the
token no node is eligible: the plan reports FailedTGAllocs with that constraint and nothing is
placed. `distinct_hosts` caps a group's placements at the number of eligible nodes. GET
/v1/nodes and /v1/node/<id> show the nodes and their attributes.

Usage: fake_cluster.py PORTFILE [--nodes a,b] [--nodes-dir DIR]  (binds 127.0.0.1:0, writes the
port to PORTFILE, serves until killed).
"""

import argparse
import json
import os
import re
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import hcl2
from hcl2.utils import SerializationOptions

OPTS = SerializationOptions(with_comments=False, explicit_blocks=False, strip_string_quotes=True)
# Polls a "bad" deployment survives before it is failed (and auto-reverted).
BAD_POLLS_BEFORE_FAIL = 3

LOCK = threading.Lock()
KV = {}
POLICIES = {}  # id -> policy
TOKENS = {}  # accessor -> token
VARS = {}  # path -> items
JOBS = {}  # id -> {"versions": [job json], "allocs": [...], "deployment": {...}, "stable": int}
INDEX = [100]
# The Consul version the fake agents report (ansible/group_vars/all.yml consul_version).
CONSUL_VERSION = "1.21.4"
# Nomad's implicit constraint on groups with Consul services (scheduler, consul checks).
CONSUL_CONSTRAINT = "${attr.consul.version} semver >= 1.8.0"
NODES = {}  # name -> {"ID": ...}
NODES_DIR = [None]
DEFAULT_TOKEN = [""]


def next_index():
    INDEX[0] += 1
    return INDEX[0]


# === Nomad model ===

def parse_job(hcl_text, variables_text):
    doc = hcl2.loads(hcl_text, serialization_options=OPTS)
    variables = hcl2.loads(variables_text or "", serialization_options=OPTS)
    defaults = {}
    for item in doc.get("variable", []):
        for name, body in item.items():
            defaults[name] = body.get("default")
    defaults.update(variables)
    (job_id, job), = doc["job"][0].items()
    groups = []
    for g in job.get("group", []):
        for gname, gbody in g.items():
            count = gbody.get("count", 1)
            if isinstance(count, str):
                m = re.fullmatch(r"\$\{var\.(\w+)\}", count)
                count = int(defaults[m.group(1)]) if m else 1
            groups.append({"Name": gname, "Count": int(count),
                           "ConsulServices": consul_services(gbody),
                           "DistinctHosts": distinct_hosts(job, gbody)})
    return {
        "ID": job_id,
        "Name": job_id,
        "Type": job.get("type", "service"),
        "Periodic": {"Enabled": True} if job.get("periodic") else None,
        "Meta": {"wafleet_version": str(defaults.get("wafleet_version"))},
        "TaskGroups": groups,
    }


def consul_services(gbody):
    """Whether a group (or one of its tasks) declares a service on the Consul provider."""
    def consul(svcs):
        return any((svc.get("provider") or "consul") == "consul" for svc in svcs)
    if consul(gbody.get("service", [])):
        return True
    for t in gbody.get("task", []):
        for _, tbody in t.items():
            if consul(tbody.get("service", [])):
                return True
    return False


def distinct_hosts(*bodies):
    return any(c.get("operator") == "distinct_hosts" and str(c.get("value", "true")).lower() == "true"
               for b in bodies for c in b.get("constraint", []))


def node_token(name):
    """The Consul token the node's Nomad agent uses: consul.token from its config files, else
    the Consul agent's default token."""
    d = NODES_DIR[0]
    if d:
        nd = os.path.join(d, name)
        for f in sorted(os.listdir(nd)) if os.path.isdir(nd) else []:
            if f.endswith(".hcl"):
                m = re.search(r'consul\s*\{[^}]*\btoken\s*=\s*"([^"]*)"', open(os.path.join(nd, f)).read())
                if m and m.group(1):
                    return m.group(1)
    return DEFAULT_TOKEN[0]


def agent_read(secret, node):
    """GET /v1/agent/self's ACL check: agent:read on the node."""
    tok = next((t for t in TOKENS.values() if t["SecretID"] == secret), None)
    if tok is None:
        return False, "403 ACL not found"
    for link in tok.get("Policies", []):
        rules = POLICIES.get(link["ID"], {}).get("Rules", "")
        for m in re.finditer(r'agent(_prefix)?\s+"([^"]*)"\s*\{\s*policy\s*=\s*"(\w+)"', rules):
            prefix, name, policy = m.group(1), m.group(2), m.group(3)
            covers = node.startswith(name) if prefix else node == name
            if covers and policy in ("read", "write"):
                return True, ""
    return False, f"403 Permission denied: token with AccessorID '{tok['AccessorID']}' lacks permission 'agent:read' on \"{node}\""


def fingerprint(name):
    ok, err = agent_read(node_token(name), name)
    attrs = {"kernel.name": "linux", "nomad.version": "1.10.5"}
    if ok:
        attrs.update({"consul.version": CONSUL_VERSION, "consul.server": "false",
                      "consul.datacenter": "dc1", "unique.consul.name": name})
    return attrs, err


def semver_at_least(v, minimum):
    def parts(x):
        return [int(p) for p in re.findall(r"\d+", x)[:3]]
    return parts(v) >= parts(minimum)


def capacity(group):
    """How many allocations of the group can be placed, and Nomad's failure metrics if not all."""
    names = sorted(NODES)
    filtered = {}
    eligible = names
    if group.get("ConsulServices"):
        eligible = [n for n in names
                    if semver_at_least(fingerprint(n)[0].get("consul.version", "0"), "1.8.0")]
        if len(names) - len(eligible):
            filtered[CONSUL_CONSTRAINT] = len(names) - len(eligible)
    cap = len(eligible) if group.get("DistinctHosts") else (group["Count"] if eligible else 0)
    if not NODES:  # no node model configured: the old behaviour, everything fits
        return group["Count"], None
    if cap >= group["Count"]:
        return group["Count"], None
    if group.get("DistinctHosts") and eligible:
        filtered["distinct_hosts"] = group["Count"] - cap
    return cap, {"NodesEvaluated": len(names), "NodesFiltered": len(names) - len(eligible),
                 "ConstraintFiltered": filtered, "CoalescedFailures": group["Count"] - cap - 1}


def same_job(a, b):
    return a["Meta"] == b["Meta"] and a["TaskGroups"] == b["TaskGroups"]


def register(job):
    st = JOBS.setdefault(job["ID"], {"versions": [], "allocs": [], "deployment": None, "stable": None})
    job = dict(job, Version=len(st["versions"]), JobModifyIndex=next_index())
    st["versions"].append(job)
    if job["Type"] == "service":
        st["deployment"] = {"ID": str(uuid.uuid4()), "JobID": job["ID"], "JobVersion": job["Version"],
                            "Status": "running", "StatusDescription": "Deployment is running",
                            "bad_polls": 0}
    return job


def tick(job_id):
    """Advances a running deployment by one allocation (max_parallel = 1)."""
    st = JOBS.get(job_id)
    if not st or not st["deployment"] or st["deployment"]["Status"] != "running":
        return
    dep = st["deployment"]
    job = st["versions"][dep["JobVersion"]]
    bad = "bad" in job["Meta"]["wafleet_version"]
    count = job["TaskGroups"][0]["Count"]
    group = job["TaskGroups"][0]["Name"]
    live = {a["Index"]: a for a in st["allocs"] if a["ClientStatus"] == "running"}
    # A new allocation that is not healthy yet blocks the next one.
    pending = [a for a in live.values() if a["JobVersion"] == job["Version"]
               and not a["DeploymentStatus"]["Healthy"]]
    if pending:
        dep["bad_polls"] += 1
        if dep["bad_polls"] >= BAD_POLLS_BEFORE_FAIL:
            dep["Status"] = "failed"
            dep["StatusDescription"] = "Failed due to unhealthy allocations - rolling back to job version %d" % st["stable"]
            if st["stable"] is not None:
                register(dict(st["versions"][st["stable"]]))
        return
    placeable, _ = capacity(job["TaskGroups"][0])
    if placeable < count:
        # Blocked evaluation: nothing more can be placed; the deployment makes no progress and
        # fails at its progress deadline (modelled as a few polls), auto-reverting.
        dep["bad_polls"] += 1
        if dep["bad_polls"] >= BAD_POLLS_BEFORE_FAIL:
            dep["Status"] = "failed"
            dep["StatusDescription"] = "Failed due to progress deadline"
            if st["stable"] is not None:
                register(dict(st["versions"][st["stable"]]))
        return
    for k in range(count):
        a = live.get(k)
        if a is None or a["JobVersion"] != job["Version"]:
            if a is not None:
                a["ClientStatus"] = "complete"
            st["allocs"].append({
                "ID": str(uuid.uuid4()), "Name": f"{job_id}.{group}[{k}]", "Index": k,
                "JobVersion": job["Version"], "ClientStatus": "running",
                "DeploymentStatus": {"Healthy": not bad}, "ModifyIndex": next_index(),
            })
            return
    for k, a in live.items():
        if k >= count:
            a["ClientStatus"] = "complete"
    dep["Status"] = "successful"
    dep["StatusDescription"] = "Deployment completed successfully"
    st["stable"] = job["Version"]


def worker_health(passing, tag):
    st = JOBS.get("wafleet-worker")
    out = []
    if not st:
        return out
    for a in st["allocs"]:
        if a["ClientStatus"] != "running" or not a["DeploymentStatus"]["Healthy"]:
            continue
        k = a["Index"]
        if tag and tag != f"shard-{k}":
            continue
        version = st["versions"][a["JobVersion"]]["Meta"]["wafleet_version"]
        out.append({"Node": {"Node": f"worker-{k}"},
                    "Service": {"ID": f"wafleet-worker-{k}", "Service": "wafleet-worker",
                                "Tags": [f"shard-{k}"], "Meta": {"shard": str(k), "version": version}},
                    "Checks": [{"Status": "passing"}]})
    return out


# === HTTP ===

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, obj=None, raw=None):
        data = raw if raw is not None else (b"" if obj is None else json.dumps(obj).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Consul-Index", str(INDEX[0]))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        self.route("GET")

    def do_PUT(self):
        self.route("PUT")

    def do_POST(self):
        self.route("POST")

    def route(self, method):
        u = urlparse(self.path)
        q = parse_qs(u.query, keep_blank_values=True)
        p = u.path
        with LOCK:
            try:
                self.dispatch(method, p, q)
            except Exception as e:  # a test double: report, never hang the client
                self.reply(500, {"error": repr(e)})

    def dispatch(self, method, p, q):
        m = re.fullmatch(r"/v1/kv/(.+)", p)
        if m:
            key = m.group(1)
            if method == "PUT":
                if "cas" in q and q["cas"][0] == "0" and key in KV:
                    return self.reply(200, raw=b"false")
                KV[key] = {"Value": self.body(), "ModifyIndex": next_index()}
                return self.reply(200, raw=b"true")
            if key not in KV:
                return self.reply(404)
            if "raw" in q:
                return self.reply(200, raw=KV[key]["Value"])
            return self.reply(200, [{"Key": key, "ModifyIndex": KV[key]["ModifyIndex"]}])
        if p == "/v1/acl/policies":
            return self.reply(200, list(POLICIES.values()))
        m = re.fullmatch(r"/v1/acl/policy/name/(.+)", p)
        if m:
            for pol in POLICIES.values():
                if pol["Name"] == m.group(1):
                    return self.reply(200, pol)
            return self.reply(404, raw=b"ACL not found")
        if p == "/v1/acl/policy" and method == "PUT":
            pol = json.loads(self.body())
            if any(x["Name"] == pol["Name"] for x in POLICIES.values()):
                return self.reply(400, raw=b"Invalid Policy: A Policy with Name already exists")
            pol["ID"] = str(uuid.uuid4())
            POLICIES[pol["ID"]] = pol
            return self.reply(200, pol)
        m = re.fullmatch(r"/v1/acl/policy/([0-9a-f-]+)", p)
        if m and method == "PUT":
            pol = json.loads(self.body())
            POLICIES[m.group(1)] = pol
            return self.reply(200, pol)
        if p == "/v1/acl/tokens":
            pid = q.get("policy", [""])[0]
            return self.reply(200, [
                {k: v for k, v in t.items() if k != "SecretID"}
                for t in TOKENS.values() if not pid or any(x["ID"] == pid for x in t["Policies"])])
        if p == "/v1/acl/token" and method == "PUT":
            t = json.loads(self.body())
            t["AccessorID"], t["SecretID"] = str(uuid.uuid4()), str(uuid.uuid4())
            t["Policies"] = [self.policy_link(x) for x in t.get("Policies", [])]
            TOKENS[t["AccessorID"]] = t
            return self.reply(200, t)
        m = re.fullmatch(r"/v1/acl/token/([0-9a-f-]+)", p)
        if m:
            t = TOKENS.get(m.group(1))
            if t is None:
                return self.reply(404)
            if method == "PUT":
                upd = json.loads(self.body())
                t["Policies"] = [self.policy_link(x) for x in upd.get("Policies", [])]
            return self.reply(200, t)
        if p == "/v1/agent/token/default" and method == "PUT":
            DEFAULT_TOKEN[0] = json.loads(self.body() or b"{}").get("Token", "")
            return self.reply(200)
        if p == "/v1/nodes":
            return self.reply(200, [{"ID": n["ID"], "Name": name, "Status": "ready"}
                                    for name, n in sorted(NODES.items())])
        m = re.fullmatch(r"/v1/node/([0-9a-f-]+)", p)
        if m:
            for name, n in NODES.items():
                if n["ID"] == m.group(1):
                    attrs, err = fingerprint(name)
                    return self.reply(200, {"ID": n["ID"], "Name": name, "Status": "ready",
                                            "Attributes": attrs, "ConsulFingerprintError": err})
            return self.reply(404, raw=b"node not found")
        if p == "/v1/health/service/wafleet-worker":
            return self.reply(200, worker_health("passing" in q, q.get("tag", [None])[0]))
        # --- Nomad ---
        if p == "/v1/jobs/parse" and method == "POST":
            req = json.loads(self.body())
            return self.reply(200, parse_job(req["JobHCL"], req.get("Variables", "")))
        m = re.fullmatch(r"/v1/job/([^/]+)/plan", p)
        if m and method == "POST":
            job = json.loads(self.body())["Job"]
            st = JOBS.get(m.group(1))
            if not st:
                kind = "Added"
            else:
                kind = "None" if same_job(st["versions"][-1], job) else "Edited"
            failed = {}
            for g in job["TaskGroups"]:
                _, metrics = capacity(g)
                if metrics:
                    failed[g["Name"]] = metrics
            return self.reply(200, {"Diff": {"Type": kind}, "FailedTGAllocs": failed or None})
        if p == "/v1/jobs" and method == "POST":
            job = register(json.loads(self.body())["Job"])
            return self.reply(200, {"EvalID": str(uuid.uuid4()), "JobModifyIndex": job["JobModifyIndex"]})
        m = re.fullmatch(r"/v1/job/([^/]+)", p)
        if m:
            st = JOBS.get(m.group(1))
            return self.reply(200, st["versions"][-1]) if st else self.reply(404, raw=b"job not found")
        m = re.fullmatch(r"/v1/job/([^/]+)/allocations", p)
        if m:
            tick(m.group(1))
            st = JOBS.get(m.group(1))
            return self.reply(200, st["allocs"] if st else [])
        m = re.fullmatch(r"/v1/job/([^/]+)/deployment", p)
        if m:
            tick(m.group(1))
            st = JOBS.get(m.group(1))
            dep = st and st["deployment"]
            if not dep:
                return self.reply(200, None)
            job = st["versions"][dep["JobVersion"]]
            healthy = sum(1 for a in st["allocs"] if a["ClientStatus"] == "running"
                          and a["JobVersion"] == dep["JobVersion"] and a["DeploymentStatus"]["Healthy"])
            out = {k: v for k, v in dep.items() if k != "bad_polls"}
            out["TaskGroups"] = {job["TaskGroups"][0]["Name"]: {
                "DesiredTotal": job["TaskGroups"][0]["Count"], "HealthyAllocs": healthy}}
            return self.reply(200, out)
        m = re.fullmatch(r"/v1/deployment/fail/([^/]+)", p)
        if m and method == "POST":
            for st in JOBS.values():
                dep = st["deployment"]
                if dep and dep["ID"] == m.group(1) and dep["Status"] == "running":
                    dep["Status"] = "failed"
                    if st["stable"] is not None:
                        register(dict(st["versions"][st["stable"]]))
            return self.reply(200, {})
        m = re.fullmatch(r"/v1/var/(.+)", p)
        if m:
            if method == "PUT":
                VARS[m.group(1)] = json.loads(self.body())["Items"]
                return self.reply(200, {"Path": m.group(1), "Items": VARS[m.group(1)]})
            if m.group(1) not in VARS:
                return self.reply(404)
            return self.reply(200, {"Path": m.group(1), "Items": VARS[m.group(1)]})
        if p == "/_state":
            jobs = {}
            for jid, st in JOBS.items():
                jobs[jid] = {
                    "version": st["versions"][-1]["Meta"]["wafleet_version"],
                    "job_version": st["versions"][-1]["Version"],
                    "deployment": st["deployment"] and st["deployment"]["Status"],
                    "running": sorted((a["Index"], st["versions"][a["JobVersion"]]["Meta"]["wafleet_version"])
                                      for a in st["allocs"] if a["ClientStatus"] == "running"),
                }
            nodes = {name: fingerprint(name)[0].get("consul.version") for name in NODES}
            return self.reply(200, {"jobs": jobs, "kv": sorted(KV), "vars": sorted(VARS),
                                    "nodes_consul_version": nodes,
                                    "policies": sorted(x["Name"] for x in POLICIES.values()),
                                    "tokens": sorted(t["Description"] for t in TOKENS.values())})
        return self.reply(404, raw=f"fake_cluster: no route {method} {p}".encode())

    @staticmethod
    def policy_link(x):
        for pol in POLICIES.values():
            if pol["Name"] == x.get("Name") or pol["ID"] == x.get("ID"):
                return {"ID": pol["ID"], "Name": pol["Name"]}
        raise ValueError(f"unknown policy {x}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("portfile")
    ap.add_argument("--nodes", default="", help="Nomad client node names, comma separated")
    ap.add_argument("--nodes-dir", help="DIR/<node>/*.hcl is each node's Nomad agent config")
    args = ap.parse_args()
    for name in filter(None, args.nodes.split(",")):
        NODES[name] = {"ID": str(uuid.uuid5(uuid.NAMESPACE_DNS, name))}
    NODES_DIR[0] = args.nodes_dir
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(args.portfile, "w") as f:
        f.write(str(srv.server_address[1]))
    srv.serve_forever()


if __name__ == "__main__":
    main()
