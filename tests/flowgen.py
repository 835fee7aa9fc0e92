"""A fast generator of large pcap files for the output tests (tests/test_interrupt.py, test_output_limit.py):
one UDP packet per flow, flows `gap_us` apart in time, so that with a short idle timeout the flow table
exports records steadily and the writer produces many full batches. Built with numpy (scapy would take
minutes for the hundreds of thousands of packets needed to fill several 65,536-record batches)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

PCAP_HEADER = (np.array([0xA1B2C3D4], "<u4").tobytes() + np.array([2, 4], "<u2").tobytes()
               + np.array([0, 0, 65535, 1], "<u4").tobytes())   # v2.4, snaplen 65535, LINKTYPE_ETHERNET

REC = np.dtype([("ts_sec", "<u4"), ("ts_usec", "<u4"), ("incl", "<u4"), ("orig", "<u4"),
                ("eth_dst", "u1", 6), ("eth_src", "u1", 6), ("eth_type", ">u2"),
                ("ver_ihl", "u1"), ("tos", "u1"), ("tot_len", ">u2"), ("ip_id", ">u2"), ("frag", ">u2"),
                ("ttl", "u1"), ("proto", "u1"), ("csum", ">u2"), ("src", ">u4"), ("dst", ">u4"),
                ("sport", ">u2"), ("dport", ">u2"), ("udp_len", ">u2"), ("udp_csum", ">u2")])
assert REC.itemsize == 16 + 42

SRC_BASE = 0x0A000000   # 10.0.0.0: flow i comes from 10.0.0.0 + i
DST = 0xC0A80001        # 192.168.0.1
DPORT = 9999


def packets(n: int, first: int = 0, gap_us: int = 100) -> np.ndarray:
    """Records of flows first .. first+n-1: flow i is one UDP packet 10.0.0.0+i:(1024 + i % 60000) ->
    192.168.0.1:9999 at time i * gap_us microseconds, 28 IP octets."""
    i = np.arange(first, first + n, dtype=np.uint64)
    r = np.zeros(n, REC)
    t = i * gap_us
    r["ts_sec"], r["ts_usec"] = t // 1_000_000, t % 1_000_000
    r["incl"] = r["orig"] = 42
    r["eth_dst"] = [2, 0, 0, 0, 0, 2]
    r["eth_src"] = [2, 0, 0, 0, 0, 1]
    r["eth_type"] = 0x0800
    r["ver_ihl"], r["tot_len"], r["ttl"], r["proto"] = 0x45, 28, 64, 17
    r["ip_id"] = (i & 0xFFFF).astype(np.uint16)
    r["src"], r["dst"] = (SRC_BASE + i).astype(np.uint32), DST
    r["sport"], r["dport"], r["udp_len"] = (1024 + i % 60000).astype(np.uint16), DPORT, 8
    # IPv4 header checksum (RFC 791): one's complement of the one's-complement sum of the 16-bit words
    words = (0x4500 + 28 + r["ip_id"].astype(np.uint64) + (64 << 8 | 17)
             + (r["src"].astype(np.uint64) >> 16) + (r["src"].astype(np.uint64) & 0xFFFF)
             + (DST >> 16) + (DST & 0xFFFF))
    while (words >> 16).any():
        words = (words & 0xFFFF) + (words >> 16)
    r["csum"] = (~words & 0xFFFF).astype(np.uint16)
    return r


def write_pcap(path: Path, n: int, gap_us: int = 100) -> Path:
    with open(path, "wb") as f:
        f.write(PCAP_HEADER)
        f.write(packets(n, 0, gap_us).tobytes())
    return path


def pcap_bytes(n: int, first: int = 0, gap_us: int = 100, header: bool = True) -> bytes:
    return (PCAP_HEADER if header else b"") + packets(n, first, gap_us).tobytes()
