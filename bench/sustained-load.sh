#!/usr/bin/env bash
# Sustained writes against a 3-node raft-kv cluster on loopback, to see what its snapshots
# cost (issue #16): the bytes each node writes to storage per byte of client data, how many
# snapshots each takes, whether the leader changes, and the "held the node up" warnings.
#
#   1. starts 3 `raft-kv serve` nodes (plain TCP peers and HTTP: --insecure), data in a
#      temporary directory under target/ (the project's disk);
#   2. preloads KEYS keys of VALUE_SIZE bytes (`raft-kv bench --fill`: every key once);
#   3. records each node's term, leader, counters (snapshots taken and installed, commands
#      applied, log syncs), /proc/<pid>/io and data directory size, and starts
#      `perf record` on the block layer's write requests of the three processes;
#   4. runs `raft-kv bench` with CLIENTS clients writing for DURATION seconds over the keys;
#   5. records the same again and prints, per node: the bytes its threads sent to the disk
#      during the run per byte of client data (key + value of every command applied during
#      the run, the bench's one-second warm-up included, as the bytes written cover it too),
#      in all and split by the thread that wrote them (the log's sync thread, the thread
#      that zero-fills the next segment, and the rest: snapshots); snapshots taken and
#      installed, terms before and after, the "held the node up" warnings; the bench's
#      throughput, p99 and failed requests; and what the whole disk wrote meanwhile.
#
# Why perf rather than /proc/<pid>/io write_bytes (printed too, for comparison): write_bytes
# counts each page a write dirties at the page's full size, and a page cache with large
# folios (Linux 6.x on ext4; here a segment zero-filled in 1 MiB pieces) then counts an
# append of a few KB after a sync as the whole folio: tens to hundreds of times what reaches
# the disk. The block layer counts what is sent. Without perf (or with PERF=0) only
# write_bytes is shown. perf needs root or kernel.perf_event_paranoid <= -1.
#
# Everything it starts is stopped when it exits, however it exits.
#
#   bench/sustained-load.sh                                  # ~27 MB store, 180 s
#   KEYS=4000000 bench/sustained-load.sh                     # ~1 GB store
#   SNAPSHOT_LOG_MULTIPLE=0 bench/sustained-load.sh          # snapshots by count only
#   DURATION=20 KEYS=10000 bench/sustained-load.sh           # a quick try
#
# Variables: KEYS (100000), VALUE_SIZE (256), CLIENTS (128), DURATION (180 s),
# FILL_CLIENTS (64, for the preload), SNAPSHOT_AFTER_ENTRIES / SNAPSHOT_KEEP_ENTRIES /
# SNAPSHOT_LOG_MULTIPLE (empty: raft-kv's defaults), SETTLE (10 s of quiet after the
# preload), RAFT_PORT (27100: nodes on 27101-3) and HTTP_PORT (28100: 28101-3), PERF (1),
# KEEP=1 to keep the data, logs and perf.data.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${KEYS:-100000}
VALUE_SIZE=${VALUE_SIZE:-256}
CLIENTS=${CLIENTS:-128}
DURATION=${DURATION:-180}
FILL_CLIENTS=${FILL_CLIENTS:-64}
SNAPSHOT_AFTER_ENTRIES=${SNAPSHOT_AFTER_ENTRIES:-}
SNAPSHOT_KEEP_ENTRIES=${SNAPSHOT_KEEP_ENTRIES:-}
SNAPSHOT_LOG_MULTIPLE=${SNAPSHOT_LOG_MULTIPLE:-}
SETTLE=${SETTLE:-10}
RAFT_PORT=${RAFT_PORT:-27100}
HTTP_PORT=${HTTP_PORT:-28100}
KEEP=${KEEP:-0}

load_at_start=$(uptime | sed 's/.*load average: //')
echo "== building raft-kv (release)"
cargo build --release --quiet -p raft-kv
raft_kv="${CARGO_TARGET_DIR:-$PWD/target}/release/raft-kv"

mkdir -p target
work=$(mktemp -d "$PWD/target/sustained-load.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$KEEP" = 1 ]; then echo "== kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
echo "== data under $work ($(df --output=source "$work" | tail -1))"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for n in 1 2 3; do
    for port in $((RAFT_PORT + n)) $((HTTP_PORT + n)); do
        port_free "$port" || { echo "port $port is in use; set RAFT_PORT and HTTP_PORT" >&2; exit 1; }
    done
