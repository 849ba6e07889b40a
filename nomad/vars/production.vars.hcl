# Production.
#   nomad job run -var-file=nomad/vars/production.vars.hcl nomad/wafleet-worker.nomad.hcl
# Secrets are not here: they live in Nomad Variables (docs/deployment.md, Tokens).
# `shards` must equal the shard count of wafleet/shardmap in Consul (docs/operations.md).

datacenters     = ["dc1"]
wafleet_version = "0.1.0"

# 8 shards x 20 sessions = 160 sessions. Per worker: 20 x 350 MB + 512 MB = 7,512 MB reserved,
# 12 GB hard limit for the busy-account tail; 20 x 0.15 core x 2,000 MHz = 6,000 MHz.
# Hosts: one worker per host (distinct_hosts), so 8 worker hosts with >= 16 GB RAM and 4 cores.
shards             = 8
sessions_per_shard = 20
memory_mb          = 7512
memory_max_mb      = 12288
cpu_mhz            = 6000

routers     = 3
router_port = 8080

data_volume   = "wafleet-data"
backup_volume = "wafleet-backups"
backup_keep   = 48

wa_url = "https://web.whatsapp.com/"

prometheus_retention = "30d"
alertmanager_service = "alertmanager"
