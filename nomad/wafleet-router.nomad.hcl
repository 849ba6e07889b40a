# wafleet routers: stateless proxies in front of the workers (DESIGN §1, §6).
#
#   nomad job run -var-file=nomad/vars/production.vars.hcl nomad/wafleet-router.nomad.hcl
#
# At least two copies on distinct hosts behind the load balancer. Each router watches
# wafleet/shardmap through the local Consul agent's HTTP API and resolves
# shard-<k>.wafleet-worker.service.consul SRV records through the local agent's DNS interface
# (WAFLEET_CONSUL_DNS=127.0.0.1:8600, no resolver changes needed on the host).
# Secrets come from the Nomad Variable nomad/jobs/wafleet-router.

# --- Shared variables -------------------------------------------------------------------------
# Every wafleet job declares this same set (scripts/test.d/deploy checks it), because Nomad
# rejects a -var-file that sets a variable the job does not declare (hashicorp/nomad#16136) and
# one file per environment (nomad/vars/<env>.vars.hcl) serves all jobs.

variable "datacenters" {
  description = "Nomad datacenters the job may run in."
  type        = list(string)
  default     = ["dc1"]
}

variable "wafleet_version" {
  description = "Installed wafleet version to run: ansible/roles/wafleet installs /usr/local/lib/wafleet/<version>/wafleet side by side, so changing this variable is the rollout."
  type        = string
}

variable "shards" {
  description = "Number of shards = worker allocations. Must equal the shard count of the map in Consul (consul/shardmap.json); change both together (docs/operations.md, Add a shard)."
  type        = number
  default     = 3
}

variable "data_volume" {
  description = "Nomad client host_volume that is the NFS mount holding <data> (ansible/roles/nomad)."
  type        = string
  default     = "wafleet-data"
}

variable "backup_volume" {
  description = "Nomad client host_volume receiving backups (second NFS export or mounted bucket)."
  type        = string
  default     = "wafleet-backups"
}

variable "backup_keep" {
  description = "Backups kept, newest first; 48 = two days of hourly runs."
  type        = number
  default     = 48
}

variable "wa_url" {
  description = "WhatsApp Web URL the browsers open."
  type        = string
  default     = "https://web.whatsapp.com/"
}

# Sizing (docs/deployment.md, Sizing): `scripts/bench engine` measured a worker session at
# 233 MiB (244 MB) PSS with 25 sessions on the simulator page carrying 150 MiB of JS heap (a
# stand-in for a small WhatsApp account, not WhatsApp), 102 MiB on the plain page. Budget
# session_memory_mb = 350 MB per session (the stand-in figure + ~40 % headroom) plus
# worker_overhead_mb = 512 MB for the worker process and SQLite: 20 x 350 + 512 = 7,512 MB
# reserved; memory_max lets the busy-account tail (0.5-1.5 GB) burst to 12 GB where memory
# oversubscription is enabled. nomad/tools/check_assets.py checks memory_mb against this sum.
# CPU: 0.03-0.3 core per idle session; 20 x 0.15 core = 3 cores at ~2,000 MHz = 6,000 MHz.
variable "sessions_per_shard" {
  description = "Planned WhatsApp sessions per shard (memory_mb and cpu_mhz follow from it)."
  type        = number
  default     = 20
}

variable "session_memory_mb" {
  description = "Memory budgeted per session, MB: measured PSS per session plus headroom."
  type        = number
  default     = 350
}

variable "worker_overhead_mb" {
  description = "Memory of the worker process itself (and SQLite), MB."
  type        = number
  default     = 512
}

variable "memory_mb" {
  description = "Memory reserved per worker, MB: sessions_per_shard x session_memory_mb + worker_overhead_mb."
  type        = number
  default     = 7512
}

variable "memory_max_mb" {
  description = "Hard memory limit per worker, MB (needs scheduler memory oversubscription)."
  type        = number
  default     = 12288
}

variable "cpu_mhz" {
  description = "CPU reserved per worker, MHz: sessions_per_shard x 0.15 core x 2,000 MHz."
  type        = number
  default     = 6000
}

variable "routers" {
  description = "Number of routers (at least 2, on distinct hosts)."
  type        = number
  default     = 2
}

