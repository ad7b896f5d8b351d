#!/usr/bin/env bash
# Benchmark for docs/performance.md: what checking hostile content costs. Publishes a
# release of ITEMS items (default 20,000) of SIZE_KIB KiB of random bytes each plus a
# small JSON record (about 1.3 GB in 20 shards), then times, with the page cache warm:
#   seedpool verify (blake3, tar structure and every member, one read of each shard),
#   seedpool merge into an empty pool (the same checks on hard links into the pool),
#   b3sum of the shard files (blake3 alone, multithreaded) as the floor,
# and, when BEFORE names another seedpool binary, the same two commands with it.
# Needs: hyperfine, b3sum (Debian).
# Usage: benches/verify.sh   or   BEFORE=/path/to/old/seedpool benches/verify.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ITEMS=${ITEMS:-20000}
SIZE_KIB=${SIZE_KIB:-64}
RUNS=${RUNS:-5}
WORK=${WORK:-target/bench/verify-$ITEMS}
if [ -z "${BIN:-}" ]; then
  BIN=$PWD/target/release/seedpool
  cargo build --release --locked --quiet
fi
mkdir -p "$WORK"
REL=$WORK/release
if [ ! -f "$WORK/.complete" ]; then
  rm -rf "$REL" "$WORK/store"
  python3 - "$REL" "$ITEMS" "$SIZE_KIB" <<'PY'
import json, os, sys
out, items, kib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(items):
    d = os.path.join(out, f"{i // 1000:03d}")
    os.makedirs(d, exist_ok=True)
    key = f"bench-{i:07d}"
    with open(os.path.join(d, key + ".bin"), "wb") as f:
        f.write(os.urandom(kib * 1024))
    with open(os.path.join(d, key + ".json"), "w") as f:
        json.dump({"booru": "danbooru", "post_id": i, "tags": {"general": ["solo"]}}, f)
PY
  "$BIN" key generate --out "$WORK/bench.key" --force >/dev/null
  "$BIN" publish "$REL" --dataset bench --version 1 --store "$WORK/store" --key "$WORK/bench.key" --created 0 >/dev/null
  touch "$WORK/.complete"
fi
M=$WORK/store/bench-1.manifest.json
cat "$WORK"/store/bench/shards/* "$WORK"/store/bench/index/* > /dev/null
ARGS=(--prepare "true" -n "verify" "$BIN verify $M --store $WORK/store"
      --prepare "rm -rf $WORK/pool" -n "merge (empty pool)" "$BIN merge $M --pool $WORK/pool --from $WORK/store"
      --prepare "true" -n "b3sum (shards)" "b3sum $WORK/store/bench/shards/*")
if [ -n "${BEFORE:-}" ]; then
  ARGS+=(--prepare "true" -n "verify (before)" "$BEFORE verify $M --store $WORK/store"
         --prepare "rm -rf $WORK/pool" -n "merge (empty pool, before)" "$BEFORE merge $M --pool $WORK/pool --from $WORK/store")
fi
hyperfine --warmup 1 --runs "$RUNS" --export-markdown "$WORK/results.md" "${ARGS[@]}" >/dev/null
cat "$WORK/results.md"
du -sh "$WORK/store/bench/shards"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
