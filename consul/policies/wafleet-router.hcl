# wafleet router (DESIGN §6): watches the map, resolves workers over DNS or the health API,
# registers itself for Prometheus discovery. Assumes --kv-prefix wafleet.

key "wafleet/shardmap" {
  policy = "read"
}

service "wafleet-worker" {
  policy = "read"
}

# Health and catalog answers are filtered by node:read too.
node_prefix "" {
  policy = "read"
}

service "wafleet-router" {
  policy = "write"
}
