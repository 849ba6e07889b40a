# Nomad clients register the job services (wafleet-worker-http, wafleet-router-http,
# wafleet-prometheus) and their checks through the local Consul agent.

agent_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}

service_prefix "wafleet-" {
  policy = "write"
}
