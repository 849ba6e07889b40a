# Hourly profile backups (`wafleet backup`, src/backup/, docs/operations.md "Restore a profile").
#
#   nomad job run -var-file=nomad/vars/production.vars.hcl nomad/wafleet-backup.nomad.hcl
#
# Reads <data> (the NFS volume, read-only) and writes timestamped, checksummed backups to a
# second host volume (another NFS export or a mounted bucket). Profiles in use are copied only
# when two passes agree; a profile still changing is skipped, the run exits non-zero, and the
# restart policy retries it a few minutes later.

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

job "wafleet-backup" {
  type        = "batch"
  datacenters = var.datacenters

  # Read by ansible/rollout.yml to know what runs now (and what to roll back to).
  meta {
    wafleet_version = var.wafleet_version
  }

  periodic {
    crons            = ["0 * * * *"]
    time_zone        = "UTC"
    prohibit_overlap = true
  }

  group "backup" {
    count = 1

    # A run that skipped a busy profile fails; retry twice, five minutes apart.
    restart {
      attempts = 2
      interval = "1h"
      delay    = "5m"
      mode     = "fail"
    }

    # The next hourly run is the reschedule.
    reschedule {
      attempts  = 0
      unlimited = false
    }

    volume "data" {
      type      = "host"
      source    = var.data_volume
      read_only = true
    }

    volume "backups" {
      type      = "host"
      source    = var.backup_volume
      read_only = false
    }

    task "backup" {
      driver = "exec"
      user   = "wafleet"

      kill_signal  = "SIGINT"
      kill_timeout = "30s"

      config {
        command = "/usr/local/lib/wafleet/${var.wafleet_version}/wafleet"
        args = [
          "backup",
          "--data", "/data",
          "--dest", "/backups",
          "--keep", "${var.backup_keep}",
          "--log-format", "json",
        ]
        # See the worker job: SingletonLock pids are host pids.
        pid_mode = "host"
      }

      volume_mount {
        volume      = "data"
        destination = "/data"
        read_only   = true
      }

      volume_mount {
        volume      = "backups"
        destination = "/backups"
        read_only   = false
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}
