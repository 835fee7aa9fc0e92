"""RoCEv2 test traffic with known ground truth, built with scapy (scapy.contrib.roce computes the ICRC).

Each scenario function returns a Capture (frames with exact nanosecond timestamps) and the values the RoCE
meter must report, derived while the packets are built: the test knows which PSN it dropped, which request
carried AckReq and when the ACK that covers it was sent. Nothing here runs flowtap code.

Used by tests/test_roce_meter.py (meter values) and tests/test_roce_tshark.py (per-packet fields).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from scapy.contrib.roce import BTH, CNPPadding
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

T0 = 1_700_000_000_000_000_000   # ns
PSN_MOD = 1 << 24
ROCE_PORT = 4791
TOS_ECT0 = (26 << 2) | 0b10
TOS_CE = (26 << 2) | 0b11
TOS_CNP = 48 << 2                # CNPs travel not ECN-capable, in their own class

# BTH opcodes, IBA 1.4 vol 1 table 38
SEND_FIRST, SEND_MIDDLE, SEND_LAST, SEND_ONLY, SEND_ONLY_IMM = 0x00, 0x01, 0x02, 0x04, 0x05
WRITE_FIRST, WRITE_MIDDLE, WRITE_LAST, WRITE_ONLY = 0x06, 0x07, 0x08, 0x0A
READ_REQ = 0x0C
RESP_FIRST, RESP_MIDDLE, RESP_LAST, RESP_ONLY = 0x0D, 0x0E, 0x0F, 0x10
ACK = 0x11
UD_SEND_ONLY = 0x64
CNP = 0x81
# AETH syndromes (IBA 9.3.5 table 43)
SYN_ACK = 0x1F                   # ACK, credits not valid
SYN_RNR = 0x20 | 0x0E            # RNR NAK, timer code 14
SYN_NAK_SEQ, SYN_NAK_INV, SYN_NAK_ACCESS, SYN_NAK_OP = 0x60, 0x61, 0x62, 0x63


def reth(length, va=0x7F0000001000, rkey=0x1234):
    return struct.pack(">QII", va, rkey, length)


def aeth(syndrome, msn=0):
    return struct.pack(">I", (syndrome << 24) | (msn & 0xFFFFFF))


def deth(qkey, src_qp):
    return struct.pack(">II", qkey, src_qp & 0xFFFFFF)


def payload(n, seed=0):
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


class Capture:
    """Frames with nanosecond timestamps, written as a nanosecond pcap (Ethernet) in time order."""

    def __init__(self):
        self.frames: list[tuple[int, bytes]] = []

    def add(self, ts_ns: int, pkt) -> None:
        self.frames.append((ts_ns, bytes(pkt)))

    def extend(self, other: "Capture") -> None:
        self.frames += other.frames

    def write(self, path) -> None:
        frames = sorted(self.frames, key=lambda f: f[0])   # stable: equal times keep their order
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1))
            for ts, b in frames:
                f.write(struct.pack("<IIII", ts // 10**9, ts % 10**9, len(b), len(b)))
                f.write(b)


@dataclass
class Host:
    ip: str
    mac: str
    vlan: int | None = None

    @property
    def v6(self) -> bool:
        return ":" in self.ip


@dataclass
class Endpoint:
    """One side of a connection: its host, its QP, the UDP source port its NIC uses for this QP."""
    host: Host
    qpn: int
    sport: int


@dataclass
class Conn:
    """An RC (or UC) connection between endpoints a (the requester) and b; frames go into cap."""
    cap: Capture
    a: Endpoint
    b: Endpoint
    sent: dict = field(default_factory=lambda: {"a": 0, "b": 0})

    def frame(self, frm: str, opcode, psn, ext=b"", data=b"", ackreq=0, tos=TOS_ECT0, fecn=0, becn=0,
              pad=0, dqpn=None):
        src, dst = (self.a, self.b) if frm == "a" else (self.b, self.a)
        return roce_frame(src.host, dst.host, src.sport, opcode, dst.qpn if dqpn is None else dqpn, psn,
                          ext + data + bytes(pad), ackreq=ackreq, tos=tos, fecn=fecn, becn=becn, pad=pad)

    def send(self, ts, frm, opcode, psn, **kw):
        self.cap.add(T0 + ts, self.frame(frm, opcode, psn, **kw))
        self.sent[frm] += 1


def roce_frame(src: Host, dst: Host, sport, opcode, dqpn, psn, tail=b"", ackreq=0, tos=TOS_ECT0, fecn=0,
               becn=0, pad=0):
    """Ethernet (+802.1Q) / IPv4|IPv6 / UDP 4791 / BTH / tail, ICRC computed by scapy."""
    bth = BTH(opcode=opcode, dqpn=dqpn, psn=psn % PSN_MOD, ackreq=ackreq, fecn=fecn, becn=becn, padcount=pad)
    if opcode == CNP:
        bth = bth / CNPPadding()
    elif tail:
        bth = bth / Raw(tail)
    if src.v6:
        l3 = IPv6(src=src.ip, dst=dst.ip, tc=tos, hlim=64) / UDP(sport=sport, dport=ROCE_PORT)
    else:
        l3 = IP(src=src.ip, dst=dst.ip, tos=tos, ttl=64, flags="DF") / UDP(sport=sport, dport=ROCE_PORT, chksum=0)
    eth = Ether(src=src.mac, dst=dst.mac)
    if src.vlan is not None:
        eth = eth / Dot1Q(vlan=src.vlan, prio=3)
    return eth / l3 / bth


def _host(ip, n, vlan=None):
    return Host(ip, f"02:00:00:00:{n >> 8:02x}:{n & 0xFF:02x}", vlan)


# ---- histogram arithmetic (docs/roce.md, ext/ft_hist.h), written from the definition -------------------------

def bucket(x: int) -> int:
    """Global bucket k with 2^(k/8) <= x < 2^((k+1)/8): k = floor(log2(x^8)), exact in integers."""
    return 0 if x <= 1 else (x ** 8).bit_length() - 1


def bucket_value(k: int) -> float:
    g = 2 ** (1 / 8)
    return 2 ** (k / 8) * 2 * g / (1 + g)


def quantile(samples, q_num, q_den):
    """Nearest-rank quantile as the sketch reports it: the representative value of the bucket of the sample
    of rank ceil(q * n), clamped to [min, max]."""
    s = sorted(samples)
    rank = max(1, -(-len(s) * q_num // q_den))
    v = bucket_value(bucket(s[rank - 1]))
    if v <= s[0]:
        return s[0]
    if v >= s[-1]:
        return s[-1]
    return int(v + 0.5)


def latency_expect(prefix: str, samples) -> dict:
    """Expected columns of one latency (roce_src_ack_latency, ...) for the given samples (ns)."""
    if not samples:
        return {f"{prefix}_samples": 0, f"{prefix}_min_ns": None, f"{prefix}_mean_ns": None,
                f"{prefix}_max_ns": None, f"{prefix}_p50_ns": None, f"{prefix}_p99_ns": None,
                f"{prefix}_hist": None}
    ks = [bucket(x) for x in samples]
    lo, hi = min(ks), max(ks)
    return {
        f"{prefix}_samples": len(samples), f"{prefix}_min_ns": min(samples),
        f"{prefix}_mean_ns": sum(samples) // len(samples), f"{prefix}_max_ns": max(samples),
        f"{prefix}_p50_ns": quantile(samples, 1, 2), f"{prefix}_p99_ns": quantile(samples, 99, 100),
        f"{prefix}_hist": {"first_bucket": lo, "counts": [ks.count(k) for k in range(lo, hi + 1)],
                           "collapsed": False},
    }


# ---- scenarios --------------------------------------------------------------------------------------------
# Each returns (Capture, [expected rows]); an expected row is a dict of column -> value, with "src_ip" and
# "dst_ip" identifying the record.

def write_v4():
    """RC RDMA WRITEs over IPv4, path MTU 1024: a 3-packet message, an ONLY, a 4-packet message with AckReq
    in the middle and at the end; coalesced ACKs with known delays."""
    cap = Capture()
    c = Conn(cap, Endpoint(_host("10.1.0.1", 1), 0x000A01, 0xC001), Endpoint(_host("10.1.0.2", 2), 0x000B02, 0xC002))
    c.send(0, "a", WRITE_FIRST, 1000, ext=reth(2548), data=payload(1024))
    c.send(100, "a", WRITE_MIDDLE, 1001, data=payload(1024, 1))
    c.send(200, "a", WRITE_LAST, 1002, data=payload(500, 2), ackreq=1)
    c.send(3200, "b", ACK, 1002, ext=aeth(SYN_ACK, 1))                       # 3000 after 1002
    c.send(5000, "a", WRITE_ONLY, 1003, ext=reth(200), data=payload(200, 3), ackreq=1)
    c.send(5100, "a", WRITE_FIRST, 1004, ext=reth(4096), data=payload(1024, 4))
    c.send(5200, "a", WRITE_MIDDLE, 1005, data=payload(1024, 5), ackreq=1)
    c.send(5300, "a", WRITE_MIDDLE, 1006, data=payload(1024, 6))
    c.send(5400, "a", WRITE_LAST, 1007, data=payload(1024, 7), ackreq=1)
    c.send(9200, "b", ACK, 1005, ext=aeth(SYN_ACK, 2))                       # covers 1003 and 1005
    c.send(9300, "b", ACK, 1007, ext=aeth(SYN_ACK, 3))
    exp = {
        "src_ip": "10.1.0.1", "dst_ip": "10.1.0.2", "src_port": 0xC001, "dst_port": ROCE_PORT, "ip_version": 4,
        "src_packets": 8, "dst_packets": 3, "roce_transport": "RC", "roce_pairing": "psn",
        "roce_src_qpn": 0xA01, "roce_dst_qpn": 0xB02, "roce_path_mtu": 1024,
        "roce_src_write_messages": 3, "roce_src_message_bytes": 2548 + 200 + 4096,
        "roce_src_payload_bytes": 1024 * 2 + 500 + 200 + 1024 * 4, "roce_src_mean_message_bytes": 6844 / 3,
        "roce_dst_acks": 3, "roce_dst_payload_bytes": 0, "roce_src_ecn_ect_packets": 8,
        "roce_dst_ecn_ect_packets": 3, "roce_src_psn_gaps": 0, "roce_src_psn_duplicates": 0,
        "roce_dst_psn_gaps": 0, "roce_dst_mean_message_bytes": None,
        **latency_expect("roce_src_ack_latency", [3000, 9200 - 5000, 9200 - 5200, 9300 - 5400]),
        **latency_expect("roce_dst_ack_latency", []),
        **latency_expect("roce_src_read_latency", []),
    }
    return cap, [exp]


def send_v6_vlan():
    """RC SENDs over IPv6 on VLAN 42 (both directions tagged), path MTU 512: FIRST/MIDDLE/LAST, ONLY, ONLY
    with immediate; one ACK covering all three AckReq'd packets."""
    cap = Capture()
    a, b = _host("fd00:42::1", 3, vlan=42), _host("fd00:42::2", 4, vlan=42)
    c = Conn(cap, Endpoint(a, 0x10, 0xD010), Endpoint(b, 0x20, 0xD020))
    c.send(0, "a", SEND_FIRST, 0, data=payload(512))
    c.send(50, "a", SEND_MIDDLE, 1, data=payload(512, 1))
    c.send(100, "a", SEND_LAST, 2, data=payload(100, 2), ackreq=1)
    c.send(150, "a", SEND_ONLY, 3, data=payload(64, 3), ackreq=1)
    c.send(200, "a", SEND_ONLY_IMM, 4, ext=struct.pack(">I", 0xBEEF), data=payload(32, 4), ackreq=1)
    c.send(2200, "b", ACK, 4, ext=aeth(SYN_ACK, 3))
    exp = {
        "src_ip": "fd00:42::1", "dst_ip": "fd00:42::2", "ip_version": 6, "vlan_id": 42,
        "src_packets": 5, "dst_packets": 1, "roce_pairing": "psn", "roce_transport": "RC",
        "roce_src_qpn": 0x10, "roce_dst_qpn": 0x20, "roce_path_mtu": 512,
        "roce_src_send_messages": 3, "roce_src_write_messages": 0,
        "roce_src_message_bytes": 512 + 512 + 100 + 64 + 32, "roce_src_payload_bytes": 1220,
        "roce_src_mean_message_bytes": 1220 / 3, "roce_dst_acks": 1,
        **latency_expect("roce_src_ack_latency", [2200 - 100, 2200 - 150, 2200 - 200]),
    }
    return cap, [exp]


