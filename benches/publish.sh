#!/usr/bin/env bash
# Benchmark for docs/performance.md: publish a release of FILES files of SIZE_MIB MiB
# (default 1000 x 2 MiB = 2 GiB, incompressible) and, on the same files, time
#   mktorrent (all cores, SHA-1 only), imdl torrent create, and b3sum (blake3 only).
# Needs: hyperfine, mktorrent, b3sum (Debian), imdl (cargo install imdl).
# Usage: benches/publish.sh            results in target/bench/publish/results.{md,json}
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${FILES:-1000}
SIZE_MIB=${SIZE_MIB:-2}
RUNS=${RUNS:-5}
WORK=${WORK:-target/bench/publish}
BIN=$PWD/target/release/seedpool

cargo build --release --locked --quiet
mkdir -p "$WORK"
REL=$WORK/release
if [ ! -f "$WORK/.complete-$FILES-$SIZE_MIB" ]; then
  rm -rf "$REL"
  mkdir -p "$REL"
  for i in $(seq -w 1 "$FILES"); do
    head -c "$((SIZE_MIB * 1048576))" /dev/urandom > "$REL/bench-$i.bin"
  done
  # The marker lives beside the release: publish refuses names starting with a dot.
  touch "$WORK/.complete-$FILES-$SIZE_MIB"
fi
"$BIN" key generate --out "$WORK/bench.key" --force >/dev/null
# Warm the page cache so every tool reads from memory.
cat "$REL"/* > /dev/null

STORE=$WORK/store
hyperfine --warmup 1 --runs "$RUNS" \
  --export-markdown "$WORK/results.md" --export-json "$WORK/results.json" \
  --prepare "rm -rf $STORE" -n "seedpool publish" \
    "$BIN publish $REL --dataset bench --version 1 --store $STORE --key $WORK/bench.key --created 0 --piece-length 1MiB" \
  --prepare "rm -f $WORK/mk.torrent" -n "mktorrent -l 20" \
    "mktorrent -l 20 -a http://127.0.0.1:9/announce -o $WORK/mk.torrent $REL" \
  --prepare "rm -f $WORK/imdl.torrent" -n "imdl torrent create" \
    "imdl --quiet torrent create --piece-length 1mib --no-created-by --output $WORK/imdl.torrent --input $REL" \
  --prepare "true" -n "b3sum (all files)" \
    "b3sum $REL/*"
cat "$WORK/results.md"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB"
