"""Loads a seedpool store's dataset folder with Hugging Face `datasets`, as a user would,
through the dataset card seedpool writes. Prints one JSON object per release:
rows after skipping hidden items, the distinct keys, and a few feature types.

Usage: hf_load.py DATASET_DIR VERSION...   (offline; nothing is downloaded)
"""
import json
import os
import sys
import tempfile

os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

import datasets  # noqa: E402

root = sys.argv[1]
out = {}
with tempfile.TemporaryDirectory() as cache:
    for version in sys.argv[2:]:
        hidden = json.load(open(os.path.join(root, "hidden", f"{version}.json")))
        ds = datasets.load_dataset(root, version, split="train", cache_dir=cache)
        all_rows = len(ds)
        ds = ds.filter(
            lambda x: x["__key__"] not in hidden.get(os.path.basename(x["__url__"])[:-4], ())
        )
        record = ds.features["json"]
        thumb = ds[0]["thumb.jpg"]
        out[version] = {
            "rows_in_shards": all_rows,
            "rows": len(ds),
            "keys": sorted(set(ds["__key__"])),
            "favs": str(record["favs"]),
            "jpeg_quality": str(record["stats"]["jpeg_quality"]),
            "thumb": [thumb.width, thumb.height],
        }
    # The default configuration is the newest release.
    out["default_rows"] = len(datasets.load_dataset(root, split="train", cache_dir=cache))
print(json.dumps(out))
