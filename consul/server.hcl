# Consul server agent (3 or 5 servers). Host-specific values (node_name, bind_addr, retry_join,
# encrypt, the agent's ACL tokens) are NOT here: ansible/roles/consul writes them into
# /etc/consul.d/50-local.hcl next to this file (docs/deployment.md, Consul).

server           = true
bootstrap_expect = 3

# Servers already default to these; explicit so a restart never shrinks the raft peer set
# (docs/operations.md, Consul agent restarts).
leave_on_terminate      = false
skip_leave_on_interrupt = true
datacenter       = "dc1"
data_dir         = "/opt/consul/data"
log_level        = "INFO"

# HTTP and DNS only on loopback: every wafleet process talks to its local agent.
client_addr = "127.0.0.1"

ui_config {
  enabled = true
}

ports {
  http  = 8500
  dns   = 8600
  https = -1
  grpc  = -1
}

acl {
  enabled                  = true
  default_policy           = "deny"
  down_policy              = "extend-cache"
  enable_token_persistence = true
}

# DNS (reference/consul-nomad.md §1.9). Routers cache SRV answers themselves for
# --dns-cache-ttl-ms (2 s), so wafleet-worker answers carry TTL 0 and a failover shows up on the
# next lookup; other services may be cached 5 s downstream. only_passing: a worker whose TTL
# check is warning (draining) is not handed out.
dns_config {
  allow_stale     = true
  max_stale       = "87600h"
  node_ttl        = "10s"
  only_passing    = true
  enable_truncate = true
  service_ttl = {
    "wafleet-worker" = "0s"
    "*"              = "5s"
  }
}

# Names outside .consul are forwarded (only used when the host resolver points at Consul).
recursors = ["1.1.1.1", "9.9.9.9"]

performance {
  raft_multiplier = 1
}

telemetry {
  prometheus_retention_time = "1m"
  disable_hostname          = true
}
