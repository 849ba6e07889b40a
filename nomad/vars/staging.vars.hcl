# Staging: small, one datacenter, the same job files as production.
#   nomad job run -var-file=nomad/vars/staging.vars.hcl nomad/wafleet-worker.nomad.hcl
# Secrets are not here: they live in Nomad Variables (docs/deployment.md, Tokens).

datacenters     = ["staging-dc1"]
wafleet_version = "0.1.0"

# 2 shards x 10 sessions: 10 x 350 MB + 512 MB = 4,012 MB per worker.
shards             = 2
sessions_per_shard = 10
memory_mb          = 4012
memory_max_mb      = 6144
cpu_mhz            = 3000

routers     = 2
router_port = 8080

data_volume   = "wafleet-data"
backup_volume = "wafleet-backups"
backup_keep   = 24

wa_url = "https://web.whatsapp.com/"

prometheus_retention = "7d"
alertmanager_service = "alertmanager"
