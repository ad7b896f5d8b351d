#!/usr/bin/env bash
# Benchmark for docs/performance.md: one release of SIZE_MIB MiB (default 1 GiB of
# incompressible items, 4 a shard) served by `seedpool seed --http` on 127.0.0.1 and
# fetched, RUNS times each, by:
#   curl, one file after another         (the reference a user would reach for)
#   curl --parallel, 4 at once            (the same connection count as sync's default)
#   seedpool sync --web-seed, no peer     (ranged GETs, SHA-1 of every piece, blake3 of
#                                          every file, fsync, merge)
# and, for scale, curl from nginx (Debian's nginx-light, sendfile) serving the same store.
# Times are wall clock of the fetching command, from start to every file on disk. No
# DHT, no trackers, no BitTorrent peer: the web seed alone.
# Usage: benches/webseed.sh        results in target/bench/webseed/results.md
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
ITEMS=${ITEMS:-256}
RUNS=${RUNS:-3}
WORK=${WORK:-target/bench/webseed}
BIN=$PWD/target/release/seedpool

cargo build --release --locked --quiet
. benches/random_release.sh
random_release
M=$WORK/store/bench-1.manifest.json
BYTES=$(cat "$WORK"/store/bench/shards/* "$WORK"/store/bench/index/* | wc -c)
cat "$WORK"/store/bench/shards/* "$WORK"/store/bench/index/* > /dev/null

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
"$BIN" seed "$M" --store "$WORK/store" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
  --no-dht --no-trackers --json > "$WORK/seed.log" 2>/dev/null &
pids+=($!)
until grep -q '"ready"' "$WORK/seed.log"; do sleep 0.1; done
URL=$(grep '"ready"' "$WORK/seed.log" | sed 's/.*"http":"\([^"]*\)".*/\1/')

# nginx serving the same store: how fast a server can go here, for scale.
NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
NW=$PWD/$WORK/nginx
mkdir -p "$NW"
printf '%s\n' "daemon off; master_process off; worker_processes 1; pid $NW/nginx.pid;" \
  "error_log $NW/error.log; events { worker_connections 64; }" \
  "http { access_log off; sendfile on; default_type application/octet-stream;" \
  "  client_body_temp_path $NW; proxy_temp_path $NW; fastcgi_temp_path $NW;" \
  "  uwsgi_temp_path $NW; scgi_temp_path $NW;" \
  "  server { listen 127.0.0.1:$NGINX_PORT; root $PWD/$WORK/store; } }" > "$NW/nginx.conf"
/usr/sbin/nginx -p "$NW" -e "$NW/error.log" -c "$NW/nginx.conf" &
pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.1; done
NGINX=http://127.0.0.1:$NGINX_PORT/

# The files of the release, as URLs and as curl's --parallel config.
(cd "$WORK/store" && find bench/shards bench/index -type f | sort) > "$WORK/files.txt"
: > "$WORK/curl.cfg"
while read -r f; do
  printf 'url = "%s%s"\noutput = "%s"\n' "$URL" "$f" "$WORK/curl/$f" >> "$WORK/curl.cfg"
done < "$WORK/files.txt"

now() { date +%s.%N; }
rate() { echo "$BYTES $1" | awk '{printf "%.0f", $1 / $2 / 1048576}'; }
results=()
for run in $(seq 1 "$RUNS"); do
  rm -rf "$WORK/curl"; sync; t0=$(now)
  while read -r f; do
    curl -sf --create-dirs -o "$WORK/curl/$f" "$URL$f"
  done < "$WORK/files.txt"
  t1=$(now)
  rm -rf "$WORK/curl"; sync; t1=$(now)
  curl -sf --create-dirs --parallel --parallel-max 4 --no-progress-meter -K "$WORK/curl.cfg"
  t2=$(now)
  rm -rf "$WORK/pool" "$WORK/curl"; sync; t2=$(now)
  "$BIN" sync "$M" --pool "$WORK/pool" --web-seed "$URL" --listen 127.0.0.1:0 \
    --no-dht --no-trackers --json > "$WORK/sync.json"
  t3=$(now)
  rm -rf "$WORK/curl"; sync; t3=$(now)
  while read -r f; do
    curl -sf --create-dirs -o "$WORK/curl/$f" "$NGINX$f"
  done < "$WORK/files.txt"
  t4=$(now)
  a=$(awk "BEGIN {print $t1 - $t0}"); b=$(awk "BEGIN {print $t2 - $t1}"); c=$(awk "BEGIN {print $t3 - $t2}"); d=$(awk "BEGIN {print $t4 - $t3}")
  echo "run $run: curl ${a}s, curl --parallel 4 ${b}s, seedpool sync ${c}s, curl from nginx ${d}s"
  results+=("$a $b $c $d")
done

{
  echo "| $(echo "$BYTES" | awk '{printf "%.2f GiB", $1/1073741824}') from seedpool seed --http over 127.0.0.1 | median s | MiB/s | vs curl |"
  echo "|---|---:|---:|---:|"
  ref=$(printf '%s\n' "${results[@]}" | awk '{print $1}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  for col in 1 2 3 4; do
    name=$(case $col in 1) echo "curl, one file after another";; 2) echo "curl --parallel-max 4";; 3) echo "seedpool sync --web-seed (checked, fsynced, merged)";; 4) echo "for scale: curl, one file after another, from nginx (sendfile)";; esac)
    med=$(printf '%s\n' "${results[@]}" | awk -v c="$col" '{print $c}' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    ratio=$(echo "$ref $med" | awk '{printf "%.2fx", $1 / $2}')
    printf '| %s | %.2f | %s | %s |\n' "$name" "$med" "$(rate "$med")" "$ratio"
  done
} | tee "$WORK/results.md"
