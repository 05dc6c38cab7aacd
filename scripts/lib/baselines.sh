# Sourced by the bench scripts: installs the baselines from the package registries
# (never vendored) and builds the release binary.

# etcd from Debian (the package's own service is stopped: the benchmark runs its own).
install_etcd() {
  command -v etcd >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server
    systemctl disable --now etcd 2>/dev/null || pkill -x etcd || true
  else
    echo "etcd not installed and not root: the etcd rows will be skipped" >&2
  fi
}

# wrk from Debian, the HTTP benchmark's load generator (without it `bench http` uses its
# in-process one, which shares the machine's cores less sparingly).
install_wrk() {
  command -v wrk >/dev/null && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk
  else
    echo "wrk not installed and not root: bench http uses its in-process load generator" >&2
  fi
}

# FastAPI and uvicorn (with its standard extras, httptools and uvloop, as FastAPI
# recommends for deployment) from PyPI into a private venv; prints its python.
baseline_python() {
  local venv=.bench-venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  if ! "$venv/bin/python" -c 'import fastapi, uvicorn, httptools, uvloop' 2>/dev/null; then
    "$venv/bin/pip" install --quiet fastapi 'uvicorn[standard]' >&2
  fi
  echo "$venv/bin/python"
}

build_release() {
  cargo build --release -p panal >&2
}
