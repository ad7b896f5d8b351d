"""A libtorrent peer on loopback, to exchange a seedpool release with a real client.

Usage:
  /usr/bin/python3 libtorrent_peer.py seed TORRENT SAVE_PATH
      checks the data, prints {"port": N} once seeding, then seeds until stdin closes
  /usr/bin/python3 libtorrent_peer.py partial TORRENT SAVE_PATH
      the same with part of the data: serves the pieces it has
  /usr/bin/python3 libtorrent_peer.py download TORRENT SAVE_PATH IP:PORT
      downloads from that peer, prints {"bytes": N, "seconds": S} when complete
  /usr/bin/python3 libtorrent_peer.py webseed TORRENT SAVE_PATH URL
      downloads from that BEP 19 web seed alone (no peer), and prints the same

No DHT, LSD, UPnP, NAT-PMP or trackers; loopback only; everything bounded in time.
"""
import json
import sys
import threading
import time

import libtorrent as lt

from lt_session import loopback_session

mode, torrent, save_path = sys.argv[1], sys.argv[2], sys.argv[3]
session = loopback_session()
params = lt.add_torrent_params()
params.ti = lt.torrent_info(torrent)
params.save_path = save_path
handle = session.add_torrent(params)


def wait_for(states, seconds, what):
    deadline = time.time() + seconds
    while True:
        status = handle.status()
        if status.state in states:
            return status
        if status.errc.value() != 0:
            sys.exit("libtorrent error: " + status.errc.message())
        if time.time() > deadline:
            sys.exit("timed out " + what + " (state " + str(status.state) + ", "
                     + str(status.total_wanted_done) + " of " + str(status.total_wanted) + " bytes)")
        time.sleep(0.02)


if mode in ("seed", "partial"):
    status = wait_for((lt.torrent_status.seeding, lt.torrent_status.finished,
                       lt.torrent_status.downloading), 60, "checking")
    if mode == "seed" and not status.is_seeding:
        sys.exit("the data is incomplete: " + str(status.num_pieces) + " pieces")
    if mode == "partial" and (status.is_seeding or status.num_pieces == 0):
        sys.exit("expected part of the data, found " + str(status.num_pieces) + " pieces")
    print(json.dumps({"port": session.listen_port()}), flush=True)
    # Seed until the test closes stdin (or 120 s pass).
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait(120)
elif mode in ("download", "webseed"):
    start = time.time()
    if mode == "download":
        ip, port = sys.argv[4].rsplit(":", 1)
        handle.connect_peer((ip, int(port)))
    else:
        handle.add_url_seed(sys.argv[4])
    status = wait_for((lt.torrent_status.seeding, lt.torrent_status.finished), 120,
                      "downloading")
    print(json.dumps({
        "bytes": status.total_wanted,
        "seconds": time.time() - start,
        "payload_download": status.total_payload_download,
    }))
else:
    sys.exit("unknown mode " + mode)