done

snapshot_flags=()
[ -n "$SNAPSHOT_AFTER_ENTRIES" ] && snapshot_flags+=(--snapshot-after-entries "$SNAPSHOT_AFTER_ENTRIES")
[ -n "$SNAPSHOT_KEEP_ENTRIES" ] && snapshot_flags+=(--snapshot-keep-entries "$SNAPSHOT_KEEP_ENTRIES")
[ -n "$SNAPSHOT_LOG_MULTIPLE" ] && snapshot_flags+=(--snapshot-log-multiple "$SNAPSHOT_LOG_MULTIPLE")
endpoints=""
declare -A node_pid
for n in 1 2 3; do
    peers=()
    for m in 1 2 3; do
        [ "$m" = "$n" ] && continue
        peers+=(--peer "$m=127.0.0.1:$((RAFT_PORT + m)),127.0.0.1:$((HTTP_PORT + m))")
    done
    RUST_LOG=warn "$raft_kv" serve --id "$n" --data-dir "$work/node-$n" \
        --raft-addr "127.0.0.1:$((RAFT_PORT + n))" --http-addr "127.0.0.1:$((HTTP_PORT + n))" \
        "${peers[@]}" --insecure ${snapshot_flags[@]+"${snapshot_flags[@]}"} \
        >"$work/node-$n.log" 2>&1 &
    pids+=($!)
    node_pid[$n]=$!
    endpoints+="${endpoints:+,}http://127.0.0.1:$((HTTP_PORT + n))"
done

up=0
for _ in $(seq 1 300); do
    if "$raft_kv" status --endpoints "$endpoints" 2>/dev/null | jq -e '.leader_id != null' >/dev/null; then
        up=1
        break
    fi
    sleep 0.1
