#!/usr/bin/env bash
# Benchmark for docs/performance.md: 512 px JPEG thumbnails of real artwork and photos
# shipped in Debian wallpaper packages (gnome-backgrounds, plasma-workspace-wallpapers,
# lomiri-wallpapers, desktop-base; every JPEG, PNG and WebP over 100 kB), made by
#   seedpool (benches/thumbs.rs: ingest's decode, linear-light Lanczos3, optimised JPEG),
#   vipsthumbnail (libvips-tools) and ImageMagick `convert -thumbnail 512x512`,
# each using both cores (seedpool with rayon, the others one process per image, xargs -P).
# Needs: libvips-tools, imagemagick, hyperfine, network access to the Debian archive once.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-target/bench/thumbs}
RUNS=${RUNS:-5}
JOBS=$(nproc)
# Debian's ImageMagick, not a stand-in earlier on PATH.
CONVERT=${CONVERT:-/usr/bin/convert}
mkdir -p "$WORK"
if [ ! -d "$WORK/images" ]; then
  (cd "$WORK" && apt-get download gnome-backgrounds plasma-workspace-wallpapers \
     lomiri-wallpapers desktop-base >/dev/null 2>&1)
  for d in "$WORK"/*.deb; do dpkg -x "$d" "$WORK/x"; done
  mkdir -p "$WORK/images"
  i=0
  find "$WORK/x" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.webp' \) \
      -size +100k | sort | while read -r f; do
    i=$((i + 1)); ext=${f##*.}; cp "$f" "$WORK/images/$(printf '%03d' "$i").${ext,,}"
  done
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
    "ls $WORK/images/* | xargs -P $JOBS -I{} vipsthumbnail {} -s 512 -o $PWD/$WORK/out-vips/%s.jpg[Q=85]" \
  -n "convert -thumbnail 512x512" --prepare "rm -rf $WORK/out-im && mkdir -p $WORK/out-im" \
    "ls $WORK/images/* | xargs -P $JOBS -I{} sh -c '$CONVERT \"\$1\" -thumbnail 512x512 -quality 85 $WORK/out-im/\$(basename \"\$1\").jpg' _ {}"
echo "images: $N"
