#!/usr/bin/env bash
# Benchmark for docs/performance.md: face detection with an ONNX model. seedpool
# (`detect IMAGES --model`: decode, letterbox, inference, suppression, one ONNX Runtime
# session per core) against ONNX Runtime's own Python API running the same model on
# the same pictures already decoded and letterboxed (inference alone), on one core and
# on all of them. The model is tests/interop/make_onnx.py's `bench` network: YOLO-shaped,
# random weights, 640 px input (real face models cannot be downloaded here).
# Pictures: the 236 of benches/thumbs.sh (run that first), shrunk to 512 px JPEGs.
# Needs: python3 with onnx, onnxruntime and numpy (pip); python3-opencv (Debian) to
# prepare the pictures.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-target/bench/onnx}
mkdir -p "$WORK/pictures"
python3 tests/interop/make_onnx.py "$WORK/bench.onnx" bench
/usr/bin/python3 - "$WORK" <<'PY'
import cv2, glob, os, sys
import numpy as np
work = sys.argv[1]
boxes = []
for f in sorted(glob.glob("target/bench/thumbs/images/*")):
    img = cv2.imread(f, cv2.IMREAD_COLOR)
    if img is None:
        continue
    h, w = img.shape[:2]
    s = min(1.0, 512 / max(h, w))
    img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    name = os.path.join(work, "pictures", os.path.basename(f).split(".")[0] + ".jpg")
    cv2.imwrite(name, img, [cv2.IMWRITE_JPEG_QUALITY, 92])
    # Letterboxed as seedpool does it: fit 640, centred on grey 114, RGB.
    h, w = img.shape[:2]
    k = 640 / max(h, w)
    nw, nh = round(w * k), round(h * k)
    box = np.full((640, 640, 3), 114, np.uint8)
    x, y = (640 - nw) // 2, (640 - nh) // 2
    box[y:y + nh, x:x + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    boxes.append(box)
np.save(os.path.join(work, "letterboxed.npy"), np.stack(boxes))
print(len(boxes), "pictures")
PY
cargo build --release --locked --quiet
median() { sort -n | sed -n 2p; }
seconds() { local s; s=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $s" | bc; }
for threads in 1 "$(nproc)"; do
  t=$(for i in 1 2 3; do
    seconds env RAYON_NUM_THREADS=$threads target/release/seedpool detect "$WORK"/pictures/*.jpg \
      --model "$WORK/bench.onnx" --json
  done | median)
  echo "seedpool detect --model, $threads threads: $t s"
  t=$(for i in 1 2 3; do
    python3 - "$WORK" "$threads" <<'PY'
import sys, time
import numpy as np
import onnxruntime as ort
work, threads = sys.argv[1], int(sys.argv[2])
boxes = np.load(work + "/letterboxed.npy")
so = ort.SessionOptions()
so.intra_op_num_threads = threads
s = ort.InferenceSession(work + "/bench.onnx", so, providers=["CPUExecutionProvider"])
start = time.time()
for b in boxes:
    x = (b.transpose(2, 0, 1)[None].astype(np.float32)) / 255.0
    s.run(None, {"images": x})
print(time.time() - start)
PY
  done | median)
  echo "onnxruntime (Python), intra_op_num_threads=$threads, inference only: $t s"
done
ls "$WORK"/pictures/*.jpg | wc -l
target/release/seedpool detect "$WORK"/pictures/*.jpg --model "$WORK/bench.onnx" --json |
  python3 -c "import json,sys; r=json.load(sys.stdin); print(sum(len(x['faces']) for x in r), 'boxes')"
