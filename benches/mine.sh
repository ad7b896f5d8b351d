#!/usr/bin/env bash
# Benchmark for docs/performance.md ("Mining"): related tags over a generated pool of
# ITEMS items (default 1,000,000; tags co-occur as on a booru, see gen_release.py),
# side by side with the same query in DuckDB over the pool's Parquet export.
# Needs hyperfine and python3 with duckdb (`pip install duckdb`).
# Usage: benches/mine.sh        (data and results in target/bench/mine-ITEMS/)
set -euo pipefail
cd "$(dirname "$0")/.."
ITEMS=${ITEMS:-1000000}
WORK=${WORK:-target/bench/mine-$ITEMS}
if [ -z "${BIN:-}" ]; then
  BIN=$PWD/target/release/seedpool
  cargo build --release --locked --quiet
fi
mkdir -p "$WORK"
KEY=$WORK/bench.key
[ -f "$KEY" ] || "$BIN" key generate --out "$KEY" >/dev/null
t() { local start=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $start" | bc; }
# Each step is skipped when its result is there, so an interrupted run resumes.
if [ ! -f "$WORK/.r1-done" ]; then
  rm -rf "$WORK/r1"
  echo "generating $ITEMS records"; python3 benches/gen_release.py "$WORK/r1" "$ITEMS" --vectors
  touch "$WORK/.r1-done"
fi
if [ ! -f "$WORK/store/bench-1.manifest.json" ]; then
  echo "publish: $(t "$BIN" publish "$WORK/r1" --dataset bench --version 1 --store "$WORK/store" --key "$KEY" --created 1) s"
fi
POOL=$WORK/pool
if [ ! -f "$POOL/pool.sqlite" ]; then
  echo "merge: $(/usr/bin/time -f "%e s, %M KiB" "$BIN" merge "$WORK/store/bench-1.manifest.json" --pool "$POOL" --from "$WORK/store" 2>&1 >/dev/null | tail -1)"
fi
[ -f "$WORK/items.parquet" ] || "$BIN" export --pool "$POOL" --format parquet --out "$WORK/items.parquet" >/dev/null

# One tag of each kind: a popular artist, a character, a common general tag (about a
# tenth of the items) and one on every item (read through the sample).
TAGS=(artist_1 character_0 general_0 highres)
for tag in "${TAGS[@]}"; do
  "$BIN" query --pool "$POOL" --sql "SELECT '$tag', sum(items) FROM tag_counts WHERE canonical = '$tag'" --format csv | tail -1
done
ARGS=()
for tag in "${TAGS[@]}"; do
  ARGS+=(-n "mine related $tag" "$BIN mine related $tag --pool $POOL --measure jaccard --json")
done
hyperfine --warmup 1 --runs 10 --export-markdown "$WORK/related.md" "${ARGS[@]}" >/dev/null
cat "$WORK/related.md"
peak() { /usr/bin/time -f "%M" "$@" 2>&1 >/dev/null | tail -1; }
echo "peak RSS of mine related highres: $(peak "$BIN" mine related highres --pool "$POOL") KiB"

# Similar items: one item with a planted look-alike (gen_release.py), by pHash at the
# default radius and a wider one, by tags, and by the exact scans of statistics and
# embeddings.
ITEM=yandere-100021  # item 21, a near copy of one of the 19 before it
hyperfine -N --warmup 2 --runs 10 --export-markdown "$WORK/similar.md" \
  -n "mine similar --by phash" "$BIN mine similar $ITEM --pool $POOL --json" \
  -n "mine similar --by phash --radius 16" "$BIN mine similar $ITEM --pool $POOL --radius 16 --json" \
  -n "mine similar --by tags" "$BIN mine similar $ITEM --pool $POOL --by tags --json" \
  -n "mine similar --by stats" "$BIN mine similar $ITEM --pool $POOL --by stats --probes 0 --json" \
  -n "mine similar --by embedding" "$BIN mine similar $ITEM --pool $POOL --by embedding --probes 0 --json" >/dev/null
cat "$WORK/similar.md"

# The batch analyses, once each: time and peak memory.
once() { /usr/bin/time -f "%e s, %M KiB" "$@" 2>&1 >/dev/null | tail -1; }
echo "| analysis | time, peak RSS |"
echo "|---|---|"
echo "| mine implications | $(once "$BIN" mine implications --pool "$POOL") |"
echo "| mine aliases | $(once "$BIN" mine aliases --pool "$POOL") |"
echo "| mine suggest (scans for items without a character) | $(once "$BIN" mine suggest --pool "$POOL") |"
echo "| mine evaluate --holdout 500 | $(once "$BIN" mine evaluate --pool "$POOL" --holdout 500) |"
echo "| mine clusters --k 50 | $(once "$BIN" mine clusters --pool "$POOL" --k 50) |"
echo "| mine clusters --show tags | $(once "$BIN" mine clusters --pool "$POOL" --show tags) |"
echo "| mine clusters --by stats --k 50 | $(once "$BIN" mine clusters --pool "$POOL" --by stats --k 50) |"
echo "| mine clusters --by embedding --k 50 | $(once "$BIN" mine clusters --pool "$POOL" --by embedding --k 50) |"
"$BIN" mine clusters --pool "$POOL" --show stats | head -3
"$BIN" mine clusters --pool "$POOL" --show embedding | head -3
"$BIN" mine evaluate --pool "$POOL" --holdout 500

# The clusterings just stored index their spaces: similar by stats and embedding again,
# through 8 of the 50 clusters (the default) and with every vector (--probes 0), and
# how many of the exact 20 nearest the index finds, over 50 items.
hyperfine -N --warmup 2 --runs 10 --export-markdown "$WORK/similar-indexed.md" \
  -n "mine similar --by stats (8 of 50 clusters)" "$BIN mine similar $ITEM --pool $POOL --by stats --json" \
  -n "mine similar --by stats --probes 0" "$BIN mine similar $ITEM --pool $POOL --by stats --probes 0 --json" \
  -n "mine similar --by embedding (8 of 50 clusters)" "$BIN mine similar $ITEM --pool $POOL --by embedding --json" \
  -n "mine similar --by embedding --probes 0" "$BIN mine similar $ITEM --pool $POOL --by embedding --probes 0 --json" >/dev/null
cat "$WORK/similar-indexed.md"
"$BIN" query --pool "$POOL" --format csv --sql "SELECT key FROM items WHERE id % 19997 = 7 AND duplicate_of IS NULL AND removed_in IS NULL LIMIT 50" | tail -n +2 >"$WORK/recall-keys"
python3 - "$BIN" "$POOL" "$WORK/recall-keys" <<'PY'
import json, subprocess, sys
bin, pool, keys = sys.argv[1], sys.argv[2], open(sys.argv[3]).read().split()
def near(key, by, probes):
    out = subprocess.run([bin, "mine", "similar", key, "--pool", pool, "--by", by, "--probes", str(probes), "--json"],
                         capture_output=True, text=True, check=True).stdout
    r = json.loads(out)
    return {s["key"] for s in r["similar"]}, r["compared"]
for by in ("stats", "embedding"):
    for probes in (4, 8, 16):
        found = total = compared = 0
        for key in keys:
            exact, _ = near(key, by, 0)
            got, n = near(key, by, probes)
            found += len(exact & got); total += len(exact); compared += n
        print(f"| --by {by} --probes {probes} | {found / total:.3f} | {compared // len(keys):,} |")
PY

# An incremental release (a tenth of the items changed, removed or new) merged into the
# pool, whose three clusterings assign its new and changed items; then the trends
# between the two releases.
CHANGES=$((ITEMS / 10))
if [ ! -f "$WORK/.r2-done" ]; then
  rm -rf "$WORK/r2"
  python3 benches/gen_release.py "$WORK/r2" "$ITEMS" --from "$WORK/r1" --changes "$CHANGES" --vectors
  touch "$WORK/.r2-done"
fi
if [ ! -f "$WORK/store/bench-2.manifest.json" ]; then
  echo "publish 2: $(t "$BIN" publish "$WORK/r2" --dataset bench --version 2 --store "$WORK/store" --key "$KEY" --created 2 \
       --parent "$WORK/store/bench-1.manifest.json") s"
fi
if [ ! -f "$WORK/.merge2-done" ]; then
  echo "merge 2 ($CHANGES changes, 3 clusterings to assign): $(once "$BIN" merge "$WORK/store/bench-2.manifest.json" --pool "$POOL" --from "$WORK/store")"
  touch "$WORK/.merge2-done"
fi
echo "mine trends: $(once "$BIN" mine trends --pool "$POOL")"
hyperfine -N --warmup 1 --runs 5 -n "mine trends" "$BIN mine trends --pool $POOL --json" | grep -E "Time|Range"

# DuckDB: the same co-occurrence counts and Jaccard, from the Parquet export (cold) and
# from a table of (item, tag) rows already in memory (warm, the query alone).
python3 - "$WORK/items.parquet" "${TAGS[@]}" <<'PY'
import sys, time, duckdb
path, tags = sys.argv[1], sys.argv[2:]
con = duckdb.connect()
flat = f"""SELECT key, unnest(string_split(concat_ws(' ', tags_artist, tags_copyright,
    tags_character, tags_general, tags_meta), ' ')) AS tag FROM read_parquet('{path}')"""
query = """WITH a AS (SELECT key FROM {src} WHERE tag = ?),
  co AS (SELECT f.tag, count(*) AS n_ab FROM {src} f SEMI JOIN a USING (key) GROUP BY f.tag),
  counts AS (SELECT tag, count(*) AS n FROM {src} WHERE tag IN (SELECT tag FROM co) GROUP BY tag)
  SELECT b.tag, b.n_ab, c.n, b.n_ab / ((SELECT count(*) FROM a) + c.n - b.n_ab) AS jaccard
  FROM co b JOIN counts c USING (tag) WHERE b.tag <> ? ORDER BY jaccard DESC, b.tag LIMIT 25"""
def best(sql, tag, runs=5):
    times = []
    for _ in range(runs):
        t = time.perf_counter(); con.execute(sql, [tag, tag]).fetchall(); times.append(time.perf_counter() - t)
    return min(times)
print("| tag | DuckDB from Parquet (s) | DuckDB, table in memory (s) |")
print("|---|---:|---:|")
t = time.perf_counter(); con.execute(f"CREATE TABLE flat AS {flat}"); load = time.perf_counter() - t
for tag in tags:
    cold = best(query.format(src=f"({flat})"), tag, runs=3)
    warm = best(query.format(src="flat"), tag)
    print(f"| {tag} | {cold:.3f} | {warm:.3f} |")
print(f"(loading the (item, tag) table into memory: {load:.2f} s; DuckDB {duckdb.__version__})")
PY
