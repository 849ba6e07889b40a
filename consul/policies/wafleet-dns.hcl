# The agents' default token: Consul DNS answers with it (reference/consul-nomad.md §1.9), so it
# needs service and node read. Nothing else: KV and sessions stay denied to anonymous callers.

service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}
