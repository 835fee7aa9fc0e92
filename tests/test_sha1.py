"""SHA-1 of the Community ID (ext/ft_util.h ft_sha1_short) against hashlib, on every message length it takes
(0-55 bytes), through the SHA-NI path (when the CPU has it) and the portable C path; and the Community IDs
of flow records against the spec's algorithm written here with hashlib (corelight/community-id-spec)."""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import random
import struct

import numpy as np
import pytest

from dpi import _flowtable as ft


@pytest.mark.parametrize("portable", [False, True])
def test_sha1_matches_hashlib(portable):
    rng = random.Random(11)
    for n in range(56):
        for _ in range(50):
            m = bytes(rng.randrange(256) for _ in range(n))
            assert ft._sha1_short(m, portable) == hashlib.sha1(m).digest(), (n, m.hex())
    with pytest.raises(ValueError):
        ft._sha1_short(b"x" * 56)


def community_id(seed, src, dst, proto, sport, dport):
    """Community ID v1 for TCP/UDP by the spec: ordered endpoints, seed, addresses, proto, pad, ports."""
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if (a.packed, sport) > (b.packed, dport):
        a, b, sport, dport = b, a, dport, sport
    msg = struct.pack("!H", seed) + a.packed + b.packed + struct.pack("!BBHH", proto, 0, sport, dport)
    return "1:" + base64.b64encode(hashlib.sha1(msg).digest()).decode()


def test_record_community_ids():
    rng = random.Random(4)
    n = 500
    r = np.zeros(n, ft.FLOWREC_DTYPE)
    want = []
    for i in range(n):
        v6 = i % 3 == 0
        src = ipaddress.ip_address(rng.getrandbits(128 if v6 else 32) if v6 else rng.getrandbits(32))
        dst = ipaddress.ip_address(rng.getrandbits(128) if v6 else rng.getrandbits(32))
        proto = rng.choice((6, 17))
        sport, dport = rng.randrange(65536), rng.randrange(65536)
        r[i]["ip_version"] = 6 if v6 else 4
        r[i]["src_addr"] = np.frombuffer(src.packed.ljust(16, b"\0"), np.uint8)
        r[i]["dst_addr"] = np.frombuffer(dst.packed.ljust(16, b"\0"), np.uint8)
        r[i]["proto"], r[i]["src_port"], r[i]["dst_port"] = proto, sport, dport
        want.append(community_id(7, str(src), str(dst), proto, sport, dport))
    _src, _dst, (offsets, data) = ft.text_columns(r, 7)
    got = [bytes(data[offsets[i]:offsets[i + 1]]).decode() for i in range(n)]
    assert got == want
