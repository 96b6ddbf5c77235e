#!/usr/bin/env bash
# Put throughput of two kvserver builds, side by side: A B A B ... rounds of a fresh 3-node
# cluster per run, driven by kvload (../shared/anchors/kvload) with the same workload.
#
#   bash benches/scripts/put-ab.sh A_KVSERVER B_KVSERVER [ROUNDS] [CLIENTS] [SECONDS]
#
# Prints one line per run (build, round, kvload's JSON) and, at the end, each build's mean ops/s
# and the ratio B/A per round. Ports: clients 6381-6383, peers 7381-7383 on 127.0.0.1.
# A_TLS_DIR / B_TLS_DIR: run that side's peers over mutual TLS with the certificates in that
# directory (ca.pem, node<i>.pem, node<i>-key.pem, as `cargo xtask cluster` makes them).
set -euo pipefail
a=$1 b=$2 rounds=${3:-3} clients=${4:-16} secs=${5:-10}
kvload=${KVLOAD:-$(dirname "$0")/../../../shared/anchors/kvload/target/release/kvload}
members="1=127.0.0.1:7381,2=127.0.0.1:7382,3=127.0.0.1:7383"
run() { # $1 binary, $2 TLS directory or "" -> prints ops/s
    local bin=$1 tls=$2 dir pids=()
    dir=$(mktemp -d /tmp/put-ab.XXXXXX)
    local id=() # binaries from before cluster ids do not know the flag
    if "$bin" --help | grep -q -- --cluster-id; then id=(--cluster-id ab); fi
    for i in 1 2 3; do
        local peer=()
        if [ -n "$tls" ]; then
            peer=(--peer-cert-file "$tls/node$i.pem" --peer-key-file "$tls/node$i-key.pem"
                --peer-trusted-ca-file "$tls/ca.pem")
        fi
        "$bin" --id $i --cluster "$members" --client-addr 127.0.0.1:638$i \
            --data-dir "$dir/n$i" --init "${id[@]}" "${peer[@]}" >"$dir/n$i.log" 2>&1 &
        pids+=($!)
    done
    for _ in $(seq 100); do # a leader: some node accepts a write
        if redis-cli -p 6381 set warmup x 2>/dev/null | grep -q OK; then break; fi
        sleep 0.2
    done
    local out
    out=$("$kvload" --target resp --endpoints 127.0.0.1:6381,127.0.0.1:6382,127.0.0.1:6383 \
        --ops 100000000 --duration "$secs" --value-size 256 --op put --clients "$clients")
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    rm -rf "$dir"
    echo "$out"
}
declare -a ra rb
for r in $(seq "$rounds"); do
    oa=$(run "$a" "${A_TLS_DIR:-}"); echo "A round $r: $oa"
    ob=$(run "$b" "${B_TLS_DIR:-}"); echo "B round $r: $ob"
    ra+=("$(echo "$oa" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ops_per_s"])')")
    rb+=("$(echo "$ob" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ops_per_s"])')")
done
python3 - "${ra[*]}" "${rb[*]}" <<'PY'
import sys
a = [float(x) for x in sys.argv[1].split()]
b = [float(x) for x in sys.argv[2].split()]
print("A ops/s:", " / ".join(f"{x:,.0f}" for x in a), f"mean {sum(a)/len(a):,.0f}")
print("B ops/s:", " / ".join(f"{x:,.0f}" for x in b), f"mean {sum(b)/len(b):,.0f}")
print("B/A per round:", ", ".join(f"{y/x:.3f}" for x, y in zip(a, b)),
      f"; ratio of means {sum(b)/sum(a):.3f}")
PY
