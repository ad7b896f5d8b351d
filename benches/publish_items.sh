#!/usr/bin/env bash
# Benchmark for docs/performance.md: publish a release of many small items (ITEMS
# records of benches/gen_release.py, default 100,000, about 12 tags each) and, on the
# same files, what a maintainer would otherwise run: GNU tar (sorted names, fixed
# mtime, owner 0, so reproducible), sync, then mktorrent over the tar. Each step is
# timed RUNS times (default 3) in turns, after the files were read once, and
# `SEEDPOOL_TIMINGS` shows where the last publish spent its time.
# Needs: mktorrent, GNU time.   Usage: ITEMS=1000000 benches/publish_items.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ITEMS=${ITEMS:-100000}
RUNS=${RUNS:-3}
WORK=${WORK:-target/bench/publish-items-$ITEMS}
BIN=${BIN:-$PWD/target/release/seedpool}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --locked --quiet
mkdir -p "$WORK"
if [ ! -f "$WORK/.r1-done" ]; then
  rm -rf "$WORK/r1"
  python3 benches/gen_release.py "$WORK/r1" "$ITEMS"
  touch "$WORK/.r1-done"
fi
[ -f "$WORK/k" ] || "$BIN" key generate --out "$WORK/k" >/dev/null
find "$WORK/r1" -type f -exec cat {} + >/dev/null
run() { /usr/bin/time -f "%e %M" -o "$WORK/time" "$@" >/dev/null 2>"$WORK/stderr" || { cat "$WORK/stderr"; exit 1; }; cat "$WORK/time"; }
for i in $(seq 1 "$RUNS"); do
  rm -rf "$WORK/store" "$WORK/tar"; mkdir -p "$WORK/tar"; sync
  read -r s m < <(run "$BIN" publish "$WORK/r1" --dataset bench --version 1 --store "$WORK/store" --key "$WORK/k" --created 1)
  sync
  start=$(date +%s.%N)
  tar --sort=name --mtime=@1 --owner=0 --group=0 --numeric-owner -cf "$WORK/tar/r1.tar" -C "$WORK" r1
  sync
  mktorrent -l 18 -o "$WORK/tar/r1.torrent" "$WORK/tar/r1.tar" >/dev/null
  t=$(echo "$(date +%s.%N) - $start" | bc)
  echo "run $i: seedpool publish ${s} s (max RSS $((m / 1024)) MB); tar + sync + mktorrent ${t} s"
done
rm -rf "$WORK/store"; sync
SEEDPOOL_TIMINGS=1 "$BIN" publish "$WORK/r1" --dataset bench --version 1 --store "$WORK/store" --key "$WORK/k" --created 1 2>&1 >/dev/null | grep '^publish'
