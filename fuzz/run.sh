#!/usr/bin/env bash
# Fuzzes seedpool's readers of hostile input with libFuzzer (cargo fuzz, nightly):
# the manifest parser, the bencode/torrent parser, the strict tar reader and the index
# schema and content checks. Not part of `cargo test`; run it after changing a reader.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]   (default: 30 s each, every target)
# Needs: the nightly toolchain and `cargo install cargo-fuzz`. Seed corpora come from a
# small release published here (manifest, torrent, shards, unpacked index) plus the
# demo's checked-in manifests; crashes land in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
TIME=${1:-30}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(manifest torrent tar index)
SEEDS=fuzz/seeds
if [ ! -f "$SEEDS/.complete" ]; then
  rm -rf "$SEEDS"
  cargo build --release --locked --quiet
  BIN=$PWD/target/release/seedpool
  WORK=$(mktemp -d)
  trap 'rm -rf "$WORK"' EXIT
  mkdir -p "$WORK/r" "$SEEDS"/{manifest,torrent,tar,index}
  for i in 1 2 3 4 5 6; do
    printf 'payload %s' "$i" > "$WORK/r/item-$i.txt"
    printf '{"booru":"danbooru","post_id":%s,"tags":{"general":["solo","t%s"]}}' "$i" "$i" > "$WORK/r/item-$i.json"
  done
  "$BIN" key generate --out "$WORK/k" >/dev/null
  "$BIN" publish "$WORK/r" --dataset fuzz --version 1 --store "$WORK/s" --key "$WORK/k" --shard-items 2 --created 0 >/dev/null
  cp "$WORK"/s/*.manifest.json manifests/*.manifest.json "$SEEDS/manifest/"
  cp "$WORK"/s/*.torrent "$SEEDS/torrent/"
  cp "$WORK"/s/fuzz/shards/*.tar "$SEEDS/tar/"
  zstd -q -d "$WORK/s/fuzz/index/1.sqlite.zst" -o "$SEEDS/index/1.sqlite"
  touch "$SEEDS/.complete"
fi
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  echo "== $t: ${TIME}s"
  # The seeds are read, new finds go to the corpus folder; max_len fits the seeds.
  cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" "$SEEDS/$t" -- \
    -max_total_time="$TIME" -max_len=131072 -print_final_stats=1 2>&1 | tail -n 12
done
