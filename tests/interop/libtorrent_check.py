"""Checks a seedpool torrent with libtorrent: parse it, then hash-check the data on disk.

Usage: /usr/bin/python3 libtorrent_check.py TORRENT SAVE_PATH
Prints one JSON object: info hash, piece length, files (with pad flags and offsets), and
what libtorrent's own check of the data found. Networking is off: no DHT, LSD, UPnP,
NAT-PMP, trackers; the session listens on loopback only.
"""
import json
import sys
import time

import libtorrent as lt

from lt_session import loopback_session

torrent, save_path = sys.argv[1], sys.argv[2]
ti = lt.torrent_info(torrent)
similar = [str(h) for h in ti.similar_torrents()]
fs = ti.files()
files = []
for i in range(fs.num_files()):
    files.append({
        "path": fs.file_path(i),
        "size": fs.file_size(i),
        "offset": fs.file_offset(i),
        "pad": bool(fs.file_flags(i) & lt.file_storage.flag_pad_file),
    })

session = loopback_session()
params = lt.add_torrent_params()
params.ti = ti
params.save_path = save_path
handle = session.add_torrent(params)
# Without resume data libtorrent checks every piece already on disk before it moves on
# to downloading (some pieces missing or bad) or seeding (all there).
done = (lt.torrent_status.downloading, lt.torrent_status.seeding, lt.torrent_status.finished)
deadline = time.time() + 60
while True:
    status = handle.status()
    if status.state in done:
        break
    if status.errc.value() != 0 or time.time() > deadline:
        print(json.dumps({"error": status.errc.message() or "timed out checking"}))
        sys.exit(1)
    time.sleep(0.02)

print(json.dumps({
    "info_hash": str(ti.info_hash()),
    "name": ti.name(),
    "piece_length": ti.piece_length(),
    "num_pieces": ti.num_pieces(),
    "total_size": ti.total_size(),
    "files": files,
    "web_seeds": [w["url"] for w in ti.web_seeds()],
    "similar": similar,
    "trackers": [t.url for t in ti.trackers()],
    "have_pieces": status.num_pieces,
    "is_seeding": bool(status.is_seeding),
    "state": str(status.state),
}))
