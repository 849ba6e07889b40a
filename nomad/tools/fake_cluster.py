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

Usage: fake_cluster.py PORTFILE  (binds 127.0.0.1:0, writes the port to PORTFILE, serves until
killed).
"""

import json
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
            groups.append({"Name": gname, "Count": int(count)})
    return {
        "ID": job_id,
        "Name": job_id,
        "Type": job.get("type", "service"),
        "Periodic": {"Enabled": True} if job.get("periodic") else None,
        "Meta": {"wafleet_version": str(defaults.get("wafleet_version"))},
        "TaskGroups": groups,
    }


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
            return self.reply(200)
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
            return self.reply(200, {"Diff": {"Type": kind}})
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
            return self.reply(200, {"jobs": jobs, "kv": sorted(KV), "vars": sorted(VARS),
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
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as f:
        f.write(str(srv.server_address[1]))
    srv.serve_forever()


if __name__ == "__main__":
    main()
