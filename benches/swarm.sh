#!/usr/bin/env bash
# Benchmark for docs/performance.md: one release of SIZE_MIB MiB (default 1 GiB of
# incompressible items, 4 a shard) moved over 127.0.0.1, RUNS times each:
#   seedpool seed -> seedpool sync   (download, blake3 of every file, fsync, merge)
#   seedpool seed -> libtorrent      (seedpool's seeder against a reference downloader)
#   libtorrent    -> libtorrent      (the reference: two python3-libtorrent sessions)
# Times are wall clock of the downloading command, from start to a complete, checked
# copy on disk. Needs python3-libtorrent (Debian). No DHT, no trackers, loopback only.
# Usage: benches/swarm.sh        results in target/bench/swarm/results.md
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
ITEMS=${ITEMS:-256}
RUNS=${RUNS:-3}
WORK=${WORK:-target/bench/swarm}
BIN=$PWD/target/release/seedpool
PY=/usr/bin/python3
PEER=$PWD/tests/interop/libtorrent_peer.py

cargo build --release --locked --quiet
. benches/random_release.sh
random_release
M=$WORK/store/bench-1.manifest.json
T=$WORK/store/bench-1.torrent
BYTES=$(du -sb "$WORK/store/bench" | cut -f1)
cat "$WORK"/store/bench/shards/* > /dev/null

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

"$BIN" seed "$M" --store "$WORK/store" --listen 127.0.0.1:0 --no-dht --no-trackers --json \
  > "$WORK/seed.log" 2>/dev/null &
pids+=($!)
until grep -q '"ready"' "$WORK/seed.log"; do sleep 0.1; done
SP_ADDR=$(grep '"ready"' "$WORK/seed.log" | sed 's/.*"addr":"\([^"]*\)".*/\1/')

mkfifo "$WORK/lt-stdin" 2>/dev/null || true
"$PY" "$PEER" seed "$T" "$WORK/store" < "$WORK/lt-stdin" > "$WORK/lt-seed.log" &
pids+=($!)
exec 3> "$WORK/lt-stdin"
until grep -q port "$WORK/lt-seed.log"; do sleep 0.1; done
LT_PORT=$(sed 's/[^0-9]//g' "$WORK/lt-seed.log")

now() { date +%s.%N; }
rate() { echo "$BYTES $1" | awk '{printf "%.0f", $1 / $2 / 1048576}'; }
results=()
for run in $(seq 1 "$RUNS"); do
  # Each download starts with no dirty pages left by the one before.
  rm -rf "$WORK/pool"; sync
  t0=$(now)
  "$BIN" sync "$M" --pool "$WORK/pool" --peer "$SP_ADDR" --listen 127.0.0.1:0 \
    --no-dht --no-trackers --json > "$WORK/sync.json"
  t1=$(now)
  rm -rf "$WORK/lt-from-sp"; sync; t1=$(now)
  "$PY" "$PEER" download "$T" "$WORK/lt-from-sp" "$SP_ADDR" > /dev/null
  t2=$(now)
  rm -rf "$WORK/lt-from-lt"; sync; t2=$(now)
  "$PY" "$PEER" download "$T" "$WORK/lt-from-lt" "127.0.0.1:$LT_PORT" > /dev/null
  t3=$(now)
  a=$(awk "BEGIN {print $t1 - $t0}"); b=$(awk "BEGIN {print $t2 - $t1}"); c=$(awk "BEGIN {print $t3 - $t2}")
  echo "run $run: seedpool->seedpool ${a}s, seedpool->libtorrent ${b}s, libtorrent->libtorrent ${c}s"
  results+=("$a $b $c")
done
exec 3>&-

{
  echo "| transfer of $(echo "$BYTES" | awk '{printf "%.2f GiB", $1/1073741824}') over 127.0.0.1 | median s | MiB/s | vs libtorrent |"
  echo "|---|---:|---:|---:|"
  lt=$(printf '%s\n' "${results[@]}" | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  for col in 1 2 3; do
    name=$(case $col in 1) echo "seedpool seed -> seedpool sync";; 2) echo "seedpool seed -> libtorrent";; 3) echo "libtorrent -> libtorrent";; esac)
    med=$(printf '%s\n' "${results[@]}" | awk -v c="$col" '{print $c}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    ratio=$(echo "$lt $med" | awk '{printf "%.2fx", $1 / $2}')
    printf '| %s | %.2f | %s | %s |\n' "$name" "$med" "$(rate "$med")" "$ratio"
  done
} | tee "$WORK/results.md"
