"""Generates a BOORU-CHARS-like release folder of item records for the pool benchmark.

Usage: python3 gen_release.py OUT ITEMS [--changes N] [--from DIR] [--flat] [--vectors]
  Writes ITEMS records `<booru>-<id>.json` (about 12 tags each: 1 artist, 1-2
  copyrights, 1-2 characters, ~7 general, 1 meta) into OUT/<bucket>/, deterministic.
  Tags co-occur as on a booru: each artist draws from 3 series, each character belongs
  to one series, each series has 10 general tags it is often drawn with, and
  popularity is skewed (a few artists, series and tags are in many items). Each item
  has a 64-bit perceptual hash; one in 20 is a look-alike of one of the 19 items before
  it (1 to 8 bits flipped). --flat
  draws every tag uniformly and independently, as the figures in docs/performance.md
  before 2026-12 were made.
  --vectors adds image statistics (`stats`, as ingest writes them) and a 64-dimension
  `embedding` of one `embedder` space: both drawn around a colour and a direction of
  the item's first series, so items of a series cluster (for `mine similar --by
  stats|embedding` and `mine clusters --by stats|embedding`).
  With --from DIR and --changes N: OUT becomes DIR (hard links) with N changes: 60%
  changed records, 20% removed items, 20% new items.
"""
import hashlib
import json
import os
import math
import random
import struct
import sys

BOORUS = ["safebooru", "danbooru", "gelbooru", "yande.re", "konachan", "e-shuushuu", "zerochan", "anime-pictures", "sankaku"]
ASPECTS = ["7x10", "3x4", "1x1", "3x2", "2x3", "other"]


SERIES, CHARACTERS, ARTISTS, GENERAL = 3000, 20000, 20000, 2000
FLAT = "--flat" in sys.argv
VECTORS = "--vectors" in sys.argv
DIMS = 64
EMBEDDER = {"model": "gen_release.py", "dims": DIMS, "space": "bench-64"}


def skewed(rng, n):
    """An index in [0, n) where low ones are much more likely (popular tags)."""
    return int(n * rng.random() ** 2.5)


def artist_series(artist):
    """The 3 series an artist draws (fixed per artist)."""
    return [(artist * 2654435761 + k * 40503) % SERIES for k in range(3)]


def series_characters(series):
    """Characters of a series: character c belongs to series c % SERIES."""
    return range(series, CHARACTERS, SERIES)


def tags_of(i, rng):
    if FLAT:
        return (
            [rng.randrange(ARTISTS)],
            [rng.randrange(SERIES) for _ in range(1 + (i % 3 == 0))],
            [rng.randrange(CHARACTERS) for _ in range(1 + (i % 2))],
            sorted({rng.randrange(GENERAL) for _ in range(7)}),
        )
    artist = skewed(rng, ARTISTS)
    own = artist_series(artist)
    series = sorted({own[skewed(rng, 3)] for _ in range(1 + (i % 3 == 0))})
    cast = list(series_characters(series[0]))
    chars = sorted({cast[skewed(rng, len(cast))] for _ in range(1 + (i % 2))})
    themes = [(series[0] * 7 + k) % GENERAL for k in range(10)]
    general = {themes[skewed(rng, 10)] for _ in range(4)}
    general |= {skewed(rng, GENERAL) for _ in range(3)}
    return [artist], series, chars, sorted(general)


def phash_base(i):
    return int.from_bytes(hashlib.blake2b(str(i).encode(), digest_size=8).digest(), "big")


def phash_of(i, rng):
    """A uniform 64-bit hash, or a near copy of an earlier item's (planted look-alikes)."""
    if i % 20 != 1 or i < 20:
        return phash_base(i)
    h = phash_base(i - 1 - rng.randrange(19))
    for bit in rng.sample(range(64), 1 + rng.randrange(8)):
        h ^= 1 << bit
    return h


def series_rng(series, salt):
    return random.Random(series * 1000003 + salt)