variable "router_port" {
  description = "Static host port the load balancer targets on every router host."
  type        = number
  default     = 8080
}

variable "prometheus_retention" {
  description = "How long Prometheus keeps samples."
  type        = string
  default     = "15d"
}

variable "alertmanager_service" {
  description = "Consul service name of the Alertmanager(s) Prometheus notifies."
  type        = string
  default     = "alertmanager"
}
# --- End of shared variables -------------------------------------------------------------------

job "wafleet-router" {
  type        = "service"
  datacenters = var.datacenters

  # Hosts of this kind (ansible/roles/nomad sets meta.wafleet_role from the inventory group).
  constraint {
    attribute = "${meta.wafleet_role}"
    value     = "router"
  }

  # Read by ansible/rollout.yml to know what runs now (and what to roll back to).
  meta {
    wafleet_version = var.wafleet_version
  }

  constraint {
    operator = "distinct_hosts"
    value    = "true"
  }

  update {
    max_parallel      = 1
    health_check      = "checks"
    min_healthy_time  = "10s"
    healthy_deadline  = "3m"
    progress_deadline = "10m"
    auto_revert       = true
  }

  group "router" {
    count = var.routers

    restart {
      attempts = 3
      interval = "5m"
      delay    = "5s"
      mode     = "fail"
    }

    reschedule {
      delay          = "15s"
      delay_function = "exponential"
      max_delay      = "5m"
      unlimited      = true
    }

    network {
      port "http" {
        static = var.router_port
      }
    }

    # The load balancer (Consul-aware, or health-checking /readyz) stops sending new requests
    # during these 10 s; then SIGTERM lets in-flight requests finish.
    shutdown_delay = "10s"

    # The router registers wafleet-router itself (Consul layout, COMMON.md); Nomad's
    # registration therefore uses another name.
    service {
      name     = "wafleet-router-http"
      port     = "http"
      provider = "consul"
      tags     = ["wafleet", "metrics"]

      meta {
        version = "${var.wafleet_version}"
      }

      check {
        name     = "readyz"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }

      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "3s"

        check_restart {
          limit = 3
          grace = "30s"
        }
      }
    }

    task "router" {
      driver = "exec"
      user   = "wafleet"

      # In-flight proxied calls may take up to --upstream-timeout-secs; 25 s of grace covers all
      # but the slowest, within the client's default max_kill_timeout of 30 s.
      kill_signal  = "SIGTERM"
      kill_timeout = "25s"

      config {
        command = "/usr/local/lib/wafleet/${var.wafleet_version}/wafleet"
        args = [
          "router",
          "--listen", "0.0.0.0:${NOMAD_PORT_http}",
          "--kv-prefix", "wafleet",
          "--dns-cache-ttl-ms", "2000",
          "--upstream-timeout-secs", "30",
          # Survives task restarts within the allocation: a router restarted while Consul is
          # unreachable routes with its last good table.
          "--table-file", "${NOMAD_ALLOC_DIR}/data/router-table.json",
          "--log-format", "json",
        ]
      }

      env {
        CONSUL_HTTP_ADDR   = "http://127.0.0.1:8500"
        WAFLEET_CONSUL_DNS = "127.0.0.1:8600"
        WAFLEET_LOG_FORMAT = "json"
      }

      template {
        destination = "secrets/wafleet.env"
        env         = true
        # Not "restart": every allocation would restart at once when a secret changes. Rotate
        # with a rolling restart instead (docs/operations.md, Rotate a secret).
        change_mode = "noop"
        data        = <<-EOT
        {{- with nomadVar "nomad/jobs/wafleet-router" -}}
        CONSUL_HTTP_TOKEN={{ .consul_token }}
        WAFLEET_ADMIN_TOKEN={{ .admin_token }}
        WAFLEET_TOKEN_SECRET={{ .token_secret }}
        {{- if .token_secret_previous }}
        WAFLEET_TOKEN_SECRET_PREVIOUS={{ .token_secret_previous }}
        {{- end }}
        {{- end }}
        EOT
      }

      resources {
        cpu    = 1000
        memory = 256
      }
    }
  }
}
