"""The replay summary's top talkers (dpi._flowtable.HostSums): exact byte sums per host, checked against a
Python dict over the same records keyed by the ipaddress module's text; ties, IPv6, table growth, the cap."""
from __future__ import annotations

import ipaddress
import random

import numpy as np
import pytest

from dpi import _flowtable as ft


def records(rng, n, hosts):
    by_version = {v: [h for h in hosts if h.version == v] for v in (4, 6)}
    r = np.zeros(n, ft.FLOWREC_DTYPE)
    for i in range(n):
        v = rng.choice([v for v in (4, 6) if by_version[v]])
        r[i]["ip_version"] = v
        for side in ("src", "dst"):
            h = rng.choice(by_version[v])
            r[i][f"{side}_addr"] = np.frombuffer(h.packed.ljust(16, b"\0"), np.uint8)
        r[i]["src_bytes"] = rng.randrange(1 << 20)
        r[i]["dst_bytes"] = rng.randrange(1 << 20)
    return r


def expected(recs_list, k):
    sums: dict[str, int] = {}
    order: dict[str, int] = {}
    for recs in recs_list:
        for r in recs:
            tot = int(r["src_bytes"]) + int(r["dst_bytes"])
            for side in ("src", "dst"):
                raw = bytes(r[f"{side}_addr"])
                h = str(ipaddress.ip_address(raw[:4] if r["ip_version"] == 4 else raw))
                order.setdefault(h, len(order))
                sums[h] = sums.get(h, 0) + tot
    top = sorted(sums, key=lambda h: (-sums[h], order[h]))[:k]
    return [(sums[h], h) for h in top], len(sums)


def test_top_talkers_exact():
    rng = random.Random(7)
    # 3,000 hosts: the table grows past its first 1,024 slots several times
    hosts = [ipaddress.ip_address(f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}")
             for _ in range(2000)]
    hosts += [ipaddress.ip_address(f"2001:db8::{rng.randrange(1 << 16):x}:{rng.randrange(1 << 16):x}")
              for _ in range(1000)]
    batches = [records(rng, 4000, hosts) for _ in range(3)]
    s = ft.HostSums()
    for b in batches:
        s.add(b)
    want, distinct = expected(batches, 10)
    assert s.top(10) == want
    assert len(s) == distinct and s.hosts_dropped == 0


def test_ties_rank_by_first_appearance_and_self_talk():
    a, b, c = (ipaddress.ip_address(x) for x in ("192.0.2.1", "192.0.2.2", "::1"))
    r = np.zeros(3, ft.FLOWREC_DTYPE)
    for i, (x, y, nb) in enumerate(((a, b, 100), (b, a, 0), (c, c, 50))):
        r[i]["ip_version"] = x.version
        r[i]["src_addr"] = np.frombuffer(x.packed.ljust(16, b"\0"), np.uint8)
        r[i]["dst_addr"] = np.frombuffer(y.packed.ljust(16, b"\0"), np.uint8)
        r[i]["src_bytes"] = nb
    s = ft.HostSums()
    s.add(r)
    # a and b tie at 100 (a first); ::1 talked to itself: its 50 bytes were sent and received
    assert s.top(5) == [(100, "192.0.2.1"), (100, "192.0.2.2"), (100, "::1")]
    assert s.top(1) == [(100, "192.0.2.1")]


def test_cap_bounds_hosts_and_counts_the_rest():
    rng = random.Random(3)
    hosts = [ipaddress.ip_address(f"10.0.{i // 256}.{i % 256}") for i in range(600)]
    recs = records(rng, 2000, hosts)
    s = ft.HostSums(cap=100)
    s.add(recs)
    assert len(s) == 100 and s.hosts_dropped > 0
    # the hosts kept are the first 100 to appear, with exact sums over every record
    want, _ = expected([recs], 600)
    first: list[str] = []
    for r in recs:
        for side in ("src", "dst"):
            h = str(ipaddress.ip_address(bytes(r[f"{side}_addr"])[:4]))
            if h not in first:
                first.append(h)
    kept = set(first[:100])
    full = dict((h, b) for b, h in want)
    assert all(full[h] == b for b, h in s.top(100)) and {h for _, h in s.top(100)} == kept
    dropped = sum(1 for r in recs for side in ("src", "dst")
                  if str(ipaddress.ip_address(bytes(r[f"{side}_addr"])[:4])) not in kept)
    assert s.hosts_dropped == dropped
    with pytest.raises(ValueError):
        ft.HostSums(cap=0)
