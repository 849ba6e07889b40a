# Prometheus for wafleet: discovers workers and routers through Consul, evaluates the alert
# rules in nomad/monitoring/rules/ (docs/operations.md explains every alert).
#
#   nomad job run -var-file=nomad/vars/production.vars.hcl nomad/monitoring/prometheus.nomad.hcl
#
# Runs Debian's `prometheus` binary (ansible/roles/monitoring installs it and copies the rule
# files into the host volume "prometheus-rules"); TSDB lives in the host volume
# "prometheus-data". The Consul token for discovery (service:read, node:read) comes from the
# Nomad Variable nomad/jobs/wafleet-prometheus.

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

job "wafleet-prometheus" {
  type        = "service"
  datacenters = var.datacenters

  # Hosts of this kind (ansible/roles/nomad sets meta.wafleet_role from the inventory group).
  constraint {
    attribute = "${meta.wafleet_role}"
    value     = "monitoring"
  }

  update {
    max_parallel     = 1
    health_check     = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "3m"
    auto_revert      = true
  }

  group "prometheus" {
    count = 1

    restart {
      attempts = 3
      interval = "10m"
      delay    = "15s"
      mode     = "fail"
    }

    network {
      port "http" {
        static = 9090
      }
    }

    volume "rules" {
      type      = "host"
      source    = "prometheus-rules"
      read_only = true
    }

    volume "data" {
      type      = "host"
      source    = "prometheus-data"
      read_only = false
    }

    service {
      name     = "wafleet-prometheus"
      port     = "http"
      provider = "consul"

      check {
        type     = "http"
        path     = "/-/ready"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "prometheus" {
      driver = "exec"
      user   = "prometheus"

      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      config {
        command = "/usr/bin/prometheus"
        args = [
          "--config.file=${NOMAD_SECRETS_DIR}/prometheus.yml",
          "--storage.tsdb.path=/prometheus",
          "--storage.tsdb.retention.time=${var.prometheus_retention}",
          "--web.listen-address=0.0.0.0:${NOMAD_PORT_http}",
          "--web.enable-lifecycle",
        ]
      }

      volume_mount {
        volume      = "rules"
        destination = "/etc/wafleet/prometheus/rules"
        read_only   = true
      }

      volume_mount {
        volume      = "data"
        destination = "/prometheus"
        read_only   = false
      }

      # The config holds the Consul token, so it is rendered into secrets/.
      template {
        destination   = "secrets/prometheus.yml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
        global:
          scrape_interval: 15s
          evaluation_interval: 15s
          external_labels:
            datacenter: {{ env "NOMAD_DC" }}

        rule_files:
          - /etc/wafleet/prometheus/rules/*.yml

        alerting:
          alertmanagers:
            - consul_sd_configs:
                - server: 127.0.0.1:8500
                  services: ["${var.alertmanager_service}"]
        {{- with nomadVar "nomad/jobs/wafleet-prometheus" }}
                  token: {{ .consul_token }}
        {{- end }}

        scrape_configs:
          # Workers: Nomad's registration (wafleet-worker-http) exists even while a worker is
          # not ready, so a worker stuck waiting for its lock is still scraped.
          - job_name: wafleet-worker
            honor_labels: true
            consul_sd_configs:
              - server: 127.0.0.1:8500
                services: ["wafleet-worker-http"]
        {{- with nomadVar "nomad/jobs/wafleet-prometheus" }}
                token: {{ .consul_token }}
        {{- end }}
            relabel_configs:
              - source_labels: [__meta_consul_service_metadata_shard]
                target_label: shard
              - source_labels: [__meta_consul_service_metadata_version]
                target_label: version
              - source_labels: [__meta_consul_node]
                target_label: node

          - job_name: wafleet-router
            honor_labels: true
            consul_sd_configs:
              - server: 127.0.0.1:8500
                services: ["wafleet-router-http"]
        {{- with nomadVar "nomad/jobs/wafleet-prometheus" }}
                token: {{ .consul_token }}
        {{- end }}
            relabel_configs:
              - source_labels: [__meta_consul_service_metadata_version]
                target_label: version
              - source_labels: [__meta_consul_node]
                target_label: node
        EOT
      }

      resources {
        cpu    = 1000
        memory = 2048
      }
    }
  }
}
