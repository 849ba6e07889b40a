# Shared shell helpers for scripts/*. Sourced, not run.

step() { printf '\n==> %s\n' "$*"; }

# Builds the debug binaries (wafleet, wafleet-chaos) together with the test targets: the
# dev-dependencies change some dependencies' features, so a plain `cargo build --bin wafleet`
# after the test build would compile those dependencies a second time (minutes on 2 cores).
# This way the scripts after `cargo test` reuse what the test build made.
build_bins() { cargo build --workspace --bins --tests "$@"; }

# apt_install PKG…: installs Debian packages that are missing (as root), or says what to run.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ]; then
    step "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "missing packages: ${missing[*]}; run: sudo apt-get install ${missing[*]}" >&2
    return 1
  fi
}

# ensure_test_deps: what the test suite needs on top of the Rust toolchain.
ensure_test_deps() {
  apt_install chromium fonts-liberation openssl python3 python3-venv procps iproute2 ffmpeg
  ensure_moto
}

# ensure_moto: a real S3 server for tests/it/media.rs (moto's `moto_server`), in a venv under
# target/ so it never touches the system Python.
ensure_moto() {
  local venv="${CARGO_TARGET_DIR:-target}/test-venv"
  [ -x "$venv/bin/moto_server" ] && return 0
  step "pip install moto[server] into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'moto[server]'
}
