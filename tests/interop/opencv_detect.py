"""OpenCV's CascadeClassifier.detectMultiScale on every PNG in a folder, for the
agreement test: prints {file name: [[x, y, w, h], ...]} as JSON, and the seconds spent
detecting (one thread) on stderr. Run with Debian's /usr/bin/python3 (python3-opencv)."""
import glob
import json
import os
import sys
import time

import cv2

cascade_path, folder, scale_factor, min_neighbors = sys.argv[1:5]
cascade = cv2.CascadeClassifier(cascade_path)
if cascade.empty():
    sys.exit(f"OpenCV could not load {cascade_path}")
cv2.setNumThreads(1)
found = {}
spent = 0.0
for path in sorted(glob.glob(os.path.join(folder, "*.png"))):
    grey = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
    start = time.perf_counter()
    boxes = cascade.detectMultiScale(
        grey, scaleFactor=float(scale_factor), minNeighbors=int(min_neighbors)
    )
    spent += time.perf_counter() - start
    found[os.path.basename(path)] = [[int(v) for v in b] for b in boxes]
json.dump(found, sys.stdout)
print(f"{spent:.3f}", file=sys.stderr)
