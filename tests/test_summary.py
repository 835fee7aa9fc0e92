"""The replay summary's top talkers: exact byte sums per host text, checked against a Python dict over the
same rows; also when every hash collides (the exact fallback path)."""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest

from dpi import replay as rp


def batches(seed, n_batches=3, rows=5000):
    rng = random.Random(seed)
    hosts = [f"10.{rng.randrange(4)}.{rng.randrange(256)}.{rng.randrange(256)}" for _ in range(300)]
    hosts += [f"2001:db8::{rng.randrange(1 << 16):x}:{rng.randrange(1 << 16):x}" for _ in range(100)]
    out = []
    for _ in range(n_batches):
        src = [rng.choice(hosts) for _ in range(rows)]
        dst = [rng.choice(hosts) for _ in range(rows)]
        sb = [rng.randrange(1 << 20) for _ in range(rows)]
        db = [rng.randrange(1 << 20) for _ in range(rows)]
        cols = {"src_ip": pa.array(src), "dst_ip": pa.array(dst), "src_port": pa.array([1] * rows, pa.uint16()),
                "dst_port": pa.array([2] * rows, pa.uint16()), "protocol": pa.array([6] * rows, pa.uint8()),
                "src_bytes": pa.array(sb, pa.uint64()), "dst_bytes": pa.array(db, pa.uint64()),
                "src_packets": pa.array([1] * rows, pa.uint64()), "dst_packets": pa.array([1] * rows, pa.uint64())}
        out.append(pa.record_batch(list(cols.values()), names=list(cols)))
    return out


def expected(bs, n):
    sums: dict[str, int] = {}
    order: dict[str, int] = {}
    for b in bs:
        d = b.to_pydict()
        for s, t, x, y in zip(d["src_ip"], d["dst_ip"], d["src_bytes"], d["dst_bytes"]):
            for h in (s, t):
                order.setdefault(h, len(order))
                sums[h] = sums.get(h, 0) + x + y
    top = sorted(sums, key=lambda h: (-sums[h], order[h]))[:n]
    return [(sums[h], h) for h in top]


@pytest.mark.parametrize("collide", [False, True])
def test_top_talkers_exact(monkeypatch, collide):
    if collide:   # every host hashes alike: the exact check must catch it and group by the whole key
        monkeypatch.setattr(rp, "_HASH_MUL", np.zeros(64, np.uint64))
    monkeypatch.setattr(rp._Summary, "PENDING_MAX", 12000)   # re-aggregate between batches too
    bs = batches(7)
    s = rp._Summary(n=10)
    for b in bs:
        s.add(b.slice(3))   # a sliced batch: the string column has an offset into its buffers
    _flows, hosts = s.result()
    assert hosts == expected([b.slice(3) for b in bs], 10)
