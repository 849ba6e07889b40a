# wafleet worker (DESIGN §3): its locks, the map, its own service. Sessions are granted per node
# by wafleet-worker-session-<node> (wafleet-worker-session.hcl.tmpl). Assumes --kv-prefix wafleet.

# Shard and workspace locks: acquire, release, and the lock keys' values.
key_prefix "wafleet/locks/" {
  policy = "write"
}

# The shard map: read and watch (blocking queries); never written by a worker.
key "wafleet/shardmap" {
  policy = "read"
}

# Register wafleet-worker (ID wafleet-worker-<k>) with its TTL check, update and deregister it.
service "wafleet-worker" {
  policy = "write"
}
