#!/usr/bin/env bash
# The idle-connection target on its own subject: N (default 100,000) authenticated sockets that
# send nothing, held by ONE ws-gateway process (its own Node process, as in production, with the
# embedded Kafka-protocol broker beside it), and that process's RSS before and after. N is capped
# by the open-files limit: where the hard limit cannot be raised (no CAP_SYS_RESOURCE, as on every
# machine this was run on so far: 20,000), the bench measures fewer and projects 100,000.
#
#   tools/bench/device/idle-gateway.sh NODE BUNDLE_DIR OUT_DIR [N [BENCH_OPTIONS...]]
#
# NODE is a Node 20 binary, BUNDLE_DIR holds `npx tsx tools/bench/src/bundle.ts BUNDLE_DIR`'s
# output (no checkout or node_modules needed), OUT_DIR gets the bench report and the logs. It
# needs an open-files limit above N + a few thousand (root, or a raised hard limit): a developer
# box capped at 20,000 files can only run it with a smaller N. The gateway and the broker are
# pinned to two cores (the target's machine), the clients get the rest. Ports: BROKER_PORT (19092),
# WS_PORT (18080), INTERNAL_PORT (19080).
set -euo pipefail
node=$1 bundle=$2 out=$3 n=${4:-100000}
broker_port=${BROKER_PORT:-19092} ws_port=${WS_PORT:-18080} internal_port=${INTERNAL_PORT:-19080}
mkdir -p "$out"
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"
echo "$(date +%T) open-files limit $(ulimit -n), $(nproc) cores, $(awk '/MemTotal/ {print int($2/1048576)}' /proc/meminfo) GiB"
work=$(mktemp -d)
secret=bench-idle-secret-0123456789abcdef0123
# Runs "$@" on the given cores. exec keeps the background job's pid: it becomes the Node process.
pin() { if command -v taskset >/dev/null && [ "$(nproc)" -gt 2 ]; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi; }
pids=()
# The jobs are disowned as they start, so the shell never reports them killed; this waits itself.
cleanup() {
  kill -9 "${pids[@]}" 2>/dev/null || true # nothing here is worth a graceful stop
  for _ in $(seq 50); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.1; done
  rm -rf "$work"
}
trap cleanup EXIT

# Waits (up to 30 s) until the URL answers 200, or the process named by $2 has died.
wait_ready() {
  for _ in $(seq 60); do
    kill -0 "$2" 2>/dev/null || { echo "$3 exited before it was ready" >&2; return 1; }
    "$node" -e "fetch('$1').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))" && return 0
    sleep 0.5
  done
  echo "$3 not ready within 30 s" >&2
  return 1
}

for port in $broker_port $ws_port $internal_port; do
  "$node" -e "require('net').connect($port, '127.0.0.1').on('connect', () => process.exit(1)).on('error', () => process.exit(0))" ||
    { echo "port $port is taken: stop what holds it first" >&2; exit 1; }
done

(pin 0,1 "$node" "$bundle/broker.js" --port $broker_port --data "$work/kafka" --fsync never >"$out/broker.log" 2>&1) &
pids+=($!)
disown
for _ in $(seq 60); do grep -qs 'kafka broker ready' "$out/broker.log" && break; sleep 0.5; done

(pin 0,1 env JWT_SECRET=$secret KAFKA_BROKERS=127.0.0.1:$broker_port HOST=127.0.0.1 PORT=$ws_port INTERNAL_PORT=$internal_port \
  MAX_CONNECTIONS=$((n + 10000)) LOG_LEVEL=warn "$node" "$bundle/ws-gateway.js" >"$out/ws-gateway.log" 2>&1) &
gateway=$!
pids+=("$gateway")
disown
wait_ready http://127.0.0.1:$internal_port/readyz "$gateway" ws-gateway

clients=$([ "$(nproc)" -gt 2 ] && echo "2-$(($(nproc) - 1))" || echo 0-1)
(pin "$clients" "$node" "$bundle/bench.js" --ws ws://127.0.0.1:$ws_port/v1/ws --jwt-secret "$secret" \
  --pid "$gateway" --gateway-metrics http://127.0.0.1:$internal_port/metrics --only idle --idle "$n" --out "$out" "${@:5}")
