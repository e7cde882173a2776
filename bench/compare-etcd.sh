#!/usr/bin/env bash
# Measures raft-kv and etcd side by side on this machine with one load generator
# (`raft-kv bench`): a 3-member etcd and a 3-node raft-kv (started with --lease-reads) on
# loopback, data for both in one directory on the same disk, both syncing every commit to
# disk. For 1, 16 and 128 concurrent clients it runs these loads (256-byte values over 10,000
# keys) and prints one table with throughput, p50/p99 latency and the ratio raft-kv/etcd:
#
#   writes          both: writes to the leader.
#   reads           both: linearizable reads from the leader (raft-kv's default GET, ReadIndex;
#                   etcd's default Get, ReadIndex too).
#   follower-reads  both: linearizable reads from the two followers only, client i on the
#                   i-th follower mod 2 (`raft-kv bench --read-from followers`; a follower
#                   asks the leader for the read index and answers from its own store, in both
#                   systems). (`--read-from all` spreads reads over every node instead.)
#   lease-reads     raft-kv: GET ?consistency=lease (the leader's lease, no round trip);
#                   etcd: its linearizable reads from the leader, the baseline (etcd has no
#                   linearizable read without a round trip; its serializable reads may be stale).
#
# Everything it starts is stopped when it exits, however it exits.
#
#   bench/compare-etcd.sh                  # 10 s per load
#   DURATION=30 bench/compare-etcd.sh      # longer loads
#   CLIENTS="1 16 128 512" bench/compare-etcd.sh
#   LOADS="reads lease-reads" bench/compare-etcd.sh
#   ETCD_CONNECTIONS=128 bench/compare-etcd.sh   # one gRPC connection per etcd client
#   TLS=1 bench/compare-etcd.sh            # raft-kv with mutual TLS between nodes and HTTPS
#                                          # with client certificates (etcd stays plain)
#   PROTOCOLS=http2 bench/compare-etcd.sh  # raft-kv over HTTP/2 only (default: "http1 http2")
#
# etcd's clients share ETCD_CONNECTIONS gRPC connections per node they talk to (default 1, as
# etcd's own benchmark tool does; it was etcd's fastest setting here). raft-kv is measured
# twice: over HTTP/1.1, which cannot multiplex, so each client has its own kept-alive
# connection (two with follower reads when its read node is not the leader: one for writes,
# one for reads); and over HTTP/2 (`--http2`), its clients sharing the same number of
# connections per node as etcd's (`--connections $ETCD_CONNECTIONS`). The table has a row
# for each raft-kv protocol beside etcd's figures for the same load. With shared connections
# the generator runs on as many threads as connections (up to the cores), for both systems.
#
# Installs Debian's etcd-server and protobuf-compiler (for the etcd gRPC client) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-"1 16 128"}
LOADS=${LOADS:-"writes reads follower-reads lease-reads"}
KEYS=${KEYS:-10000}
VALUE_SIZE=${VALUE_SIZE:-256}
ETCD_CONNECTIONS=${ETCD_CONNECTIONS:-1}
TLS=${TLS:-0}
PROTOCOLS=${PROTOCOLS:-"http1 http2"}
for protocol in $PROTOCOLS; do
    case "$protocol" in http1 | http2) ;; *) echo "PROTOCOLS: unknown $protocol (http1, http2)" >&2; exit 1 ;; esac
done
# Ports: etcd client 23791-3 and peer 23801-3; raft-kv raft 27001-3 and HTTP 28001-3.
ETCD_CLIENT_PORT=${ETCD_CLIENT_PORT:-23790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-23800}
RAFT_PORT=${RAFT_PORT:-27000}
HTTP_PORT=${HTTP_PORT:-28000}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v etcd >/dev/null || ! command -v protoc >/dev/null; then
    echo "== installing etcd-server and protobuf-compiler from Debian"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq etcd-server protobuf-compiler >/dev/null
fi
echo "== $(etcd --version | head -1)"

echo "== building raft-kv (release, with the etcd driver)"
cargo build --release --quiet -p raft-kv --features etcd
raft_kv="${CARGO_TARGET_DIR:-$PWD/target}/release/raft-kv"

