#!/usr/bin/env bash
# Scale benchmark for docs/performance.md: the whole maintainer-to-user loop at ITEMS
# items (default 10,000,000), once. It generates a release (benches/gen_release.py:
# artists draw a few series, characters belong to a series, popularity is skewed) and
# an incremental one with CHANGES changes (default 5% of ITEMS), publishes both, merges
# both into an empty pool, runs every named query and a Parquet export, and writes one
# table row per step with its time, peak memory (GNU time's max RSS) and the disk the
# step's output takes, to $WORK/scale.md.
#
# At 10 million items expect about 85 GB of disk while publishing (39 GB of records in
# 4 KiB blocks, 10-13 GB of shards, and two copies of the 17 GB index while it is packed)
# and a couple of hours on a 2-core machine; DROP_RECORDS=1 removes the records once
# both releases are published, before the pool (about 30 GB) is built.
# ITEMS=100000 checks the script in a few minutes. Steps whose output exists are
# skipped, so an interrupted run resumes.
# Needs: GNU time, bc.   Usage: ITEMS=3000000 SEEDPOOL_TIMINGS=1 benches/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ITEMS=${ITEMS:-10000000}
CHANGES=${CHANGES:-$((ITEMS / 20))}
WORK=${WORK:-target/bench/scale-$ITEMS}
BIN=${BIN:-$PWD/target/release/seedpool}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --quiet
mkdir -p "$WORK"
OUT=$WORK/scale.md
[ -f "$OUT" ] || printf '| step (%s items) | time [s] | max RSS [MB] | disk |\n|:---|---:|---:|---:|\n' "$ITEMS" > "$OUT"
# step NAME DISK_PATH COMMAND...: runs COMMAND under GNU time, appends a row to $OUT.
step() {
  local name=$1 disk=$2
  shift 2
  /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >"$WORK/stdout" 2>"$WORK/stderr" || {
    echo "$name failed:"; tail -20 "$WORK/stderr"; exit 1
  }
  read -r secs rss < "$WORK/time"
  # Each step's messages (with SEEDPOOL_TIMINGS=1, its phases) are kept beside the table.
  cp "$WORK/stderr" "$WORK/$(printf %s "$name" | tr -cs 'a-z0-9' '-').log"
  local size="-"
  [ -e "$disk" ] && size=$(du -sh "$disk" | cut -f1)
  printf '| %s | %s | %d | %s |\n' "$name" "$secs" "$((rss / 1024))" "$size" | tee -a "$OUT"
}
KEY=$WORK/bench.key
[ -f "$KEY" ] || "$BIN" key generate --out "$KEY" >/dev/null
if [ ! -f "$WORK/.r1-done" ]; then
  rm -rf "$WORK/r1"
  step "generate release 1" "$WORK/r1" python3 benches/gen_release.py "$WORK/r1" "$ITEMS"
  touch "$WORK/.r1-done"
fi
if [ ! -f "$WORK/store/bench-1.manifest.json" ]; then
  step "publish release 1" "$WORK/store" "$BIN" publish "$WORK/r1" --dataset bench --version 1 \
    --store "$WORK/store" --key "$KEY" --created 1
fi
if [ ! -f "$WORK/.r2-done" ]; then
  rm -rf "$WORK/r2"
  step "generate release 2 ($CHANGES changes)" "$WORK/r2" python3 benches/gen_release.py "$WORK/r2" "$ITEMS" \
    --from "$WORK/r1" --changes "$CHANGES"
  touch "$WORK/.r2-done"
fi
if [ ! -f "$WORK/store/bench-2.manifest.json" ]; then
  step "publish release 2 (--parent)" "$WORK/store" "$BIN" publish "$WORK/r2" --dataset bench --version 2 \
    --store "$WORK/store" --key "$KEY" --created 2 --parent "$WORK/store/bench-1.manifest.json"
fi
if [ -n "${DROP_RECORDS:-}" ] && [ -f "$WORK/store/bench-2.manifest.json" ]; then
  rm -rf "$WORK/r1" "$WORK/r2"
fi
POOL=$WORK/pool
if [ ! -f "$WORK/.merge-2-done" ]; then
  rm -rf "$POOL"
  sync
  step "merge release 1 into an empty pool" "$POOL" "$BIN" merge "$WORK/store/bench-1.manifest.json" \
    --pool "$POOL" --from "$WORK/store"
  sync
  step "merge release 2" "$POOL" "$BIN" merge "$WORK/store/bench-2.manifest.json" --pool "$POOL" --from "$WORK/store"
  touch "$WORK/.merge-2-done"
fi
for q in characters-by-year "series-by-artist --tags general_1,highres" top-items tag-stats \
         character-copyrights franchises top-quality releases; do
  # shellcheck disable=SC2086  # the query's own arguments
  step "query $q" - "$BIN" query --pool "$POOL" $q --format csv
done
step "export --format parquet" "$WORK/items.parquet" "$BIN" export --pool "$POOL" --format parquet \
  --out "$WORK/items.parquet"
echo "results in $OUT"
