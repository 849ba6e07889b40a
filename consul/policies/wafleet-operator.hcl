# Operators (`wafleet shards …`, `wafleet route`, scripts/consul-bootstrap's map seed): change
# anything under the wafleet prefix, read the fleet's health.

key_prefix "wafleet/" {
  policy = "write"
}

service_prefix "wafleet-" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}

session_prefix "" {
  policy = "read"
}
