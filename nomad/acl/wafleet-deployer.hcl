# Nomad ACL policy for ansible/roles/deploy, rollout.yml and rollback.yml (the token in
# nomad_deploy_token). Create it once with a management token:
#   nomad acl policy apply -description "wafleet deploys" wafleet-deployer nomad/acl/wafleet-deployer.hcl
#   nomad acl token create -name wafleet-deployer -policy wafleet-deployer
# It can parse, plan, submit and revert the jobs, fail a deployment, read allocations, and write
# the jobs' secrets under nomad/jobs/; nothing on nodes, agents or other paths.

namespace "default" {
  capabilities = ["list-jobs", "parse-job", "read-job", "submit-job", "read-job-scaling"]

  variables {
    path "nomad/jobs/wafleet-*" {
      capabilities = ["read", "write", "list"]
    }
  }
}
