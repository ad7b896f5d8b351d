#!/usr/bin/env bash
# Benchmark for docs/performance.md ("Seeding many shards"): how long `seedpool seed`
# takes to come up on a store of SHARDS shards of SHARD_BYTES bytes (default 10,000 of
# 100 MB: 1 TB), the first time (every piece hashed) and again (the pieces it verified
# kept beside the store, see src/swarm/resume.rs), beside python3-libtorrent 2.0 on the
# same files: a full check, then an add with the resume data it saved.
# The shards are sparse files of zeros (benches/sparse_store.rs), so the store takes no
# disk and reading it costs no disk time: what is measured is hashing and bookkeeping.
# On a real disk the full checks are slower still (a terabyte at 500 MB/s is 33 min).
# Set LIBTORRENT=0 to leave libtorrent out (its full check of 1 TB takes as long as ours).
# Needs python3-libtorrent, bc.   Usage: SHARDS=10000 SHARD_BYTES=100000000 benches/seed_startup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SHARDS=${SHARDS:-10000}
SHARD_BYTES=${SHARD_BYTES:-100000000}
LIBTORRENT=${LIBTORRENT:-1}
WORK=${WORK:-target/bench/seed-startup-$SHARDS-$SHARD_BYTES}
BIN=$PWD/target/release/seedpool
cargo build --release --locked --quiet
rm -rf "$WORK"
mkdir -p "$WORK"
M=$(cargo bench --locked --quiet --bench sparse_store -- "$WORK/store" "$SHARDS" "$SHARD_BYTES")
T=$WORK/store/sparse-1.torrent
OUT=$WORK/results.md
now() { date +%s.%N; }

# seed_up LABEL: starts `seedpool seed`, waits for it to accept peers, stops it.
seed_up() {
  local t0 t1 pid
  t0=$(now)
  "$BIN" seed "$M" --store "$WORK/store" --listen 127.0.0.1:0 --no-dht --no-trackers --json \
    > "$WORK/seed.log" 2> "$WORK/seed.err" &
  pid=$!
  until grep -q '"ready"' "$WORK/seed.log" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/seed.err"; exit 1; }
    sleep 0.05
  done
  t1=$(now)
  kill -INT "$pid"; wait "$pid" || true
  grep -q "\"resumed\":$2" "$WORK/seed.log" || { echo "expected resumed=$2"; cat "$WORK/seed.log"; exit 1; }
  printf '| %s | %.1f |\n' "$1" "$(echo "$t1 - $t0" | bc)" | tee -a "$OUT"
}

printf '| %s shards of %s bytes, sparse | to ready [s] |\n|:---|---:|\n' "$SHARDS" "$SHARD_BYTES" > "$OUT"
seed_up "seedpool seed, first start (every piece hashed)" false
seed_up "seedpool seed, restarted (verified pieces kept)" true

if [ "$LIBTORRENT" = 1 ]; then
  /usr/bin/python3 - "$T" "$WORK/store" "$WORK/lt.resume" "$OUT" <<'PY'
import sys, time
import libtorrent as lt
torrent, store, resume_path, out = sys.argv[1:]
def session():
    return lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False,
                       "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False,
                       "alert_mask": lt.alert.category_t.status_notification | lt.alert.category_t.storage_notification})
def come_up(params, label):
    s = session()
    t0 = time.time()
    h = s.add_torrent(params)
    while h.status().state != lt.torrent_status.seeding:
        if h.status().errc.value():
            sys.exit(f"libtorrent: {h.status().errc.message()}")
        time.sleep(0.05)
    took = time.time() - t0
    with open(out, "a") as f:
        f.write(f"| {label} | {took:.1f} |\n")
    print(f"| {label} | {took:.1f} |")
    return s, h
p = lt.add_torrent_params()
p.ti = lt.torrent_info(torrent)
p.save_path = store
s, h = come_up(p, "libtorrent 2.0, full check")
h.save_resume_data(lt.save_resume_flags_t.flush_disk_cache)
while True:
    a = s.wait_for_alert(10000)
    found = None
    for alert in s.pop_alerts():
        if isinstance(alert, lt.save_resume_data_alert):
            found = alert
    if found:
        open(resume_path, "wb").write(lt.write_resume_data_buf(found.params))
        break
del s
p = lt.read_resume_data(open(resume_path, "rb").read())
p.ti = lt.torrent_info(torrent)
p.save_path = store
come_up(p, "libtorrent 2.0, with its resume data")
PY
fi
echo "results in $OUT"
