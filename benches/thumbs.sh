#!/usr/bin/env bash
# Benchmark for docs/performance.md: 512 px JPEG thumbnails of real artwork and photos
# shipped in Debian packages: desktop wallpapers (gnome-backgrounds, plasma-workspace-
# wallpapers, mate-backgrounds, ukui-wallpapers, lomiri-wallpapers, lomiri-wallpapers-16.04,
# sway-backgrounds, desktop-base, debian-edu-artwork-*) and stellarium-data (nebula
# photographs, sky-culture drawings, landscape panoramas). Every JPEG, PNG and WebP over
# 100 kB that passes BOORU-CHARS' quality filter (900x900 or more), one copy of each file.
# Made by
#   seedpool (benches/thumbs.rs: ingest's decode, linear-light Lanczos3, optimised JPEG),
#   vipsthumbnail (libvips-tools) and ImageMagick `mogrify -thumbnail 512x512`,
# each using all cores: seedpool with rayon, the others as one process per core, 16 files
# per process (xargs -P -n; faster for both than a process per file or one for all).
# Needs: libvips-tools, imagemagick, hyperfine, network access to the Debian archive once.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-target/bench/thumbs}
RUNS=${RUNS:-3}
JOBS=$(nproc)
# Debian's ImageMagick, not a stand-in earlier on PATH.
MOGRIFY=${MOGRIFY:-/usr/bin/mogrify}
mkdir -p "$WORK"
if [ ! -d "$WORK/images" ]; then
  (cd "$WORK" && apt-get download gnome-backgrounds plasma-workspace-wallpapers \
     mate-backgrounds ukui-wallpapers lomiri-wallpapers lomiri-wallpapers-16.04 \
     sway-backgrounds desktop-base debian-edu-artwork-emerald debian-edu-artwork-homeworld \
     debian-edu-artwork-softwaves debian-edu-artwork-spacefun stellarium-data >/dev/null 2>&1)
  for d in "$WORK"/*.deb; do dpkg -x "$d" "$WORK/x"; done
  mkdir -p "$WORK/images"
  find "$WORK/x" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.webp' \) \
      -size +100k -print0 | sort -z | xargs -0 -n 1 sh -c \
      'identify -format "%w %h " "$1[0]" 2>/dev/null && md5sum "$1"' _ \
    | awk '$1 >= 900 && $2 >= 900 && !seen[$3]++ { print $4 }' > "$WORK/list"
  i=0
  while read -r f; do
    i=$((i + 1)); ext=${f##*.}; cp "$f" "$WORK/images/$(printf '%03d' "$i").${ext,,}"
  done < "$WORK/list"
fi
N=$(ls "$WORK/images" | wc -l)
echo "$N images, $(du -sh "$WORK/images" | cut -f1)"
cargo build --release --locked --quiet --benches
BENCH=$(ls -t target/release/deps/thumbs-* | grep -v '\.d$' | head -1)
cat "$WORK"/images/* > /dev/null
hyperfine --warmup 1 --runs "$RUNS" --export-markdown "$WORK/results.md" \
  -n "seedpool (thumbs bench)" --prepare "rm -rf $WORK/out-sp" \
    "$BENCH $WORK/images $WORK/out-sp" \
  -n "vipsthumbnail -s 512" --prepare "rm -rf $WORK/out-vips && mkdir -p $WORK/out-vips" \
    "ls $WORK/images/* | xargs -P $JOBS -n 16 vipsthumbnail -s 512 -o $PWD/$WORK/out-vips/%s.jpg[Q=85] 2>/dev/null" \
  -n "mogrify -thumbnail 512x512" --prepare "rm -rf $WORK/out-im && mkdir -p $WORK/out-im" \
    "ls $WORK/images/* | xargs -P $JOBS -n 16 $MOGRIFY -path $WORK/out-im -format jpg -thumbnail 512x512 -quality 85"
# The same, one format at a time (one run each).
for ext in jpg png webp; do
  rm -rf "$WORK/by-format" && mkdir -p "$WORK/by-format/in" "$WORK/by-format/vips"
  cp "$WORK"/images/*."$ext" "$WORK/by-format/in/"
  n=$(ls "$WORK/by-format/in" | wc -l)
  per=$(( (n + JOBS - 1) / JOBS )); [ "$per" -gt 16 ] && per=16
  sp=$( { /usr/bin/time -f %e "$BENCH" "$WORK/by-format/in" "$WORK/by-format/sp" >/dev/null; } 2>&1 )
  vips=$( { /usr/bin/time -f %e sh -c "ls $WORK/by-format/in/* | xargs -P $JOBS -n $per vipsthumbnail -s 512 -o $PWD/$WORK/by-format/vips/%s.jpg[Q=85] 2>/dev/null"; } 2>&1 )
  echo "$ext: $n images, seedpool $sp s, vipsthumbnail $vips s"
done
echo "images: $N"
