#!/usr/bin/env bash
# Benchmark for docs/performance.md: `seedpool serve` over the 1,000,000-item pool that
# benches/pool.sh builds, side by side with Datasette serving the same pool.sqlite.
# Times the gallery's first page for a two-tag filter, its facet counts, an item page,
# and members served per second (the pool's 450-byte records, and the demo's 20-40 KB
# thumbnails), each after one warming request. Needs datasette (pip install datasette).
# Usage: benches/serve.sh      (after benches/pool.sh; results on stdout)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-target/bench/pool-1000000}
POOL=$WORK/pool
[ -f "$POOL/pool.sqlite" ] || { echo "no pool in $POOL: run benches/pool.sh first" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  BIN=$PWD/target/release/seedpool
  cargo build --release --locked --quiet
fi
PORT=${PORT:-18090}
DPORT=${DPORT:-18091}
REPEATS=${REPEATS:-20}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
cat "$POOL/pool.sqlite" > /dev/null   # the pool's pages warm, as the target says
"$BIN" serve --pool "$POOL" --listen 127.0.0.1:$PORT > "$WORK/serve.log" 2>&1 &
pids+=($!)
until curl -sf -o /dev/null http://127.0.0.1:$PORT/api/fetch; do sleep 0.2; done
BASE=http://127.0.0.1:$PORT
sq() { python3 -c "import sqlite3,sys; print(sqlite3.connect('file:$POOL/pool.sqlite?mode=ro', uri=True).execute(sys.argv[1]).fetchone()[0])" "$1"; }
# Two tags of the generated data: the most used general tag with the tag every item
# carries, and the two most used general tags.
T1=$(sq "SELECT canonical FROM tag_counts WHERE category = 'general' GROUP BY canonical ORDER BY sum(items) DESC LIMIT 1")
T2=$(sq "SELECT canonical FROM tag_counts WHERE category = 'general' GROUP BY canonical ORDER BY sum(items) DESC LIMIT 1 OFFSET 1")
TALL=$(sq "SELECT canonical FROM tag_counts GROUP BY canonical ORDER BY sum(items) DESC LIMIT 1")
KEY=$(sq "SELECT key FROM items WHERE removed_in IS NULL ORDER BY id LIMIT 1 OFFSET 500000")
BOORU=$(sq "SELECT booru FROM items LIMIT 1")
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(sq 'SELECT count(*) FROM items WHERE removed_in IS NULL') live items"
echo "== seedpool serve (server time from Server-Timing; client time to the last byte)"
python3 benches/serve_bench.py latency "$BASE" "$REPEATS" \
  "/api/gallery?tags=$T1+$T2" "/api/facets?tags=$T1+$T2" \
  "/api/gallery?tags=$TALL+$T1" "/api/facets?tags=$TALL+$T1" \
  "/gallery?tags=$T1+$T2" "/item/bench/$KEY" "/api/item/bench/$KEY" \
  "/api/gallery?booru=$BOORU&year_min=2020&year_max=2020" "/api/facets?booru=$BOORU&year_min=2020&year_max=2020" \
  "/api/gallery" "/api/facets" "/"
echo "== members per second (records of 450 bytes, 2000 items cycled)"
mapfile -t FILES < <(python3 -c "
import sqlite3
c = sqlite3.connect('file:$POOL/pool.sqlite?mode=ro', uri=True)
for k, b in c.execute(\"SELECT i.key, m.blake3 FROM items i JOIN members m ON m.shard = i.shard AND m.item = i.id WHERE m.ext = 'json' LIMIT 2000\"):
    print(f'/file/bench/{k}/json?v={b}')")
# curl, 8 transfers at once over kept-alive connections (a Python client tops out
# near 2,000 a second on this machine and measures itself).
rate() {
  local base=$1; shift
  local cfg; cfg=$(mktemp)
  python3 -c "import sys
base, paths = sys.argv[1], sys.argv[2:]
for i in range(20000):
    print(f'url = \"{base}{paths[i % len(paths)]}\"\noutput = /dev/null')" "$base" "$@" > "$cfg"
  local start; start=$(date +%s.%N)
  curl -s --no-progress-meter -Z --parallel-max 8 -K "$cfg"
  local took; took=$(echo "$(date +%s.%N) - $start" | bc)
  echo "20000 requests in $took s: $(echo "20000 / $took" | bc) per second"
  rm -f "$cfg"
}
rate "$BASE" "${FILES[@]}"
DEMO=${DEMO:-target/bench/serve-demo}
if [ ! -f "$DEMO/pool/pool.sqlite" ]; then "$BIN" demo --workdir "$DEMO" > /dev/null; fi
"$BIN" serve --pool "$DEMO/pool" --listen 127.0.0.1:$((PORT + 2)) > /dev/null 2>&1 &
pids+=($!)
until curl -sf -o /dev/null http://127.0.0.1:$((PORT + 2))/api/fetch; do sleep 0.2; done
mapfile -t THUMBS < <(curl -s "http://127.0.0.1:$((PORT + 2))/api/gallery?per_page=200" | python3 -c "
import json, sys
for t in json.load(sys.stdin)['items']:
    print(f\"/file/{t['dataset']}/{t['key']}/{t['thumb']['ext']}?v={t['thumb']['blake3']}\")")
echo "== thumbnails per second (the demo's ${#THUMBS[@]} thumbnails cycled)"
rate "http://127.0.0.1:$((PORT + 2))" "${THUMBS[@]}"
if command -v datasette > /dev/null; then
  datasette serve "$POOL/pool.sqlite" --immutable "$POOL/pool.sqlite" -p $DPORT \
    --setting sql_time_limit_ms 60000 --setting facet_time_limit_ms 60000 > "$WORK/datasette.log" 2>&1 &
  pids+=($!)
  until curl -sf -o /dev/null http://127.0.0.1:$DPORT/-/versions.json; do sleep 0.2; done
  echo "== Datasette $(datasette --version | awk '{print $NF}') on the same pool.sqlite (client time; Datasette sends no Server-Timing)"
  DB=http://127.0.0.1:$DPORT/pool
  TAGSQL="select l.key, l.score from items l where l.id in (select item from item_tags where tag in (select id from tags where canonical = '$T1')) and l.id in (select item from item_tags where tag in (select id from tags where canonical = '$T2')) and l.removed_in is null and l.duplicate_of is null order by l.score desc limit 60"
  python3 benches/serve_bench.py latency "http://127.0.0.1:$DPORT" "$REPEATS" \
    "/pool/items.json?booru=$BOORU&year=2020&_facet=rating&_facet=composition&_size=60&_sort_desc=score" \
    "/pool.json?sql=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$TAGSQL")"
fi