def read_pipelined():
    """READ before the path MTU is known (10000 bytes: 5 PSNs at MTU 2048, only 2048 fits the next PSN),
    pipelined READs, a WRITE between READs, responses FIRST/MIDDLE/LAST and ONLY with AETH."""
    cap = Capture()
    c = Conn(cap, Endpoint(_host("10.3.0.1", 5), 0x31, 0xC031), Endpoint(_host("10.3.0.2", 6), 0x32, 0xC032))
    c.send(0, "a", READ_REQ, 5000, ext=reth(10000), ackreq=1)
    c.send(100, "a", READ_REQ, 5005, ext=reth(100), ackreq=1)
    c.send(200, "a", WRITE_ONLY, 5006, ext=reth(2048), data=payload(2048), ackreq=1)
    for i, (op, n) in enumerate([(RESP_FIRST, 2048), (RESP_MIDDLE, 2048), (RESP_MIDDLE, 2048),
                                 (RESP_MIDDLE, 2048), (RESP_LAST, 1808)]):
        ext = aeth(SYN_ACK, 1) if op in (RESP_FIRST, RESP_LAST) else b""
        c.send(1000 + 100 * i, "b", op, 5000 + i, ext=ext, data=payload(n, i))
    c.send(1500, "b", RESP_ONLY, 5005, ext=aeth(SYN_ACK, 2), data=payload(100))
    c.send(1600, "b", ACK, 5006, ext=aeth(SYN_ACK, 3))
    c.send(2000, "a", READ_REQ, 5007, ext=reth(4096), ackreq=1)
    c.send(2100, "a", READ_REQ, 5009, ext=reth(2049), ackreq=1)
    c.send(3000, "b", RESP_FIRST, 5007, ext=aeth(SYN_ACK, 4), data=payload(2048))
    c.send(3100, "b", RESP_LAST, 5008, ext=aeth(SYN_ACK, 4), data=payload(2048))
    c.send(3200, "b", RESP_FIRST, 5009, ext=aeth(SYN_ACK, 5), data=payload(2048))
    c.send(3300, "b", RESP_LAST, 5010, ext=aeth(SYN_ACK, 5), data=payload(1))
    exp = {
        "src_ip": "10.3.0.1", "dst_ip": "10.3.0.2", "roce_pairing": "psn", "roce_path_mtu": 2048,
        "src_packets": 5, "dst_packets": 11,
        "roce_src_read_messages": 4, "roce_src_write_messages": 1,
        "roce_src_message_bytes": 10000 + 100 + 2048 + 4096 + 2049,
        "roce_dst_payload_bytes": 2048 * 4 + 1808 + 100 + 2048 * 3 + 1,
        "roce_src_psn_gaps": 0, "roce_src_psn_missing": 0, "roce_src_psn_duplicates": 0,
        "roce_src_psn_out_of_order": 0, "roce_dst_psn_gaps": 0, "roce_dst_psn_duplicates": 0,
        "roce_dst_acks": 1,
        **latency_expect("roce_src_read_latency", [1000, 1400, 1000, 1100]),
        **latency_expect("roce_src_ack_latency", [1400]),
    }
    return cap, [exp]


