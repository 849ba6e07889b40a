# The Nomad agents' own token (consul { token } in /etc/nomad.d/20-consul-token.hcl, installed
# by ansible/roles/deploy from scripts/consul-bootstrap's nomad_agent token). Nomad's docs
# (Integrate Consul ACL) list what an agent needs:
# * agent:read — the client's Consul fingerprint reads /v1/agent/self; without it the node
#   never gets attr.consul.version and Nomad's implicit constraint
#   "${attr.consul.version} semver >= 1.8.0" keeps every group with a Consul service off it;
# * node write — the agent's own catalog entries;
# * service write — with no workload identity configured, Nomad registers (and always
#   deregisters) the job services (wafleet-worker-http, wafleet-router-http,
#   wafleet-prometheus) with this token, and its own "nomad" / "nomad-client" services.

agent_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "write"
}

service_prefix "wafleet-" {
  policy = "write"
}

service "nomad" {
  policy = "write"
}

service "nomad-client" {
  policy = "write"
}
