# wafleet workers: one allocation per shard (DESIGN §1, §3, §5; docs/deployment.md).
#
#   nomad job run -var-file=nomad/vars/production.vars.hcl nomad/wafleet-worker.nomad.hcl
#
# Allocation index k runs `wafleet worker --shard k`. NOMAD_ALLOC_INDEX is NOT a unique owner
# (a replacement or a failed task may reuse it), so ownership is fenced by the worker's Consul
# shard lock (wafleet/locks/shards/<k>); the job only has to start one worker per index.
#
# Secrets never appear here: the template below reads them from the Nomad Variable
# nomad/jobs/wafleet-worker (written by ansible/roles/deploy or by hand, docs/deployment.md).

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

job "wafleet-worker" {
  type        = "service"
  datacenters = var.datacenters

  # Hosts of this kind (ansible/roles/nomad sets meta.wafleet_role from the inventory group).
  constraint {
    attribute = "${meta.wafleet_role}"
    value     = "worker"
  }

  # Read by ansible/rollout.yml to know what runs now (and what to roll back to).
  meta {
    wafleet_version = var.wafleet_version
  }

  # One worker per host: two shards on one host would double the blast radius of a host loss
  # and fight over its memory.
  constraint {
    operator = "distinct_hosts"
    value    = "true"
  }

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  # One allocation at a time, healthy = Nomad's /readyz check passing. No canaries: a canary
  # reuses an alloc index whose shard lock the old allocation still holds, so it could never
  # become ready (consul-nomad.md §4.2) and would stall every deployment.
  update {
    max_parallel      = 1
    canary            = 0
    health_check      = "checks"
    min_healthy_time  = "30s"
    healthy_deadline  = "5m"
    progress_deadline = "10m"
    auto_revert       = true
  }

  group "worker" {
    count = var.shards

    # Node drains move one shard at a time too.
    migrate {
      max_parallel     = 1
      health_check     = "checks"
      min_healthy_time = "30s"
      healthy_deadline = "5m"
    }

    # Client side: restart a crashed worker in place a few times (its profiles and SQLite are on
    # NFS, so any host would do, but the local restart is faster: the restarted process proves
    # its predecessor dead and takes over its Consul session, docs/operations.md "Healing").
    # The delay is part of the heal budget (<= 20 s from the crash to every workspace served):
    # Nomad's default 15 s (plus up to 25 % jitter) alone would break it.
    # nomad/tools/check_assets.py keeps delay x 1.25 + the worker's own heal time within 20 s.
    restart {
      attempts = 3
      interval = "10m"
      delay    = "2s"
      mode     = "fail"
    }

    # Server side: then move it to another host, forever, with exponential backoff.
    reschedule {
      delay          = "30s"
      delay_function = "exponential"
      max_delay      = "10m"
      unlimited      = true
    }

    network {
      port "http" {}
    }

    volume "data" {
      type      = "host"
      source    = var.data_volume
      read_only = false
    }

    # Nomad deregisters this service, waits shutdown_delay, then sends kill_signal. The worker's
    # own TTL service (wafleet-worker, tag shard-k) is what routers use; the worker removes it
    # itself as the first step of its drain.
    shutdown_delay = "5s"

    # Registered by Nomad for health (deployments, migrations) and for Prometheus discovery.
    # It must not be called wafleet-worker: the worker registers that name itself with a TTL
    # check (Nomad checks cannot be TTL checks), and routers resolve it over DNS.
    service {
      name        = "wafleet-worker-http"
      port        = "http"
      provider    = "consul"
      tags        = ["shard-${NOMAD_ALLOC_INDEX}", "wafleet", "metrics"]
      canary_tags = ["canary"]

      meta {
        shard   = "${NOMAD_ALLOC_INDEX}"
        version = "${var.wafleet_version}"
      }

      # Readiness: the worker holds its shard lock and serves. Drives deployment health.
      check {
        name     = "readyz"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }

      # Liveness: a worker whose HTTP loop hangs is restarted through the restart policy.
      # The grace covers startup and waiting for the previous holder's lock (TTL x2 + lock delay
      # = 45 s with the defaults).
      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "3s"

        check_restart {
          limit           = 3
          grace           = "90s"
          ignore_warnings = true
        }
      }
    }

    task "worker" {
      driver = "exec"
      user   = "wafleet"

      # The worker drains on SIGINT or SIGTERM (DESIGN §5): deregister, stop accepting work,
      # close every browser (profiles flushed), release its locks. --drain-grace-secs 25 bounds
      # that; kill_timeout = drain grace + 5 s margin = 30 s, which is also the Nomad client's
      # default max_kill_timeout (a larger value would be silently capped).
      kill_signal  = "SIGINT"
      kill_timeout = "30s"

      config {
        command = "/usr/local/lib/wafleet/${var.wafleet_version}/wafleet"
        args = [
          "worker",
          "--shard", "${NOMAD_ALLOC_INDEX}",
          "--data", "/data",
          "--listen", "${NOMAD_IP_http}:${NOMAD_PORT_http}",
          "--advertise", "${NOMAD_ADDR_http}",
          "--kv-prefix", "wafleet",
          "--session-ttl-secs", "15",
          "--lock-delay-secs", "15",
          "--drain-grace-secs", "25",
          "--restore-concurrency", "4",
          "--wa-url", "${var.wa_url}",
          "--log-format", "json",
        ]
        # Host pid namespace: the pid Chromium writes into a profile's SingletonLock is then a
        # host pid that `wafleet backup` / `wafleet restore` on this host can check.
        pid_mode = "host"
      }

      volume_mount {
        volume      = "data"
        destination = "/data"
        read_only   = false
      }

      env {
        CONSUL_HTTP_ADDR   = "http://127.0.0.1:8500"
        WAFLEET_CONSUL_DNS = "127.0.0.1:8600"
        WAFLEET_CHROMIUM   = "/usr/bin/chromium"
        WAFLEET_LOG_FORMAT = "json"
      }

      # Secrets from the Nomad Variable nomad/jobs/wafleet-worker (readable by this job's
      # workload identity without any extra policy), rendered into secrets/ (private to the
      # task, never logged). The Consul token is per node: consul_token_<node> may only create
      # sessions on <node> (consul/policies/wafleet-worker-session.hcl.tmpl), so the template
      # picks the one for the node this allocation landed on. consul_fallback_addrs (the Consul
      # servers' HTTP addresses, written by ansible/roles/deploy) lets the worker renew its
      # session while the local agent restarts, so an agent restart does not fence it
      # (docs/worker.md, Fencing).
      template {
        destination = "secrets/wafleet.env"
        env         = true
        # Not "restart": every allocation would restart at once when a secret changes. Rotate
        # with a rolling restart instead (docs/operations.md, Rotate a secret).
        change_mode = "noop"
        data        = <<-EOT
        {{- $node := env "node.unique.name" -}}
        {{- with nomadVar "nomad/jobs/wafleet-worker" -}}
        {{- range $k, $v := . }}
        {{- if eq $k (printf "consul_token_%s" $node) }}
        CONSUL_HTTP_TOKEN={{ $v }}
        {{- end }}
        {{- end }}
        WAFLEET_ADMIN_TOKEN={{ .admin_token }}
        WAFLEET_TOKEN_SECRET={{ .token_secret }}
        {{- if .token_secret_previous }}
        WAFLEET_TOKEN_SECRET_PREVIOUS={{ .token_secret_previous }}
        {{- end }}
        {{- if .consul_fallback_addrs }}
        WAFLEET_CONSUL_FALLBACK_ADDRS={{ .consul_fallback_addrs }}
        {{- end }}
        {{- end }}
        EOT
      }

      resources {
        cpu        = var.cpu_mhz
        memory     = var.memory_mb
        memory_max = var.memory_max_mb
      }

      logs {
        max_files     = 5
        max_file_size = 50
      }
    }
  }
}
