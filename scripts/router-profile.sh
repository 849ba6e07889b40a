# Sourced by scripts/bench for `scripts/bench router-profile`: per-request instruction counts of
# the router under callgrind. Wall-clock numbers on a shared machine are noise; instruction
# counts are repeatable under load, so hot-path changes are judged with them.
#
# Setup: a static nginx backend (`return 200`, outside the measured process) and the router
# alone in the bench binary (`WAFLEET_BENCH_SERVE_ONLY`, benches/router.rs: release build, a
# fixed one-shard map and instance, no Consul in the process) under `valgrind --tool=callgrind`. A Python driver sends warm-up requests, the counters are zeroed,
# then N requests (WAFLEET_PROFILE_REQUESTS, default 2000) go over 16 keep-alive connections
# (WAFLEET_PROFILE_CONNS) with a workspace token, and the counters are dumped. Prints the total
# instructions per request and the inclusive cost per request of the main components.
# WAFLEET_PROFILE_EXE runs a given bench binary instead of building one.
# WAFLEET_PROFILE_TARGET=nginx measures nginx `proxy_pass` (one process, upstream keep-alive)
# the same way instead, for the user-space instructions the router is compared with.

router_profile() {
  apt_install valgrind nginx python3
  local n="${WAFLEET_PROFILE_REQUESTS:-2000}" conns="${WAFLEET_PROFILE_CONNS:-16}"
  local out="${WAFLEET_PROFILE_OUT:-target/router-profile}"
  # WAFLEET_PROFILE_EXE: an already built bench binary (e.g. a copy kept from before a change).
  local exe="${WAFLEET_PROFILE_EXE:-}"
  if [ -z "$exe" ] && [ "${WAFLEET_PROFILE_TARGET:-router}" != nginx ]; then
    step "release build of the router bench (nice)"
    exe="$(nice -n 5 cargo bench --bench router --no-run 2>&1 | tee /dev/stderr |
      sed -n 's/.*Executable.*(\(.*\)).*/\1/p' | tail -1)"
    [ -x "$exe" ] || { echo "cannot find the bench executable" >&2; return 1; }
  fi
  rm -rf "$out" && mkdir -p "$out"
  out="$(cd "$out" && pwd)"
  local secret="bench-secret-0123456789" ws="bench-ws"
  local bport rport
  bport="$(free_port)"
  cat >"$out/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $out/nginx.pid;
error_log $out/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $out/tmp-body; proxy_temp_path $out/tmp-proxy;
  fastcgi_temp_path $out/tmp-fcgi; uwsgi_temp_path $out/tmp-uwsgi; scgi_temp_path $out/tmp-scgi;
  server {
    listen 127.0.0.1:$bport;
    location / { add_header x-wafleet-shard 0; default_type application/json; return 200 '{"sessions":[]}'; }
  }
}
CONF
  local pids=()
  # shellcheck disable=SC2064
  trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
  nginx -p "$out" -e "$out/nginx-error.log" -c "$out/nginx.conf" &
  pids+=($!)
  rport="$(free_port)"
  if [ "${WAFLEET_PROFILE_TARGET:-router}" = nginx ]; then
    cat >"$out/proxy.conf" <<CONF
daemon off;
master_process off;
pid $out/proxy.pid;
error_log $out/proxy-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $out/ptmp-body; proxy_temp_path $out/ptmp-proxy;
  fastcgi_temp_path $out/ptmp-fcgi; uwsgi_temp_path $out/ptmp-uwsgi; scgi_temp_path $out/ptmp-scgi;
  upstream backend { server 127.0.0.1:$bport; keepalive 64; }
  server {
    listen 127.0.0.1:$rport;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
    valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" \
      nginx -p "$out" -e "$out/proxy-error.log" -c "$out/proxy.conf" \
      >"$out/router.stdout" 2>"$out/router.stderr" &
  else
    WAFLEET_BENCH_SERVE_ONLY="127.0.0.1:$bport" RUST_LOG=warn \
      valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" "$exe" \
      >"$out/router.stdout" 2>"$out/router.stderr" &
  fi
  local vpid=$!
  pids+=("$vpid")
  if [ "${WAFLEET_PROFILE_TARGET:-router}" != nginx ]; then
    # The router picks its own port and says which on its readiness line.
    local deadline=$((SECONDS + 120))
    until grep -q '"ready":true' "$out/router.stdout" 2>/dev/null; do
      [ $SECONDS -lt $deadline ] || { echo "router never printed its readiness line" >&2; cat "$out/router.stderr" >&2; return 1; }
      kill -0 "$vpid" 2>/dev/null || { echo "router exited" >&2; cat "$out/router.stderr" >&2; return 1; }
      sleep 0.2
    done
    rport="$(sed -n 's/.*"http":"127.0.0.1:\([0-9]*\)".*/\1/p' "$out/router.stdout")"
  fi
  step "driving $n requests over $conns connections"
  python3 - "$rport" "$ws" "$secret" "$n" "$conns" "$vpid" <<'PY'
import base64, hashlib, hmac, http.client, subprocess, sys, threading, time
port, ws, secret, n, conns, vpid = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
mac = hmac.new(secret.encode(), b"wafleet/v1/workspace-token/" + ws.encode(), hashlib.sha256).digest()
token = "wft1.%s.%s" % (ws, base64.urlsafe_b64encode(mac).decode().rstrip("="))
path = "/v1/workspaces/%s/sessions" % ws
headers = {"Authorization": "Bearer " + token}
deadline = time.time() + 120
while True:  # ready when a proxied request answers 200
    try:
        c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=30)
        c.request("GET", path, headers=headers)
        if c.getresponse().status == 200:
            break
    except OSError:
        pass
    if time.time() > deadline:
        sys.exit("router never became ready")
    time.sleep(0.2)
def drive(count, out):
    c = http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)
    for _ in range(count):
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        r.read()
        if r.status != 200:
            out.append(r.status)
def burst(total):
    errs, ts = [], []
    for i in range(conns):
        t = threading.Thread(target=drive, args=(total // conns + (1 if i < total % conns else 0), errs))
        t.start(); ts.append(t)
    for t in ts:
        t.join()
    if errs:
        sys.exit("non-200 answers: %r" % errs[:5])
burst(max(conns * 4, n // 10))  # warm-up: pools, caches, lazily built metrics
subprocess.run(["callgrind_control", "--zero", vpid], check=True, stdout=subprocess.DEVNULL)
start = time.time()
burst(n)
subprocess.run(["callgrind_control", "--dump=measured", vpid], check=True, stdout=subprocess.DEVNULL)
print("drove %d requests in %.1f s (under valgrind)" % (n, time.time() - start))
PY
  local dump
  dump="$(ls -t "$out"/callgrind.out.* | head -1)"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  trap - EXIT
  local total
  total="$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')"
  echo "dump: $dump"
  echo "instructions per request: $((total / n)) (total $total over $n requests)"
  callgrind_annotate --inclusive=yes "$dump" 2>/dev/null >"$out/inclusive.txt"
  callgrind_annotate "$dump" 2>/dev/null >"$out/self.txt"
  echo "top inclusive (per request; full listing in $out/inclusive.txt):"
  awk -v n="$n" '/^[0-9,]+ / { v=$1; gsub(",","",v); $1=""; printf "%10d  %s\n", v/n, substr($0,1,150) }' \
    "$out/inclusive.txt" | head -60
}

# free_port: a port the kernel just handed out for 127.0.0.1 (free right now).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