def read_heavy(n_reads=60, pmtu=4096, seed=11):
    """Many READs of varied sizes (1 byte .. 200 KiB) with up to 3 outstanding, WRITEs in between: a
    healthy READ-heavy connection, PSNs advanced by the IBTA rule ceil(length / path MTU)."""
    import random
    rng = random.Random(seed)
    cap = Capture()
    c = Conn(cap, Endpoint(_host("10.4.0.1", 7), 0x41, 0xC041), Endpoint(_host("10.4.0.2", 8), 0x42, 0xC042))
    t, psn = 0, rng.randrange(PSN_MOD)
    outstanding = []
    reads = writes = 0
    read_bytes = 0
    samples = []
    c.send(t, "a", WRITE_FIRST, psn, ext=reth(2 * pmtu), data=payload(pmtu))   # shows the MTU
    c.send(t + 50, "a", WRITE_LAST, psn + 1, data=payload(pmtu), ackreq=1)
    c.send(t + 900, "b", ACK, psn + 1, ext=aeth(SYN_ACK, 1))
    psn += 2
    writes += 1
    t += 1000

    def answer(t):
        rpsn, length, t_req = outstanding.pop(0)
        n = max(1, -(-length // pmtu))
        for i in range(n):
            size = min(pmtu, length - i * pmtu) if length else 0
            op = RESP_ONLY if n == 1 else RESP_FIRST if i == 0 else RESP_LAST if i == n - 1 else RESP_MIDDLE
            ext = aeth(SYN_ACK, 2) if op != RESP_MIDDLE else b""
            c.send(t + 10 * i, "b", op, rpsn + i, ext=ext, data=payload(size))
        samples.append(t - t_req)
        return t + 10 * n

    while reads < n_reads:
        length = rng.choice([1, 100, 4096, 4097, 8192, 65536, 200 * 1024, rng.randrange(1, 300000)])
        c.send(t, "a", READ_REQ, psn, ext=reth(length), ackreq=1)
        outstanding.append((psn, length, t))
        psn += max(1, -(-length // pmtu))
        reads += 1
        read_bytes += length
        t += 100
        if rng.random() < 0.3:
            c.send(t, "a", WRITE_ONLY, psn, ext=reth(64), data=payload(64), ackreq=0)
            psn += 1
            writes += 1
            t += 100
        if len(outstanding) == 3:
            t = answer(t + rng.randrange(500, 5000))
    while outstanding:
        t = answer(t + 1000)
    exp = {
        "src_ip": "10.4.0.1", "dst_ip": "10.4.0.2", "roce_pairing": "psn", "roce_path_mtu": pmtu,
        "roce_src_read_messages": reads, "roce_src_write_messages": writes,
        "roce_src_psn_gaps": 0, "roce_src_psn_missing": 0, "roce_src_psn_duplicates": 0,
        "roce_src_psn_out_of_order": 0, "roce_dst_psn_gaps": 0, "roce_dst_psn_missing": 0,
        "roce_dst_psn_duplicates": 0, "roce_dst_payload_bytes": read_bytes,
        "roce_src_read_latency_samples": len(samples), "roce_src_read_latency_min_ns": min(samples),
        "roce_src_read_latency_max_ns": max(samples),
        "roce_src_read_latency_mean_ns": sum(samples) // len(samples),
    }
    return cap, [exp]


def psn_wrap():
    """A connection whose PSNs cross 2^24: WRITE 0xFFFFFA..0xFFFFFC, a READ taking 0xFFFFFD..0x000000,
    a WRITE at 0x000001; nothing lost."""
    cap = Capture()
    c = Conn(cap, Endpoint(_host("10.6.0.1", 9), 0x61, 0xC061), Endpoint(_host("10.6.0.2", 10), 0x62, 0xC062))
    c.send(0, "a", WRITE_FIRST, 0xFFFFFA, ext=reth(3072), data=payload(1024))
    c.send(100, "a", WRITE_MIDDLE, 0xFFFFFB, data=payload(1024))
    c.send(200, "a", WRITE_LAST, 0xFFFFFC, data=payload(1024), ackreq=1)
    c.send(300, "a", READ_REQ, 0xFFFFFD, ext=reth(4096), ackreq=1)
    c.send(1200, "b", ACK, 0xFFFFFC, ext=aeth(SYN_ACK, 1))
    for i, op in enumerate([RESP_FIRST, RESP_MIDDLE, RESP_MIDDLE, RESP_LAST]):
        c.send(1500 + 100 * i, "b", op, 0xFFFFFD + i, ext=aeth(SYN_ACK, 2) if op != RESP_MIDDLE else b"",
               data=payload(1024))
    c.send(2000, "a", WRITE_ONLY, 0x000001, ext=reth(8), data=payload(8), ackreq=1)
    c.send(2700, "b", ACK, 0x000001, ext=aeth(SYN_ACK, 3))
    exp = {
        "src_ip": "10.6.0.1", "dst_ip": "10.6.0.2", "roce_pairing": "psn", "roce_path_mtu": 1024,
        "roce_src_psn_gaps": 0, "roce_src_psn_duplicates": 0, "roce_src_psn_out_of_order": 0,
        "roce_dst_psn_gaps": 0, "roce_dst_psn_duplicates": 0, "roce_src_write_messages": 2,
        "roce_src_read_messages": 1,
        **latency_expect("roce_src_ack_latency", [1000, 700]),
        **latency_expect("roce_src_read_latency", [1200]),
    }
    return cap, [exp]


def loss_nak_gobackn():
    """A 10-packet WRITE (PSN 100..109) whose PSN 103 is dropped before the probe; the responder NAKs PSN 103
    (sequence error) and the requester goes back to 103 (go-back-N) 2500 ns after the NAK."""
    cap = Capture()
    c = Conn(cap, Endpoint(_host("10.7.0.1", 11), 0x71, 0xC071), Endpoint(_host("10.7.0.2", 12), 0x72, 0xC072))
    for i in range(10):
        if i == 3:
            continue   # dropped upstream of the probe
        op = WRITE_FIRST if i == 0 else WRITE_LAST if i == 9 else WRITE_MIDDLE
        c.send(100 * i, "a", op, 100 + i, ext=reth(10240) if i == 0 else b"", data=payload(1024, i),
               ackreq=int(i == 9))
    c.send(1500, "b", ACK, 103, ext=aeth(SYN_NAK_SEQ, 0))
    for j, i in enumerate(range(3, 10)):
        op = WRITE_LAST if i == 9 else WRITE_MIDDLE
        c.send(4000 + 100 * j, "a", op, 100 + i, data=payload(1024, i), ackreq=int(i == 9))
    c.send(6000, "b", ACK, 109, ext=aeth(SYN_ACK, 1))
    exp = {
        "src_ip": "10.7.0.1", "dst_ip": "10.7.0.2", "roce_pairing": "psn", "src_packets": 16,
        "roce_src_psn_gaps": 1, "roce_src_psn_missing": 1, "roce_src_psn_duplicates": 7,
        "roce_src_psn_out_of_order": 0, "roce_dst_nak_psn_seq_err": 1, "roce_dst_acks": 1,
        "roce_src_write_messages": 1, "roce_src_payload_bytes": 16 * 1024,
        **latency_expect("roce_src_nak_recovery", [2500]),
        # the only AckReq'd request (PSN 109) was resent before an ACK covered it: not timed (Karn)
        **latency_expect("roce_src_ack_latency", []),
    }
    return cap, [exp]


def reorder():
    """PSNs 200, 202, 201, 203 on the wire: one gap of one PSN, then the late one: out of order, not a
    retransmission (no NAK asked for it)."""
    cap = Capture()
    c = Conn(cap, Endpoint(_host("10.8.0.1", 13), 0x81, 0xC081), Endpoint(_host("10.8.0.2", 14), 0x82, 0xC082))
    c.send(0, "a", WRITE_FIRST, 200, ext=reth(4096), data=payload(1024))
    c.send(100, "a", WRITE_MIDDLE, 202, data=payload(1024))
    c.send(150, "a", WRITE_MIDDLE, 201, data=payload(1024))
    c.send(300, "a", WRITE_LAST, 203, data=payload(1024), ackreq=1)
    c.send(1300, "b", ACK, 203, ext=aeth(SYN_ACK, 1))
    exp = {
        "src_ip": "10.8.0.1", "dst_ip": "10.8.0.2", "roce_src_psn_gaps": 1, "roce_src_psn_missing": 1,
        "roce_src_psn_out_of_order": 1, "roce_src_psn_duplicates": 0,
        **latency_expect("roce_src_ack_latency", [1000]),
    }
    return cap, [exp]


def rnr_and_error_naks():
    """RNR NAK then the retry 5000 ns later; on another QP pair three fatal NAK kinds."""
    cap = Capture()
    c = Conn(cap, Endpoint(_host("10.9.0.1", 15), 0x91, 0xC091), Endpoint(_host("10.9.0.2", 16), 0x92, 0xC092))
    c.send(0, "a", SEND_ONLY, 300, data=payload(256), ackreq=1)
    c.send(2000, "b", ACK, 300, ext=aeth(SYN_RNR, 0))
    c.send(7000, "a", SEND_ONLY, 300, data=payload(256), ackreq=1)
    c.send(8000, "b", ACK, 300, ext=aeth(SYN_ACK, 1))
    e = Conn(cap, Endpoint(_host("10.9.1.1", 17), 0x93, 0xC093), Endpoint(_host("10.9.1.2", 18), 0x94, 0xC094))
    for k, syn in enumerate([SYN_NAK_INV, SYN_NAK_ACCESS, SYN_NAK_OP]):
        e.send(10000 * k, "a", WRITE_ONLY, 40 + k, ext=reth(16), data=payload(16), ackreq=1)
        e.send(10000 * k + 700 + 100 * k, "b", ACK, 40 + k, ext=aeth(syn, 0))
    exp_rnr = {
        "src_ip": "10.9.0.1", "dst_ip": "10.9.0.2", "roce_dst_nak_rnr": 1, "roce_dst_acks": 1,
        "roce_src_psn_duplicates": 1, "roce_src_send_messages": 1, "src_packets": 2, "dst_packets": 2,
        **latency_expect("roce_src_nak_recovery", [5000]),
        **latency_expect("roce_src_ack_latency", [2000]),   # the RNR NAK answers PSN 300
    }
    exp_err = {
        "src_ip": "10.9.1.1", "dst_ip": "10.9.1.2", "roce_dst_nak_invalid_request": 1,
        "roce_dst_nak_remote_access": 1, "roce_dst_nak_remote_operational": 1, "roce_dst_acks": 0,
        "roce_dst_nak_psn_seq_err": 0, "roce_dst_nak_rnr": 0,
        **latency_expect("roce_src_ack_latency", [700, 800, 900]),
        **latency_expect("roce_src_nak_recovery", []),
    }
    return cap, [exp_rnr, exp_err]


def congestion():
    """ECN CE on two WRITE packets, FECN on one, and the responder's CNP (BECN set) to the requester's QP,
    sent before the responder's first ACK (so the CNP starts the flow of that direction)."""
    cap = Capture()
    c = Conn(cap, Endpoint(_host("10.10.0.1", 19), 0xA1, 0xC0A1), Endpoint(_host("10.10.0.2", 20), 0xA2, 0xC0A2))
    for i in range(6):
        op = WRITE_FIRST if i == 0 else WRITE_LAST if i == 5 else WRITE_MIDDLE
        c.send(100 * i, "a", op, 400 + i, ext=reth(6144) if i == 0 else b"", data=payload(1024),
               ackreq=int(i == 5), tos=TOS_CE if i in (1, 2) else TOS_ECT0, fecn=int(i == 3))
    c.send(350, "b", CNP, 0, tos=TOS_CNP, becn=1)
    c.send(1500, "b", ACK, 405, ext=aeth(SYN_ACK, 1))
    exp = {
        "src_ip": "10.10.0.1", "dst_ip": "10.10.0.2", "roce_pairing": "psn", "src_packets": 6, "dst_packets": 2,
        "roce_src_ecn_ce_packets": 2, "roce_src_ecn_ect_packets": 4, "roce_src_fecn_packets": 1,
        "roce_src_becn_packets": 0, "roce_dst_cnp_packets": 1, "roce_dst_becn_packets": 1,
        "roce_dst_ecn_ect_packets": 1, "roce_dst_ecn_ce_packets": 0, "roce_src_cnp_packets": 0,
        "roce_src_qpn": 0xA1, "roce_dst_qpn": 0xA2,
    }
    return cap, [exp]


def cnp_first():
    """A capture that begins with a CNP from A to B's QP, then A's WRITE to that QP: one flow, src = A (the
    requester), though the CNP alone made B look like the requester."""
    cap = Capture()
    c = Conn(cap, Endpoint(_host("10.11.0.1", 21), 0xB1, 0xC0B1), Endpoint(_host("10.11.0.2", 22), 0xB2, 0xC0B2))
    c.send(0, "a", CNP, 0, tos=TOS_CNP, becn=1)
    c.send(500, "a", WRITE_ONLY, 77, ext=reth(64), data=payload(64))
    exp = {
        "src_ip": "10.11.0.1", "dst_ip": "10.11.0.2", "src_packets": 2, "dst_packets": 0,
        "roce_pairing": "none", "roce_src_qpn": None, "roce_dst_qpn": 0xB2, "roce_src_cnp_packets": 1,
        "roce_src_write_messages": 1, "roce_transport": "RC",
    }
    return cap, [exp]


# RDMA CM over RoCEv2 (IBA 1.4 vol 1 ch. 12, annex A17): MADs in UD SEND Only packets to QP1.
CM_QKEY = 0x80010000


def cm_mad(attr_id: int, data: bytes, tid=0x1122334455667788) -> bytes:
    """A CM MAD: common header (base version 1, class 0x07, class version 2, method 0x03 Send) + 232 bytes
    of attribute data."""
    hdr = struct.pack(">BBBBHHQHHI", 1, 0x07, 2, 0x03, 0, 0, tid, attr_id, 0, 0)
    return hdr + data.ljust(232, b"\0")


def cm_req(comm_id, qpn, start_psn, transport=0, pmtu_code=3):
    """CM REQ attribute data (offsets from the start of the data, IBA 12.6.5): local comm id 0, service id 8,
    local CA GUID 16, local Q_Key 28, local QPN 32 (3 bytes) + responder resources, local EECN 36 +
    initiator depth, remote EECN 40 + timeout(5)|transport(2)|e2e flow control(1), starting PSN 44 +
    timeout(5)|retry count(3), P_Key 48, path MTU(4)|RDC(1)|RNR retry(3) 50, max CM retries etc. 51."""
    d = bytearray(232)
    struct.pack_into(">I", d, 0, comm_id)
    struct.pack_into(">Q", d, 8, 0x0000000001064000)   # RDMA CM service id (port space TCP, port 16384)
    struct.pack_into(">Q", d, 16, 0x0002C90300A1B2C3)
    struct.pack_into(">I", d, 28, 0)
    d[32:35] = qpn.to_bytes(3, "big")
    d[35] = 16
    d[39] = 16
    d[43] = (20 << 3) | ((transport & 3) << 1) | 1
    d[44:47] = start_psn.to_bytes(3, "big")
    d[47] = (20 << 3) | 7
    struct.pack_into(">H", d, 48, 0xFFFF)
    d[50] = (pmtu_code << 4) | 7
    d[51] = 15 << 4
    return cm_mad(0x0010, bytes(d))


def cm_rep(comm_id, remote_comm_id, qpn, start_psn):
    """CM REP attribute data (IBA 12.6.8): local comm id 0, remote comm id 4, local Q_Key 8, local QPN 12,
    local EEC 16, starting PSN 20, responder resources 24, initiator depth 25, ... local CA GUID 28."""
    d = bytearray(232)
    struct.pack_into(">II", d, 0, comm_id, remote_comm_id)
    d[12:15] = qpn.to_bytes(3, "big")
    d[20:23] = start_psn.to_bytes(3, "big")
    d[24] = 16
    d[25] = 16
    struct.pack_into(">Q", d, 28, 0x0002C90300D4E5F6)
    return cm_mad(0x0013, bytes(d))


def cm_rtu(comm_id, remote_comm_id):
    d = bytearray(232)
    struct.pack_into(">II", d, 0, comm_id, remote_comm_id)
    return cm_mad(0x0014, bytes(d))


def ud_frame(src: Host, dst: Host, sport, dqpn, src_qp, psn, data, qkey=CM_QKEY, opcode=UD_SEND_ONLY):
    return roce_frame(src.host if isinstance(src, Endpoint) else src, dst, sport, opcode, dqpn, psn,
                      deth(qkey, src_qp) + data)


CM_CASE = {"active": "10.12.0.1", "passive": "10.12.0.2", "active_qpn": 0x0301, "passive_qpn": 0x0402,
           "req_comm_id": 0x11111111, "rep_comm_id": 0x22222222, "active_psn": 0x100, "passive_psn": 0x900}


def cm_connection():
    """RDMA CM REQ (active 10.12.0.1, QP 0x301) / REP (passive 10.12.0.2, QP 0x402) / RTU to QP1, then the
    passive side WRITEs first and the active side after: one flow, pairing proven by CM, src = the active
    side, although the passive side sent the first data packet."""
    k = CM_CASE
    cap = Capture()
    a, b = _host(k["active"], 23), _host(k["passive"], 24)
    cap.add(T0, ud_frame(a, b, 0xC100, 1, 1, 0, cm_req(k["req_comm_id"], k["active_qpn"], k["active_psn"])))
    cap.add(T0 + 50_000, ud_frame(b, a, 0xC200, 1, 1, 0, cm_rep(k["rep_comm_id"], k["req_comm_id"],
                                                                 k["passive_qpn"], k["passive_psn"])))
    cap.add(T0 + 60_000, ud_frame(a, b, 0xC100, 1, 1, 1, cm_rtu(k["req_comm_id"], k["rep_comm_id"])))
    c = Conn(cap, Endpoint(a, k["active_qpn"], 0xC301), Endpoint(b, k["passive_qpn"], 0xC402))
    c.send(70_000, "b", WRITE_ONLY, k["passive_psn"], ext=reth(128), data=payload(128), ackreq=1)
    c.send(71_000, "a", ACK, k["passive_psn"], ext=aeth(SYN_ACK, 1))
    c.send(72_000, "a", WRITE_ONLY, k["active_psn"], ext=reth(256), data=payload(256), ackreq=1)
    c.send(73_500, "b", ACK, k["active_psn"], ext=aeth(SYN_ACK, 1))
    exp = {
        "src_ip": k["active"], "dst_ip": k["passive"], "protocol": 17, "roce_pairing": "cm",
        "roce_transport": "RC", "roce_src_qpn": k["active_qpn"], "roce_dst_qpn": k["passive_qpn"],
        "src_packets": 2, "dst_packets": 2, "src_port": 0xC301,
        "roce_src_write_messages": 1, "roce_dst_write_messages": 1, "roce_src_acks": 1, "roce_dst_acks": 1,
        **latency_expect("roce_src_ack_latency", [1500]),
        **latency_expect("roce_dst_ack_latency", [1000]),
    }
    # the MADs are UD traffic to QP1 of each side: one flow per addressed QP1
    exp_req = {"src_ip": k["active"], "dst_ip": k["passive"], "roce_transport": "UD", "roce_pairing": "none",
               "roce_dst_qpn": 1, "roce_src_qpn": None, "src_packets": 2, "roce_src_send_messages": 2,
               "roce_src_psn_gaps": 0}
    exp_rep = {"src_ip": k["passive"], "dst_ip": k["active"], "roce_transport": "UD", "roce_pairing": "none",
               "roce_dst_qpn": 1, "src_packets": 1, "roce_src_send_messages": 1}
    return cap, [exp, exp_req, exp_rep]


def ud_many_to_one():
    """UD: two hosts send to QP 0x500 of a third, with PSN jumps (each sender's own sequence): a flow per
    sender, attributed to the addressed QP, no PSN accounting."""
    cap = Capture()
    srv = _host("10.13.0.9", 25)
    for n, ip in enumerate(["10.13.0.1", "10.13.0.2"]):
        h = _host(ip, 26 + n)
        for j, psn in enumerate([10, 11, 50]):
            cap.add(T0 + 1000 * j + n, ud_frame(h, srv, 0xC500 + n, 0x500, 0x600 + n, psn, payload(100 + n)))
    rows = [{"src_ip": ip, "dst_ip": "10.13.0.9", "roce_transport": "UD", "roce_pairing": "none",
             "roce_dst_qpn": 0x500, "roce_src_qpn": None, "src_packets": 3, "roce_src_send_messages": 3,
             "roce_src_payload_bytes": 3 * (100 + n), "roce_src_psn_gaps": 0, "roce_src_psn_missing": 0}
            for n, ip in enumerate(["10.13.0.1", "10.13.0.2"])]
    return cap, rows


def loopback_one_address():
    """SoftRoCE on one address: both QPs at 10.14.0.1; the directions are told apart by the QP addressed."""
    cap = Capture()
    h = _host("10.14.0.1", 28)
    c = Conn(cap, Endpoint(h, 0x11, 0xC011), Endpoint(h, 0x12, 0xC012))
    c.send(0, "a", WRITE_ONLY, 10, ext=reth(64), data=payload(64), ackreq=1)
    c.send(800, "b", ACK, 10, ext=aeth(SYN_ACK, 1))
    c.send(1000, "a", WRITE_ONLY, 11, ext=reth(32), data=payload(32), ackreq=1)
    c.send(1600, "b", ACK, 11, ext=aeth(SYN_ACK, 2))
    exp = {"src_ip": "10.14.0.1", "dst_ip": "10.14.0.1", "roce_pairing": "psn", "src_packets": 2,
           "dst_packets": 2, "roce_src_qpn": 0x11, "roce_dst_qpn": 0x12, "roce_src_write_messages": 2,
           "roce_dst_acks": 2, "roce_dst_write_messages": 0, "src_port": 0xC011,
           **latency_expect("roce_src_ack_latency", [800, 600])}
    return cap, [exp]


def one_direction():
    """Only the requests were captured (the other direction took another path): one unpaired flow."""
    cap = Capture()
    c = Conn(cap, Endpoint(_host("10.15.0.1", 29), 0xE1, 0xC0E1), Endpoint(_host("10.15.0.2", 30), 0xE2, 0xC0E2))
    for i in range(3):
        c.send(100 * i, "a", WRITE_ONLY, 900 + i, ext=reth(64), data=payload(64), ackreq=1)
    exp = {"src_ip": "10.15.0.1", "dst_ip": "10.15.0.2", "roce_pairing": "none", "roce_src_qpn": None,
           "roce_dst_qpn": 0xE2, "src_packets": 3, "dst_packets": 0, "roce_src_write_messages": 3,
           **latency_expect("roce_src_ack_latency", [])}
    return cap, [exp]


def tcp_beside():
    """A TCP flow in the same capture: every RoCE measurement is null, every RoCE counter 0."""
    cap = Capture()
    a, b = _host("10.16.0.1", 31), _host("10.16.0.2", 32)
    cap.add(T0, Ether(src=a.mac, dst=b.mac) / IP(src=a.ip, dst=b.ip) / TCP(sport=40000, dport=80, flags="S"))
    cap.add(T0 + 100, Ether(src=b.mac, dst=a.mac) / IP(src=b.ip, dst=a.ip) / TCP(sport=80, dport=40000, flags="SA"))
    exp = {"src_ip": "10.16.0.1", "dst_ip": "10.16.0.2", "protocol": 6, "roce_transport": None,
           "roce_pairing": None, "roce_src_qpn": None, "roce_dst_qpn": None, "roce_path_mtu": None,
           "roce_src_psn_gaps": 0, "roce_src_payload_bytes": 0, "roce_dst_acks": 0,
           "roce_src_mean_message_bytes": None, **latency_expect("roce_src_ack_latency", [])}
    return cap, [exp]


def atomics():
    """A WRITE with AckReq, then FetchAdd and CmpSwap (AtomicETH, 28 bytes) answered by ATOMIC ACKs (AETH +
    AtomicAckETH): the first ATOMIC ACK also acknowledges the WRITE before it."""
    cap = Capture()
    c = Conn(cap, Endpoint(_host("10.17.0.1", 33), 0xC1, 0xC0C1), Endpoint(_host("10.17.0.2", 34), 0xC2, 0xC0C2))
    atomic_eth = struct.pack(">QIQQ", 0x7F0000002000, 0x99, 1, 0)
    c.send(0, "a", WRITE_ONLY, 60, ext=reth(32), data=payload(32), ackreq=1)
    c.send(100, "a", 0x14, 61, ext=atomic_eth, ackreq=1)                      # FetchAdd
    c.send(1300, "b", 0x12, 61, ext=aeth(SYN_ACK, 2) + struct.pack(">Q", 41))   # ATOMIC ACK
    c.send(2000, "a", 0x13, 62, ext=atomic_eth, ackreq=1)                     # CmpSwap
    c.send(2900, "b", 0x12, 62, ext=aeth(SYN_ACK, 3) + struct.pack(">Q", 42))
    exp = {"src_ip": "10.17.0.1", "dst_ip": "10.17.0.2", "roce_pairing": "psn", "roce_transport": "RC",
           "roce_src_atomic_messages": 2, "roce_src_write_messages": 1, "roce_src_message_bytes": 32 + 8 + 8,
           "roce_src_mean_message_bytes": 48 / 3, "roce_dst_acks": 0, "roce_src_psn_gaps": 0,
           "roce_dst_payload_bytes": 0, **latency_expect("roce_src_ack_latency", [1300])}
    return cap, [exp]


def uc_writes():
    """Unreliable connected: RDMA WRITEs with no ACKs, PSN 52 lost before the probe: the gap is counted,
    the flow stays one direction."""
    cap = Capture()
    c = Conn(cap, Endpoint(_host("10.18.0.1", 35), 0xD1, 0xC0D1), Endpoint(_host("10.18.0.2", 36), 0xD2, 0xC0D2))
    c.send(0, "a", 0x20 | WRITE_FIRST, 50, ext=reth(3072), data=payload(1024))
    c.send(100, "a", 0x20 | WRITE_MIDDLE, 51, data=payload(1024))
    c.send(300, "a", 0x20 | WRITE_ONLY, 53, ext=reth(100), data=payload(100))
    c.send(400, "a", 0x20 | SEND_ONLY, 54, data=payload(10))
    exp = {"src_ip": "10.18.0.1", "dst_ip": "10.18.0.2", "roce_transport": "UC", "roce_pairing": "none",
           "roce_dst_qpn": 0xD2, "roce_src_qpn": None, "roce_src_write_messages": 2, "roce_src_send_messages": 1,
           "roce_src_psn_gaps": 1, "roce_src_psn_missing": 1, "roce_path_mtu": 1024,
           "roce_src_message_bytes": 3072 + 100 + 10}
    return cap, [exp]


SCENARIOS = {
    "write_v4": write_v4, "send_v6_vlan": send_v6_vlan, "read_pipelined": read_pipelined,
    "read_heavy": read_heavy, "psn_wrap": psn_wrap, "loss_nak_gobackn": loss_nak_gobackn, "reorder": reorder,
    "rnr_and_error_naks": rnr_and_error_naks, "congestion": congestion, "cnp_first": cnp_first,
    "cm_connection": cm_connection, "ud_many_to_one": ud_many_to_one, "loopback_one_address": loopback_one_address,
    "one_direction": one_direction, "tcp_beside": tcp_beside, "atomics": atomics, "uc_writes": uc_writes,
}