def stats_of(series, rng):
    """Statistics around the series' palette: rgb means within about 20 levels."""
    base = series_rng(series, 1)
    rgb = [min(255.0, max(0.0, base.uniform(30, 225) + rng.gauss(0, 20))) for _ in range(3)]
    mean = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    chroma = max(rgb) - min(rgb)
    return {
        "trim": [0.0, 0.0, 1.0, round(rng.uniform(0.8, 1.0), 4)],
        "entropy": round(min(8.0, base.uniform(5.5, 7.8) + rng.gauss(0, 0.2)), 4),
        "mean": round(mean, 3),
        "std": round(base.uniform(30, 80) + rng.gauss(0, 8), 3),
        "skewness": round(rng.gauss(0, 0.5), 4),
        "colors": int(base.uniform(20000, 150000) * rng.uniform(0.7, 1.3)),
        "chroma_mean": round(chroma * 0.8, 3),
        "chroma_max": round(min(255.0, chroma * 2 + 40), 3),
        "rgb_mean": [round(c, 3) for c in rgb],
        "edges": round(base.uniform(8, 40) * rng.uniform(0.8, 1.2), 3),
        "jpeg_quality": 90,
    }


def embedding_of(series, rng):
    """The series' direction plus noise, at unit length, as base64 float16."""
    import base64

    base = series_rng(series, 2)
    v = [base.gauss(0, 1) + rng.gauss(0, 0.6) for _ in range(DIMS)]
    norm = math.sqrt(sum(x * x for x in v))
    return base64.b64encode(struct.pack(f"<{DIMS}e", *(x / norm for x in v))).decode()


def record(i, rng, bump=0):
    booru = BOORUS[i % len(BOORUS)]
    year = 2010 + (i * 7919) % 16
    artist, series, chars, general = tags_of(i, rng)
    rec = {
        "booru": booru,
        "post_id": 100000 + i,
        "md5": hashlib.md5(str(i).encode()).hexdigest(),
        "rating": "gs"[i % 2],
        "score": rng.randrange(1000) + bump,
        "favs": rng.randrange(3000),
        "posted": f"{year}-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00Z",
        "width": 900 + rng.randrange(3000),
        "height": 900 + rng.randrange(3000),
        "bytes": 200000 + rng.randrange(5000000),
        "tags": {
            "artist": [f"artist_{a}" for a in artist],
            "copyright": [f"series_{s}" for s in series],
            "character": [f"character_{c}" for c in chars],
            "general": [f"general_{g}" for g in general],
            "meta": ["highres"],
        },
        "volume": f"{ASPECTS[i % len(ASPECTS)]}-{year}",
    }
    if not FLAT:
        rec["phash"] = f"{phash_of(i, rng):016x}"
    if VECTORS:
        rec["stats"] = stats_of(series[0], rng)
        rec["embedding"] = embedding_of(series[0], rng)
        rec["embedder"] = EMBEDDER
    return booru, rec


def path_of(out, i, booru):
    bucket = os.path.join(out, f"{i // 1000:05d}")
    return bucket, os.path.join(bucket, f"{booru.replace('.', '')}-{100000 + i}.json")


def write(out, i, bump=0):
    rng = random.Random(i)
    booru, rec = record(i, rng, bump)
    bucket, path = path_of(out, i, booru)
    os.makedirs(bucket, exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rec, f, separators=(",", ":"))
    os.replace(tmp, path)


def main():
    out, items = sys.argv[1], int(sys.argv[2])
    args = [a for a in sys.argv[3:] if a not in ("--flat", "--vectors")]
    if "--from" in args:
        src = args[args.index("--from") + 1]
        changes = int(args[args.index("--changes") + 1])
        os.system(f"cp -al '{src}' '{out}'")
        rng = random.Random(42)
        picked = rng.sample(range(items), changes * 4 // 5)
        changed, removed = picked[: changes * 3 // 5], picked[changes * 3 // 5:]
        for i in changed:
            write(out, i, bump=1)  # os.replace: never writes through the hard link
        for i in removed:
            booru = BOORUS[i % len(BOORUS)]
            os.remove(path_of(out, i, booru)[1])
        for i in range(items, items + changes // 5):
            write(out, i)
    else:
        # One process per core: writing a million small files is the slow part.
        from multiprocessing import Pool

        with Pool() as pool:
            pool.starmap(write, ((out, i) for i in range(items)), chunksize=5000)


if __name__ == "__main__":
    main()
