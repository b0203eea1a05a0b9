# Shared by scripts/kube and scripts/node (sourced, never run): where things live, certificates,
# kubeconfigs and the processes the local cluster starts. The caller defines say() and die().

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_SRC="$ROOT/scripts/kube-build"
CACHE_ROOT=${PREVIEWS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pr-previews}
STATE=${PREVIEWS_STATE_DIR:-$ROOT/.state}/kube
KUBECONFIG_PATH="$STATE/kubeconfig"

# The real node's network (docs/local-cluster.md): one bridge of our own whose address is the node's
# (and the API server's, so pods reach it through the `kubernetes` Service), the pods' subnet on it,
# and the Services' range. kwok's pods get addresses of a range nothing routes (an unreachable route).
NODE_BRIDGE=${PREVIEWS_NODE_BRIDGE:-prv0}
POD_SUBNET=${PREVIEWS_NODE_POD_SUBNET:-10.244.0.0/24}
NODE_IP=${POD_SUBNET%.*/*}.1
SERVICE_RANGE=10.96.0.0/16
CLUSTER_DNS_IP=10.96.0.10
KWOK_POD_RANGE=10.0.0.0/16
NODE_NAME=real-node-0
# The route controller's listener on loopback, and the Gateway previews attach their routes to.
HTTP_PORT=${PREVIEWS_HTTP_PORT:-18080}
HTTPS_PORT=${PREVIEWS_HTTPS_PORT:-18443}
TLS_SECRET=previews-tls  # the wildcard certificate's Secret, in the Gateway's namespace
GATEWAY_CLASS=previews-local
GATEWAY_NAMESPACE=${PREVIEWS_GATEWAY_NAMESPACE:-gateway-system}
GATEWAY_NAME=${PREVIEWS_GATEWAY_NAME:-previews}

go_version() { go env GOVERSION 2>/dev/null || echo nogo; }

# Whether this cluster has a real node: PREVIEWS_KUBE_REAL_NODE=true|false, default true as root on
# Linux (the node needs root: mounts, network interfaces, iptables), false otherwise.
real_node_enabled() {
  case "${PREVIEWS_KUBE_REAL_NODE:-auto}" in
    true|1|yes) return 0 ;;
    false|0|no) return 1 ;;
    auto) [ "$(id -u)" = 0 ] && [ "$(uname -s)" = Linux ] ;;
    *) die "PREVIEWS_KUBE_REAL_NODE is true, false or auto" ;;
  esac
}

pid_of() { cat "$STATE/pids/$1.pid" 2>/dev/null || true; }

is_alive() {
  # Alive only if the recorded PID still runs the binary we started, so a recycled PID is never
  # mistaken for ours (or killed by 'down').
  local pid; pid=$(pid_of "$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "/$1 "
}

start_process() {  # start_process <name> <binary> <args...>: in its own session, logging to logs/<name>.log
  local name=$1 binary=$2; shift 2
  if is_alive "$name"; then return; fi
  say "starting $name"
  setsid "$binary" "$@" >> "$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/pids/$name.pid"
}

stop_process() {  # stop_process <name> [seconds before SIGKILL]
  local name=$1 grace=${2:-10} pid
  if is_alive "$name"; then
    pid=$(pid_of "$name")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((grace * 5))); do is_alive "$name" || break; sleep 0.2; done
    if is_alive "$name"; then kill -9 "$pid" 2>/dev/null || true; sleep 0.2; fi
    say "stopped $name ($pid)"
  fi
  rm -f "$STATE/pids/$name.pid"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() {  # wait_for <what> <seconds> <command...>
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      say "timed out after ${limit}s waiting for $what; last log lines:"
      tail -n 15 "$STATE"/logs/*.log >&2 || true
      die "$what is not ready"
    fi
    sleep 0.5
  done
}

make_cert() {  # make_cert <name> <CN> [<O>] [<SAN>]: a server certificate when a SAN is given, else a client one
  local name=$1 cn=$2 org=${3:-} san=${4:-}
  local subj="/CN=$cn"; [ -n "$org" ] && subj="/O=$org$subj"
  local ext="$STATE/pki/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    if [ -n "$san" ]; then echo "extendedKeyUsage=serverAuth"; echo "subjectAltName=$san";
    else echo "extendedKeyUsage=clientAuth"; fi
  } > "$ext"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$STATE/pki/$name.key" -subj "$subj" \
    -out "$STATE/pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$STATE/pki/$name.csr" -CA "$STATE/pki/ca.crt" -CAkey "$STATE/pki/ca.key" \
    -CAcreateserial -days 3650 -extfile "$ext" -out "$STATE/pki/$name.crt" 2>/dev/null
}

ensure_cert() {  # ensure_cert <name> <CN> [<O>] [<SAN>]: make it unless it exists
  [ -s "$STATE/pki/$1.crt" ] || make_cert "$@"
}

write_kubeconfig() {  # write_kubeconfig <file> <cert name>: the API server's address from ports.env
  local b64ca b64crt b64key
  b64ca=$(base64 -w0 < "$STATE/pki/ca.crt")
  b64crt=$(base64 -w0 < "$STATE/pki/$2.crt")
  b64key=$(base64 -w0 < "$STATE/pki/$2.key")
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: previews-local
  cluster:
    server: https://$API_HOST:$API_PORT
    certificate-authority-data: $b64ca
users:
- name: $2
  user:
    client-certificate-data: $b64crt
    client-key-data: $b64key
contexts:
- name: previews-local
  context: {cluster: previews-local, user: $2}
current-context: previews-local
EOF
  chmod 600 "$1"
}

write_file() {  # write_file <path>: stdin to the file, untouched when the content is the same
  # (kube-proxy exits when its configuration file is written, even with what it already had)
  local tmp="$1.partial"
  cat > "$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}

kc() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }

apply_objects() {  # objects on stdin, server-side applied by the scripts' own field manager
  kc apply --server-side --force-conflicts --field-manager previews-kube-script -f - >/dev/null
}

# build_lock <name>: hold the cache's lock for one kind of build until this script exits, so that two
# checkouts building at once (parallel worktrees, a CI run beside a developer) build once, not twice into
# the same directory; the second waits, then finds the result cached.
build_lock() {
  mkdir -p "$CACHE_ROOT"
  exec 9>"$CACHE_ROOT/$1.lock"
  if ! flock -n 9; then
    say "another build of the $1 binaries is under way (lock $CACHE_ROOT/$1.lock); waiting for it"
    flock 9
  fi
}
# The processes started later must not inherit the lock.
build_unlock() { exec 9>&-; }
