# Nomad ACL policy for people running docs/operations.md: read everything about the jobs, read
# logs, restart allocations, drain nodes; no job submission (that goes through the playbooks).
#   nomad acl policy apply -description "wafleet operators" wafleet-operator nomad/acl/wafleet-operator.hcl

namespace "default" {
  capabilities = ["list-jobs", "read-job", "read-logs", "read-fs", "alloc-lifecycle"]
}

node {
  policy = "write"
}

agent {
  policy = "read"
}

operator {
  policy = "read"
}
