#!/usr/bin/env bash
# Idempotent setup for tests, demo and benchmarks: system tools (only what is missing), kernel
# devices, npm deps, the native addon and the TypeScript build. Safe to run on every `npm test`.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'install-deps: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: must run as root (namespaces, TUN and apt-get need it)" >&2
  exit 1
fi

# --- Debian packages -----------------------------------------------------------------------------
# package -> a command it provides (checked first so a tool installed some other way also counts).
declare -A PKG_CMD=(
  [etcd-server]=etcd
  [etcd-client]=etcdctl
  [iperf3]=iperf3
  [tcpdump]=tcpdump
  [iptables]=iptables
  [iproute2]=ip
  [openssl]=openssl
  [procps]=ps
  [iputils-ping]=ping
  [ethtool]=ethtool
  [clang-format]=clang-format # the native/ format gate in scripts/lint.sh
)
missing=()
for pkg in "${!PKG_CMD[@]}"; do
  if ! command -v "${PKG_CMD[$pkg]}" >/dev/null 2>&1 &&
     ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  # The etcd-server package ships a service that would grab 2379 in the root namespace; forbid
  # service starts during the install unless the machine already has a policy in place.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  restore_policy() { if [ "$own_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; }
  trap restore_policy EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  restore_policy
  trap - EXIT
fi

# A packaged etcd service (started by an earlier install or at boot) must not serve 2379 in the
# root namespace: tests run their own etcd and a stray one hides misconfigured endpoints.
if command -v etcd >/dev/null 2>&1; then
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    if systemctl is-active --quiet etcd 2>/dev/null; then
      log "stopping packaged etcd service"
      systemctl stop etcd || true
    fi
    if systemctl is-enabled --quiet etcd 2>/dev/null; then systemctl disable --quiet etcd || true; fi
  elif [ -x /etc/init.d/etcd ] && /etc/init.d/etcd status >/dev/null 2>&1; then
    log "stopping packaged etcd service"
    /etc/init.d/etcd stop >/dev/null 2>&1 || true
  fi
  if command -v ss >/dev/null 2>&1 && ss -Hltn 'sport = :2379' 2>/dev/null | grep -q .; then
    log "WARNING: something still listens on port 2379 in the root namespace: $(ss -Hltnp 'sport = :2379' | head -1)"
  fi
fi

# --- kernel: TUN and VXLAN -------------------------------------------------------------------------
if [ ! -c /dev/net/tun ]; then
  if [ ! -d /sys/module/tun ] && command -v modprobe >/dev/null 2>&1; then modprobe tun || true; fi
  if [ ! -c /dev/net/tun ]; then
    log "creating /dev/net/tun"
    mkdir -p /dev/net
    mknod /dev/net/tun c 10 200
    chmod 0666 /dev/net/tun
  fi
fi
if [ ! -d /sys/module/vxlan ]; then
  if command -v modprobe >/dev/null 2>&1; then
    log "loading vxlan module"
    modprobe vxlan || true
  fi
  # Built-in drivers only show up in /sys/module once used; a scratch namespace settles it.
  probe_ns="tsf-vxprobe-$$"
  if ip netns add "$probe_ns" 2>/dev/null; then
    if ! ip -n "$probe_ns" link add vxprobe type vxlan id 1 dstport 8472 2>/dev/null; then
      ip netns del "$probe_ns" 2>/dev/null || true
      echo "install-deps: kernel cannot create VXLAN devices (no vxlan module)" >&2
      exit 1
    fi
    ip netns del "$probe_ns" 2>/dev/null || true
  fi
fi

# --- npm deps, native addon, TypeScript ------------------------------------------------------------
# Runs a step with its output kept aside; shown only if the step fails.
quietly() {
  local out
  out="$(mktemp)"
  if ! "$@" >"$out" 2>&1; then
    cat "$out" >&2
    rm -f "$out"
    echo "install-deps: failed: $*" >&2
    exit 1
  fi
  rm -f "$out"
}

lock_sum() { sha256sum package-lock.json package.json | sha256sum | cut -d' ' -f1; }
stamp=node_modules/.tsflanneld-lock.sha256
want="$(lock_sum)"
need_ci=0
if [ ! -d node_modules ]; then
  need_ci=1
elif [ -f "$stamp" ]; then
  [ "$(cat "$stamp")" = "$want" ] || need_ci=1
elif [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # No stamp yet (node_modules made by hand): trust npm's own hidden lockfile if it is current.
  need_ci=1
fi
if [ "$need_ci" = 1 ]; then
  log "npm ci"
  quietly npm ci --no-audit --no-fund --loglevel=error
fi
echo "$want" >"$stamp"

addon=build/Release/tsflanneld_native.node
rebuild=0
if [ ! -f "$addon" ] || [ binding.gyp -nt "$addon" ]; then
  rebuild=1
else
  for src in native/src/*; do
    if [ "$src" -nt "$addon" ]; then rebuild=1; break; fi
  done
fi
if [ "$rebuild" = 1 ]; then
  log "building native addon (node-gyp rebuild)"
  # Always a fresh build here ("native-build" = node-gyp rebuild, with npm's own node-gyp on PATH): the
  # package's "install" script (node-gyp-build) would accept any addon that loads, also a stale one.
  quietly npm run --silent native-build
fi

log "tsc"
npm run --silent build