mkdir -p target
work=$(mktemp -d "$PWD/target/compare-etcd.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "== data for both systems under $work ($(df --output=source "$work" | tail -1))"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for n in 1 2 3; do
    for port in $((ETCD_CLIENT_PORT + n)) $((ETCD_PEER_PORT + n)) $((RAFT_PORT + n)) $((HTTP_PORT + n)); do
        port_free "$port" || { echo "port $port is in use; set the *_PORT variables" >&2; exit 1; }
    done
done

initial_cluster="e1=http://127.0.0.1:$((ETCD_PEER_PORT + 1)),e2=http://127.0.0.1:$((ETCD_PEER_PORT + 2)),e3=http://127.0.0.1:$((ETCD_PEER_PORT + 3))"
etcd_endpoints=""
for n in 1 2 3; do
    client="http://127.0.0.1:$((ETCD_CLIENT_PORT + n))"
    peer="http://127.0.0.1:$((ETCD_PEER_PORT + n))"
    etcd --name "e$n" --data-dir "$work/etcd-$n" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "$initial_cluster" --initial-cluster-state new \
        --initial-cluster-token compare-etcd --logger zap --log-level error \
        >"$work/etcd-$n.log" 2>&1 &
    pids+=($!)
    etcd_endpoints+="${etcd_endpoints:+,}$client"
done

raft_kv_endpoints=""
raft_kv_client=()
scheme=http
if [ "$TLS" = 1 ]; then
    "$raft_kv" certs init "$work/certs" --nodes 3 >/dev/null
    raft_kv_client=(--cacert "$work/certs/ca.pem" --cert "$work/certs/client.pem" --key "$work/certs/client-key.pem")
    scheme=https
fi
for n in 1 2 3; do
    if [ "$TLS" = 1 ]; then
        security=(--peer-cert "$work/certs/node$n.pem" --peer-key "$work/certs/node$n-key.pem"
            --peer-ca "$work/certs/ca.pem" --http-cert "$work/certs/node$n.pem"
            --http-key "$work/certs/node$n-key.pem" --http-ca "$work/certs/ca.pem")
    else
        security=(--insecure)
    fi
    peers=()
    for m in 1 2 3; do
        [ "$m" = "$n" ] && continue
        peers+=(--peer "$m=127.0.0.1:$((RAFT_PORT + m)),127.0.0.1:$((HTTP_PORT + m))")
    done
    RUST_LOG=warn "$raft_kv" serve --id "$n" --data-dir "$work/raft-kv-$n" \
        --raft-addr "127.0.0.1:$((RAFT_PORT + n))" --http-addr "127.0.0.1:$((HTTP_PORT + n))" \
        "${peers[@]}" "${security[@]}" --lease-reads >"$work/raft-kv-$n.log" 2>&1 &
    pids+=($!)
    raft_kv_endpoints+="${raft_kv_endpoints:+,}$scheme://127.0.0.1:$((HTTP_PORT + n))"
done

wait_until() {
    local what=$1
    shift
    for _ in $(seq 1 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "$what did not come up in 30 s; its logs:" >&2
    tail -n 20 "$work"/*.log >&2
    exit 1
}
etcd_healthy() {
    local url
    for url in ${etcd_endpoints//,/ }; do
        [ "$(curl -fsS "$url/health")" = '{"health":"true"}' ] || return 1
    done
}
wait_until "etcd" etcd_healthy
wait_until "raft-kv" "$raft_kv" status --endpoints "$raft_kv_endpoints" "${raft_kv_client[@]}"
echo "== both clusters are up: etcd $etcd_endpoints; raft-kv $raft_kv_endpoints"

results="$work/results.tsv"
# One load: appends "system kind clients requests/s p50 p99 errors" to the results. The
# systems: etcd, raft-kv-http1 and raft-kv-http2.
measure() {
    local system=$1 kind=$2 clients=$3 endpoints read_ratio=1 output connections=() reads=()
    local target=raft-kv
    case "$system" in
        etcd)
            target=etcd
            endpoints=$etcd_endpoints
            connections=(--connections "$ETCD_CONNECTIONS") ;;
        raft-kv-http1)
            endpoints=$raft_kv_endpoints
            connections=("${raft_kv_client[@]}") ;;
        raft-kv-http2)
            endpoints=$raft_kv_endpoints
            connections=("${raft_kv_client[@]}" --http2 --connections "$ETCD_CONNECTIONS") ;;
        *) echo "unknown system $system" >&2; exit 1 ;;
    esac
    case "$kind" in
        writes) read_ratio=0 ;;
        reads) ;;
        follower-reads) reads=(--read-from followers) ;;
        # etcd's baseline is its linearizable read from the leader.
        lease-reads) [ "$target" = etcd ] || reads=(--consistency lease) ;;
        *) echo "unknown load $kind" >&2; exit 1 ;;
    esac
    echo "-- $system $kind, $clients clients"
    output=$("$raft_kv" bench --target "$target" --endpoints "$endpoints" \
        --concurrency "$clients" --duration-secs "$DURATION" --keys "$KEYS" \
        --value-size "$VALUE_SIZE" --read-ratio "$read_ratio" "${connections[@]}" "${reads[@]}")
    echo "$output" | sed 's/^/   /'
    echo "$output" | awk -v sys="$system" -v kind="$kind" -v clients="$clients" '
        /^requests:/ { rate = $(NF - 1) }
        /^latency ms:/ { for (i = 1; i <= NF; i++) { if ($i == "p50") p50 = $(i + 1); if ($i == "p99") p99 = $(i + 1) } }
        /^errors:/ { errors = $2 }
        END { printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sys, kind, clients, rate, p50, p99, errors }' >>"$results"
}

for kind in $LOADS; do
    for clients in $CLIENTS; do
        measure etcd "$kind" "$clients"
        for protocol in $PROTOCOLS; do
            measure "raft-kv-$protocol" "$kind" "$clients"
        done
    done
done

echo
tls_note=""
[ "$TLS" = 1 ] && tls_note=", raft-kv with mutual TLS (peers) and HTTPS with client certificates"
echo "== $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(etcd --version | head -1), ${DURATION} s per load, ${VALUE_SIZE}-byte values, ${KEYS} keys, etcd clients on ${ETCD_CONNECTIONS} connection(s)$tls_note"
awk -F'\t' -v protocols="$PROTOCOLS" -v connections="$ETCD_CONNECTIONS" '
    { key = $2 "\t" $3; rate[$1, key] = $4; p50[$1, key] = $5; p99[$1, key] = $6; errors[$1, key] = $7
      if (!(key in seen)) { seen[key] = 1; order[++n] = key } }
    END {
        count = split(protocols, protocol, " ")
        label["http1"] = "HTTP/1.1, a connection per client"
        label["http2"] = "HTTP/2, " connections " connection(s) per node"
        printf "| load | clients | raft-kv over | etcd req/s | raft-kv req/s | ratio | etcd p50 ms | raft-kv p50 ms | etcd p99 ms | raft-kv p99 ms | errors etcd/raft-kv |\n"
        printf "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
        for (i = 1; i <= n; i++) {
            key = order[i]; split(key, part, "\t")
            for (j = 1; j <= count; j++) {
                name = "raft-kv-" protocol[j]
                ratio = rate["etcd", key] > 0 ? rate[name, key] / rate["etcd", key] : 0
                printf "| %s | %s | %s | %s | %s | %.2fx | %s | %s | %s | %s | %s/%s |\n", part[1], part[2],
                    label[protocol[j]], rate["etcd", key], rate[name, key], ratio, p50["etcd", key],
                    p50[name, key], p99["etcd", key], p99[name, key], errors["etcd", key],
                    errors[name, key]
            }
        }
    }' "$results"
case " $LOADS " in *" follower-reads "*)
    echo "follower-reads: both systems' linearizable reads from their two followers only (client i on follower i mod 2)" ;;
esac
case " $LOADS " in *" lease-reads "*)
    echo "lease-reads: raft-kv's ?consistency=lease reads against etcd's linearizable reads from its leader (the baseline)" ;;
esac
