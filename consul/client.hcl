# Consul client agent, on every Nomad client (workers, routers, backup, Prometheus).
# Host-specific values (node_name, bind_addr, retry_join, encrypt, the agent's ACL tokens) are
# written by ansible/roles/consul into /etc/consul.d/50-local.hcl (docs/deployment.md, Consul).
# The node name must equal the Nomad node name: the worker's Consul token only allows sessions
# on its own node (consul/policies/wafleet-worker-session.hcl.tmpl).

server     = false
datacenter = "dc1"

# A restart must not deregister the node. Client agents default to leave_on_terminate = true:
# a SIGTERM (systemctl restart, an upgrade) makes the node leave the cluster, Consul
# deregisters it, and every session tied to its serfHealth check is invalidated — every worker
# on the host loses its locks and fences. So neither SIGTERM nor SIGINT leaves; a node that
# really goes away is removed with `consul leave` (docs/operations.md, Consul agent restarts).
leave_on_terminate      = false
skip_leave_on_interrupt = true
data_dir   = "/opt/consul/data"
log_level  = "INFO"

# wafleet processes use 127.0.0.1:8500 (HTTP) and 127.0.0.1:8600 (DNS, WAFLEET_CONSUL_DNS).
client_addr = "127.0.0.1"

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

recursors = ["1.1.1.1", "9.9.9.9"]

telemetry {
  prometheus_retention_time = "1m"
  disable_hostname          = true
}
