#!/usr/bin/env bash
# Benchmark for docs/performance.md: merge a generated release of ITEMS items (default
# 1,000,000, about 12 tags each) into an empty pool, then an incremental release of
# CHANGES changes (default 100,000: 60% changed, 20% removed, 20% new), then run every
# named query on the result. Needs hyperfine.
# Usage: benches/pool.sh        (data and results in target/bench/pool/)
#
# WARM_GIB (default 8; 0 to skip): before each merge, touch and free that much memory.
# On a virtual machine whose host takes back idle guest memory, the first touch of a
# page costs about 2 us (2.3 s per GiB here), so a merge's time otherwise depends on
# what ran in the minute before it; warming measures the merge itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ITEMS=${ITEMS:-1000000}
CHANGES=${CHANGES:-100000}
WORK=${WORK:-target/bench/pool-$ITEMS}
# GEN_FLAGS=--flat: tags drawn uniformly, as the figures in docs/performance.md before
# 2026-12 were made (the default now co-occurs as on a booru; see gen_release.py).
GEN_FLAGS=${GEN_FLAGS:-}
# BIN: another seedpool binary to time (an older build, for before-and-after figures).
if [ -z "${BIN:-}" ]; then
  BIN=$PWD/target/release/seedpool
  cargo build --release --locked --quiet
fi
mkdir -p "$WORK"
KEY=$WORK/bench.key
[ -f "$KEY" ] || "$BIN" key generate --out "$KEY" >/dev/null
t() { local start=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $start" | bc; }
WARM_GIB=${WARM_GIB:-8}
warm() {
  [ "$WARM_GIB" = 0 ] && return
  python3 -c "import mmap, sys
n = int(float(sys.argv[1]) * 2**30)
m = mmap.mmap(-1, n)
for i in range(0, n, 4096): m[i] = 1
m.close()" "$WARM_GIB"
}
# Each step is skipped when its result is there, so an interrupted run resumes.
if [ ! -f "$WORK/.r1-done" ]; then
  rm -rf "$WORK/r1"
  echo "generating $ITEMS records"; python3 benches/gen_release.py "$WORK/r1" "$ITEMS" $GEN_FLAGS
  touch "$WORK/.r1-done"
fi
if [ ! -f "$WORK/store/bench-1.manifest.json" ]; then
  echo "publish 1: $(t "$BIN" publish "$WORK/r1" --dataset bench --version 1 --store "$WORK/store" --key "$KEY" --created 1) s"
fi
if [ ! -f "$WORK/.r2-done" ]; then
  rm -rf "$WORK/r2"
  python3 benches/gen_release.py "$WORK/r2" "$ITEMS" --from "$WORK/r1" --changes "$CHANGES" $GEN_FLAGS
  touch "$WORK/.r2-done"
fi
if [ ! -f "$WORK/store/bench-2.manifest.json" ]; then
  echo "publish 2: $(t "$BIN" publish "$WORK/r2" --dataset bench --version 2 --store "$WORK/store" --key "$KEY" --created 2 \
       --parent "$WORK/store/bench-1.manifest.json") s"
fi
POOL=$WORK/pool
rm -rf "$POOL"
sync
warm
echo "merge 1 ($ITEMS items into an empty pool): $(t "$BIN" merge "$WORK/store/bench-1.manifest.json" --pool "$POOL" --from "$WORK/store") s"
cp -a "$POOL" "$WORK/pool-after-1"
sync  # the copy's writeback would otherwise land inside the next timing
warm
echo "merge 2 ($CHANGES changes): $(t "$BIN" merge "$WORK/store/bench-2.manifest.json" --pool "$POOL" --from "$WORK/store") s"
rm -rf "$WORK/pool-after-1"
ARGS=()
for q in characters-by-year "series-by-artist --tags general_1,highres" top-items tag-stats character-copyrights franchises top-quality releases; do
  ARGS+=(-n "$q" "$BIN query --pool $POOL $q --format csv")
done
hyperfine --warmup 1 --runs 5 --export-markdown "$WORK/queries.md" "${ARGS[@]}" >/dev/null
cat "$WORK/queries.md"
du -sh "$POOL/pool.sqlite" "$WORK/store/bench/index"
