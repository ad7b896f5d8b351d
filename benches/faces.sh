#!/usr/bin/env bash
# Benchmark for docs/performance.md and docs/detect.md: LBP cascade face detection by
# seedpool (benches/faces.rs, Cascade::detect) and OpenCV 4.6 (python3-opencv,
# CascadeClassifier.detectMultiScale), both on one thread, detection only (images
# decoded beforehand), on the same grey images of at most 512 px:
#   - the 241 character portraits of wesnoth-1.16-data (drawn, 400 to 500 px), and
#   - the 236 pictures of benches/thumbs.sh, shrunk to 512 px (run that first);
# with OpenCV's lbpcascade_frontalface_improved.xml (opencv-data) and, when
# ../shared/data has it, nagadomi's lbpcascade_animeface.xml. Scale factor 1.1,
# min-neighbors 3. The agreement of the boxes is what tests/detect.rs checks.
# Needs: python3-opencv, opencv-data, wesnoth-1.16-data.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-target/bench/faces}
mkdir -p "$WORK/portraits" "$WORK/pictures"
/usr/bin/python3 - "$WORK" <<'PY'
import cv2, glob, os, sys
work = sys.argv[1]
def save(img, name, sub):
    if img.ndim == 3 and img.shape[2] == 4:
        a = img[:, :, 3:4] / 255.0
        img = (img[:, :, :3] * a + 255 * (1 - a)).astype("uint8")
    h, w = img.shape[:2]
    s = min(1.0, 512 / max(h, w))
    if s < 1:
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if img.ndim == 3 else img
    cv2.imwrite(os.path.join(work, sub, name + ".png"), g)
root = "/usr/share/games/wesnoth/1.16/data/core/images/portraits/"
for f in sorted(glob.glob(root + "**/*.png", recursive=True)):
    save(cv2.imread(f, cv2.IMREAD_UNCHANGED), f[len(root):-4].replace("/", "_"), "portraits")
for f in sorted(glob.glob("target/bench/thumbs/images/*")):
    img = cv2.imread(f, cv2.IMREAD_UNCHANGED)
    if img is not None:
        save(img, os.path.basename(f).split(".")[0], "pictures")
PY
cargo build --release --locked --quiet --benches
BENCH=$(ls -t target/release/deps/faces-* | grep -v '\.d$' | head -1)
CASCADES=(/usr/share/opencv4/lbpcascades/lbpcascade_frontalface_improved.xml)
[ -f ../shared/data/lbpcascade_animeface.xml ] && CASCADES+=(../shared/data/lbpcascade_animeface.xml)
for c in "${CASCADES[@]}"; do
  for set in portraits pictures; do
    echo "== $(basename "$c") on $set"
    for run in 1 2 3; do
      "$BENCH" "$c" "$WORK/$set" 3
      /usr/bin/python3 tests/interop/opencv_detect.py "$c" "$WORK/$set" 1.1 3 2>&1 >/dev/null \
        | sed 's/^/opencv: seconds on one thread: /'
    done
  done
done
