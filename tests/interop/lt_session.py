"""The libtorrent session both interop scripts use: loopback only, no DHT, LSD, UPnP,
NAT-PMP or trackers, and settings that let it talk to librqbit at once."""
import libtorrent as lt


def loopback_session():
    return lt.session({
        "listen_interfaces": "127.0.0.1:0",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        # librqbit speaks neither MSE encryption nor (here) outgoing uTP first.
        "enable_outgoing_utp": False,
        "out_enc_policy": 2,
        "in_enc_policy": 2,
        "allow_multiple_connections_per_ip": True,
    })