done
if [ "$up" != 1 ]; then
    echo "the cluster did not elect a leader in 30 s; its logs:" >&2
    tail -n 20 "$work"/*.log >&2
    exit 1
fi
echo "== cluster up: $endpoints (snapshot flags: ${snapshot_flags[*]:-defaults})"

metric() { # metric NODE NAME: a counter or gauge from the node's /metrics
    curl -fsS "http://127.0.0.1:$((HTTP_PORT + $1))/metrics" | awk -v name="$2" '$1 == name { print $2 }'
}
io_field() { # io_field NODE FIELD: a field of the node process's /proc/<pid>/io
    awk -v field="$2:" '$1 == field { print $2 }' "/proc/${node_pid[$1]}/io"
}
held_warnings() { grep -c "held the node up" "$work/node-$1.log" || true; }
# record LABEL: one line per node in $work/LABEL.tsv
record() {
    local label=$1 n status
    : >"$work/$label.tsv"
    for n in 1 2 3; do
        status=$(curl -fsS "http://127.0.0.1:$((HTTP_PORT + n))/v1/status")
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" \
            "$(jq -r .term <<<"$status")" "$(jq -r .leader_id <<<"$status")" \
            "$(jq -r .role <<<"$status")" \
            "$(io_field "$n" write_bytes)" "$(io_field "$n" cancelled_write_bytes)" \
            "$(metric "$n" raft_snapshots_stored_total)" \
            "$(metric "$n" raft_snapshots_installed_total)" \
            "$(metric "$n" raft_applies_total)" \
            "$(du -sb "$work/node-$n" | cut -f1)" \
            "$(held_warnings "$n")" \
            "$(metric "$n" raft_leader_changes_total)" \
            "$(metric "$n" raft_wal_sync_duration_seconds_count)" >>"$work/$label.tsv"
    done
}
# The size of a node's newest snapshot file (0 if none).
snapshot_file_bytes() {
    find "$work/node-$1" -type f -name '*snap*' -printf '%T@ %s\n' 2>/dev/null | sort -n | tail -1 | awk '{ print $2 + 0 }'
}

# The block device under the data, for the machine-wide figure.
disk=$(basename "$(df --output=source "$work" | tail -1)")
disk_written() { awk -v disk="$disk" '$3 == disk { print $10 * 512 }' /proc/diskstats; }

echo "== preloading $KEYS keys of $VALUE_SIZE bytes with $FILL_CLIENTS clients"
fill_started=$(date +%s)
"$raft_kv" bench --fill --endpoints "$endpoints" --concurrency "$FILL_CLIENTS" \
    --keys "$KEYS" --value-size "$VALUE_SIZE" | sed 's/^/   /'
echo "== preloaded in $(($(date +%s) - fill_started)) s; $SETTLE s of quiet"
sleep "$SETTLE"

# The bytes each node sends to the disk, from the block layer: every write bio a node's
# threads submit (its log's writes and syncs, its snapshots, its zero-filled segments), by
# process. /proc/<pid>/io write_bytes is recorded too, but it counts every page a write
# dirties at the page's full size: on kernels whose page cache holds large folios (a
# zero-filled segment written in 1 MiB pieces), an append of a few KB after a sync is counted
# as the whole folio, tens to hundreds of times the bytes that reach the disk.
perf_pid=""
if [ "${PERF:-1}" = 1 ] && command -v perf >/dev/null; then
    perf record -q -e block:block_bio_queue -o "$work/perf.data" \
        -p "${node_pid[1]},${node_pid[2]},${node_pid[3]}" >"$work/perf.log" 2>&1 &
    perf_pid=$!
    pids+=("$perf_pid")
    sleep 1
    kill -0 "$perf_pid" 2>/dev/null || { echo "   (perf record failed: $(head -1 "$work/perf.log"))"; perf_pid=""; }
fi
[ -n "$perf_pid" ] || echo "== no block-layer figures (perf record unavailable; PERF=0 skips it)"
load_before=$(uptime | sed 's/.*load average: //')
record before
disk_before=$(disk_written)
started_at=$(date -u '+%Y-%m-%d %H:%M UTC')

echo "== $started_at, $(uptime | sed 's/.*load average/load average/') (1, 5, 15 min)"
echo "== $CLIENTS clients writing for $DURATION s over $KEYS keys"
bench_output=$("$raft_kv" bench --endpoints "$endpoints" --concurrency "$CLIENTS" \
    --duration-secs "$DURATION" --keys "$KEYS" --value-size "$VALUE_SIZE" --read-ratio 0)
echo "$bench_output" | sed 's/^/   /'
sleep 1
record after
disk_after=$(disk_written)
for n in 1 2 3; do snapshot_file_bytes "$n"; done >"$work/snapshot-sizes"
load_after=$(uptime | sed 's/.*load average: //')
echo "== $(uptime | sed 's/.*load average/load average/') (1, 5, 15 min)"
: >"$work/device.tsv"
if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid"
    wait "$perf_pid" 2>/dev/null || true
    # Write bios (not reads, not discards) by process and by what the thread does: the log's
    # sync thread (raft-sync-node<ID>: its writes, and the file system's fast commits its
    # fdatasync issues), the thread that zero-fills the next segment (wal-prepare), and the
    # rest (the snapshots, written and synced on tokio's blocking threads, and segment headers).
    perf script -i "$work/perf.data" -F comm,pid,trace 2>/dev/null | awk '
        $4 ~ /W/ && $4 !~ /D/ {
            kind = ($1 ~ /^raft-sync/) ? "log" : ($1 == "wal-prepare") ? "zeros" : "other"
            for (i = 5; i < NF; i++) if ($i == "+") bytes[$2 " " kind] += $(i + 1) * 512
        }
        END { for (key in bytes) print key, bytes[key] }' >"$work/device-by-pid"
    for n in 1 2 3; do
        awk -v pid="${node_pid[$n]}" '$1 == pid { bytes[$2] = $3; total += $3 }
            END { printf "%.0f\t%.0f\t%.0f\t%.0f\n", total, bytes["log"], bytes["zeros"], bytes["other"] }' \
            "$work/device-by-pid"
    done >"$work/device.tsv"
    [ "$KEEP" = 1 ] || rm -f "$work/perf.data"
else
    printf '0\t0\t0\t0\n%.0s' 1 2 3 >"$work/device.tsv"
fi
echo "== data directories after the run:"
for n in 1 2 3; do
    echo "   node $n:"
    find "$work/node-$n" -type f -printf '%s\t%P\n' | sort -k2 | awk -F'\t' '
        { kind = ($2 ~ /snap/) ? "snapshot files" : "log and other files"; count[kind]++; bytes[kind] += $1 }
        END { for (kind in count) printf "     %s: %d, %.1f MB\n", kind, count[kind], bytes[kind] / 1e6 }'
done

# Average key length: "bench-" and the decimal key, keys uniform over 0..KEYS-1.
key_bytes=$(awk -v keys="$KEYS" 'BEGIN {
    total = 0; low = 0; digits = 1; high = 10
    while (low < keys) { top = (high < keys ? high : keys); total += (top - low) * (6 + digits); low = top; high *= 10; digits++ }
    printf "%.3f", total / keys }')
requests=$(echo "$bench_output" | awk '/^requests:/ { print $2 }')
rate=$(echo "$bench_output" | awk '/^requests:/ { print $(NF - 1) }')
p99=$(echo "$bench_output" | awk '/^latency ms:/ { for (i = 1; i <= NF; i++) if ($i == "p99") print $(i + 1) }')
errors=$(echo "$bench_output" | awk '/^errors:/ { print $2 }')

echo
echo "== $started_at; $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); load average at the start $load_at_start, before the run (after the preload) $load_before, after it $load_after"
echo "== $KEYS keys x (${key_bytes}-byte key + $VALUE_SIZE-byte value) = $(awk -v k="$KEYS" -v kb="$key_bytes" -v v="$VALUE_SIZE" 'BEGIN { printf "%.1f MB", k * (kb + v) / 1e6 }') of client data in the store; snapshot flags: ${snapshot_flags[*]:-defaults}"
echo "bench: $requests writes in the measured $DURATION s, $rate writes/s, p99 $p99 ms, $errors failed"
echo "the disk ($disk) wrote $(awk -v b="$disk_before" -v a="$disk_after" 'BEGIN { printf "%.1f MB", (a - b) / 1e6 }') in all meanwhile (all processes, the file system's journal included)"
paste "$work/before.tsv" "$work/after.tsv" "$work/snapshot-sizes" "$work/device.tsv" | awk -F'\t' \
    -v key_bytes="$key_bytes" -v value_size="$VALUE_SIZE" -v perf="${perf_pid:+1}" '
    BEGIN {
        printf "| node | role before/after | term before/after | commands applied | client MB | MB to disk | per client byte | log | zero-filled segments | snapshots and other | log syncs | log KB per sync | snapshots taken | installed | snapshot MB | held-up warnings | /proc write_bytes MB |\n"
        printf "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    }
    {
        # Before: 1 id, 2 term, 3 leader, 4 role, 5 write_bytes, 6 cancelled_write_bytes,
        # 7 snapshots stored, 8 installed, 9 applies, 10 data dir bytes, 11 warnings,
        # 12 leader changes, 13 syncs; after: the same, 14 to 26; 27: the newest snapshot
        # file; 28 to 31: bytes the node sent to the disk (block layer): in all, log,
        # zero-filled segments, snapshots and other.
        applied = $22 - $9; client = applied * (key_bytes + value_size)
        proc_written = ($18 - $19) - ($5 - $6)
        syncs = $26 - $13
        if (perf != 1) $28 = proc_written # no block-layer figures: write_bytes, unsplit
        per = (client > 0) ? 1 / client : 0
        printf "| %s | %s/%s | %s/%s | %d | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %d | %.1f | %d | %d | %.1f | %d | %.0f |\n",
            $1, $4, $17, $2, $15, applied, client / 1e6, $28 / 1e6, $28 * per, $29 * per,
            $30 * per, $31 * per, syncs, (syncs > 0) ? $29 / syncs / 1024 : 0,
            $20 - $7, $21 - $8, $27 / 1e6, $24 - $11, proc_written / 1e6
    }'
echo "(per client byte: bytes each node's threads sent to the disk, in all and by kind, per byte of keys and values applied; snapshot MB: the newest snapshot file)"
terms_before=$(cut -f2 "$work/before.tsv" | sort -u | tr '\n' ' ')
terms_after=$(cut -f2 "$work/after.tsv" | sort -u | tr '\n' ' ')
leaders_before=$(cut -f3 "$work/before.tsv" | sort -u | tr '\n' ' ')
leaders_after=$(cut -f3 "$work/after.tsv" | sort -u | tr '\n' ' ')
if [ "$terms_before" = "$terms_after" ] && [ "$leaders_before" = "$leaders_after" ]; then
    echo "no leader change during the run: term ${terms_after% }, leader ${leaders_after% }"
else
    echo "LEADER CHANGE during the run: terms ${terms_before% } -> ${terms_after% }, leaders ${leaders_before% } -> ${leaders_after% }"
fi
echo "== warnings in the nodes' logs (last 10):"
grep -h "WARN\|ERROR" "$work"/node-*.log | sed 's/\x1b\[[0-9;]*m//g' | tail -n 10 || true
