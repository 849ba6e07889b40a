# Prometheus consul_sd discovery of wafleet-worker-http and wafleet-router-http (and Alertmanager).

service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}

agent_prefix "" {
  policy = "read"
}
