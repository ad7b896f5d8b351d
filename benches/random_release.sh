# Sourced by the transfer benchmarks: publishes, once per size, one release of SIZE_MIB
# MiB of incompressible items (ITEMS items, 4 a shard) as dataset `bench` version 1 in
# $WORK/store, with its key in $WORK/bench.key. Needs BIN, WORK, SIZE_MIB and ITEMS.
random_release() {
  mkdir -p "$WORK"
  if [ -f "$WORK/.complete-$SIZE_MIB-$ITEMS" ]; then return; fi
  rm -rf "$WORK/release" "$WORK/store"
  mkdir -p "$WORK/release"
  local per=$((SIZE_MIB * 1048576 / ITEMS)) i
  for i in $(seq -w 1 "$ITEMS"); do
    head -c "$per" /dev/urandom > "$WORK/release/item-$i.bin"
  done
  "$BIN" key generate --out "$WORK/bench.key" --force >/dev/null
  "$BIN" publish "$WORK/release" --dataset bench --version 1 --store "$WORK/store" \
    --key "$WORK/bench.key" --created 0 --shard-items 4 >/dev/null
  touch "$WORK/.complete-$SIZE_MIB-$ITEMS"
}
