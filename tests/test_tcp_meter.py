"""TCP meter on scapy-built conversations with known ground truth (ext/ft_tcp.h, docs/tcp.md).

Each conversation is written packet by packet with scapy, with its packet times; the expected counts and
RTT values follow from the script itself (which segment is sent again, when each ACK leaves). The packets
reach the engine as struct ft_pkt records filled from scapy's own fields (seq, ack, flags, window,
options), so these tests do not depend on flowtap's parser; when the parser is built, the same
conversations also go through a pcap file, the reader and the parser, and must give the same columns.
"""
from __future__ import annotations

import ipaddress
import math

import numpy as np
import pyarrow as pa
import pytest
from scapy.all import IP, TCP, UDP, Ether, Raw, wrpcap  # noqa: F401

from dpi import _flowtable
from dpi._reader import PKT_DTYPE
from dpi.engine import Engine, EngineConfig

MS = 1_000_000
US = 1_000
FT_F_L3, FT_F_L4 = 0x1, 0x2
OPT_BITS = {"MSS": 0x01, "WScale": 0x02, "SAckOK": 0x04, "SAck": 0x08, "Timestamp": 0x10}
CLI, SRV = ("10.1.0.1", 40000), ("10.1.0.2", 443)


def record(t_ns: int, pkt) -> np.ndarray:
    """One PKT_DTYPE record from scapy's view of the packet (not from flowtap's parser)."""
    pkt = pkt.__class__(bytes(pkt))   # let scapy build lengths, then read them back
    ip, tcp = pkt[IP], pkt.getlayer(TCP)
    r = np.zeros(1, PKT_DTYPE)
    r["ts_ns"] = t_ns
    r["ip_version"] = 4
    r["src_addr"] = np.void(ipaddress.ip_address(ip.src).packed.ljust(16, b"\0"))
    r["dst_addr"] = np.void(ipaddress.ip_address(ip.dst).packed.ljust(16, b"\0"))
    r["proto"] = ip.proto
    r["l3_len"] = ip.len
    r["flags"] = FT_F_L3 | FT_F_L4
    r["wire_len"] = r["cap_len"] = len(pkt)
    if tcp is None:
        r["sport"], r["dport"] = pkt[UDP].sport, pkt[UDP].dport
        return r
    r["sport"], r["dport"] = tcp.sport, tcp.dport
    r["tcp_seq"], r["tcp_ack"], r["tcp_flags"], r["tcp_win"] = tcp.seq, tcp.ack, int(tcp.flags), tcp.window
    r["payload_len"] = ip.len - ip.ihl * 4 - tcp.dataofs * 4
    present, sacks = 0, []
    for name, val in tcp.options:
        present |= OPT_BITS.get(name, 0)
        if name == "MSS":
            r["tcp_mss"] = val
        elif name == "WScale":
            r["tcp_wscale"] = val
        elif name == "Timestamp":
            r["tcp_tsval"], r["tcp_tsecr"] = val
        elif name == "SAck":
            sacks = list(val)
    r["tcp_opt_present"] = present
    r["tcp_sack_count"] = len(sacks) // 2
    edges = np.zeros(8, np.uint32)
    edges[:min(8, len(sacks))] = sacks[:8]
    r["tcp_sack"] = edges
    return r


class Conv:
    """A scripted TCP conversation: c() and s() add a segment from the client or the server at time t."""

    def __init__(self, cli=CLI, srv=SRV):
        self.cli, self.srv = cli, srv
        self.pkts: list[tuple[int, object]] = []

    def _seg(self, t, frm, to, seq, ack, flags, n, win, opts):
        p = (Ether() / IP(src=frm[0], dst=to[0]) /
             TCP(sport=frm[1], dport=to[1], seq=seq % 2**32, ack=ack % 2**32, flags=flags, window=win,
                 options=opts or []))
        if n:
            p = p / Raw(b"x" * n)
        self.pkts.append((t, p))

    def c(self, t, seq, ack=0, flags="A", n=0, win=65535, opts=None):
        self._seg(t, self.cli, self.srv, seq, ack, flags, n, win, opts)

    def s(self, t, seq, ack=0, flags="A", n=0, win=65535, opts=None):
        self._seg(t, self.srv, self.cli, seq, ack, flags, n, win, opts)

    def handshake(self, t0=0, isn_c=1000, isn_s=5000, server_ns=1500 * US, client_ns=300 * US, ws=None):
        o = [("WScale", ws)] if ws is not None else None
        self.c(t0, isn_c, 0, "S", opts=o)
        self.s(t0 + server_ns, isn_s, isn_c + 1, "SA", opts=o)
        self.c(t0 + server_ns + client_ns, isn_c + 1, isn_s + 1, "A")
        return t0 + server_ns + client_ns

    def records(self):
        order = sorted(range(len(self.pkts)), key=lambda i: self.pkts[i][0])
        return np.concatenate([record(*self.pkts[i]) for i in order], dtype=PKT_DTYPE)


def meter(conv: Conv, **cfg) -> pa.Table:
    eng = Engine(EngineConfig(observer_host="test", **cfg))
    batches = list(eng.add(conv.records())) + list(eng.flush())
    return pa.Table.from_batches(batches).sort_by([("flow_id", "ascending"), ("record_seq", "ascending")])


def one(conv: Conv, **cfg) -> dict:
    t = meter(conv, **cfg).drop_columns(["flow_start", "flow_end"])
    assert t.num_rows == 1
    return {k: v[0] for k, v in t.to_pydict().items()}


def zero_except(row: dict, side: str, **expected) -> None:
    """Every loss counter of `side` is 0 except those named."""
    names = ("retrans_packets", "retrans_bytes", "fast_retrans_packets", "timeout_retrans_packets",
             "spurious_retrans_packets", "syn_retrans_packets", "out_of_order_packets",
             "upstream_retrans_packets", "seq_gaps", "seq_gaps_unfilled", "dup_acks", "sack_blocks",
             "zero_window_events", "zero_window_probes", "window_full_packets", "rst_handshake",
             "rst_established", "keepalive_packets")
    got = {n: row[f"{side}_tcp_{n}"] for n in names}
    want = {n: expected.get(n, 0) for n in names}
    assert got == want


# ---- loss ------------------------------------------------------------------------------------------------

def test_tail_losses_resent_after_timeouts():
    """Two flights of 4 x 1000 bytes; the last segment of flight 1 and the last two of flight 2 are lost
    after the probe, so no duplicate ACKs come back and each is re-sent on a retransmission timeout."""
    cv, rtt = Conv(), 10 * MS
    t = cv.handshake()
    seq, ack = 1001, 5001
    sent = {}
    for i in range(4):                          # flight 1: segments 0..3, segment 3 lost
        sent[i] = t + i * 100 * US
        cv.c(sent[i], seq + 1000 * i, ack, "PA", 1000)
    for i in range(3):
        cv.s(sent[i] + rtt, ack, seq + 1000 * (i + 1))
    cv.c(sent[0] + 200 * MS, seq + 3000, ack, "PA", 1000)          # RTO: segment 3 again
    cv.s(sent[0] + 200 * MS + rtt, ack, seq + 4000)
    t2 = sent[0] + 300 * MS
    for i in range(4, 8):                       # flight 2: segments 4..7, 6 and 7 lost
        sent[i] = t2 + (i - 4) * 100 * US
        cv.c(sent[i], seq + 1000 * i, ack, "PA", 1000)
    for i in (4, 5):
        cv.s(sent[i] + rtt, ack, seq + 1000 * (i + 1))
    cv.c(t2 + 200 * MS, seq + 6000, ack, "PA", 1000)               # RTO: segment 6
    cv.s(t2 + 200 * MS + rtt, ack, seq + 7000)
    cv.c(t2 + 600 * MS, seq + 7000, ack, "PA", 1000)               # backed-off RTO: segment 7
    cv.s(t2 + 600 * MS + rtt, ack, seq + 8000)
    r = one(cv)
    zero_except(r, "src", retrans_packets=3, retrans_bytes=3000, timeout_retrans_packets=3)
    zero_except(r, "dst")
    # Karn: samples only from segments 0,1,2,4,5 (each ACKed exactly 10 ms later); the retransmissions and
    # segments outstanding across them give none
    assert r["src_tcp_rtt_samples"] == 5
    assert r["src_tcp_rtt_min_ns"] == r["src_tcp_rtt_max_ns"] == r["src_tcp_rtt_p99_ns"] == rtt
    assert r["dst_tcp_rtt_samples"] == 0 and r["dst_tcp_rtt_p50_ns"] is None


def test_fast_retransmit_after_three_duplicate_acks_with_sack():
    cv = Conv()
    t = cv.handshake(ws=0)
    seq, ack = 1001, 5001
    for i in range(5):                          # segment 1 is lost after the probe
        cv.c(t + i * 10 * US, seq + 1000 * i, ack, "PA", 1000)
    base = t + 5 * MS
    cv.s(base, ack, seq + 1000)                 # ACK of segment 0
    for k, i in enumerate((2, 3, 4)):           # segments 2..4 arrive: three duplicate ACKs with SACK
        cv.s(base + (k + 1) * 10 * US, ack, seq + 1000,
             opts=[("SAck", (seq + 2000, seq + 1000 * (i + 1)))])
    cv.c(base + 100 * US, seq + 1000, ack, "PA", 1000)          # fast retransmission
    cv.s(base + 5 * MS, ack, seq + 5000)
    r = one(cv)
    zero_except(r, "src", retrans_packets=1, retrans_bytes=1000, fast_retrans_packets=1)
    zero_except(r, "dst", dup_acks=3, sack_blocks=3)


def test_reordering_without_loss_is_out_of_order_only():
    cv = Conv()
    t = cv.handshake()        # handshake RTT 1.8 ms is the reordering window
    seq, ack = 1001, 5001
    cv.c(t + 1 * MS, seq, ack, "PA", 500)
    cv.c(t + 1 * MS + 10 * US, seq + 1000, ack, "PA", 500)      # arrives before the segment below
    cv.c(t + 1 * MS + 60 * US, seq + 500, ack, "PA", 500)       # 50 us later: reordering
    cv.s(t + 3 * MS, ack, seq + 500)
    cv.s(t + 3 * MS + 5 * US, ack, seq + 500)                   # one duplicate ACK for the hole
    cv.s(t + 3 * MS + 60 * US, ack, seq + 1500)
    r = one(cv)
    zero_except(r, "src", out_of_order_packets=1, seq_gaps=1)
    zero_except(r, "dst", dup_acks=1)


def test_hole_filled_late_is_an_upstream_retransmission_and_unfilled_gap_counts():
    cv = Conv()
    t = cv.handshake()
    seq, ack = 1001, 5001
    cv.c(t + 1 * MS, seq, ack, "PA", 500)
    cv.c(t + 1 * MS + 10 * US, seq + 1000, ack, "PA", 500)      # [seq+500, seq+1000) lost before the probe
    cv.c(t + 250 * MS, seq + 500, ack, "PA", 500)               # sent again 250 ms later
    cv.c(t + 260 * MS, seq + 2000, ack, "PA", 500)              # [seq+1500, seq+2000) never captured ...
    cv.s(t + 270 * MS, ack, seq + 2500)                         # ... but the receiver has it
    r = one(cv)
    zero_except(r, "src", upstream_retrans_packets=1, seq_gaps=2, seq_gaps_unfilled=1)


def test_spurious_retransmission_of_acknowledged_data():
    cv = Conv()
    t = cv.handshake()
    seq, ack = 1001, 5001
    cv.c(t + 1 * MS, seq, ack, "PA", 700)
    cv.s(t + 11 * MS, ack, seq + 700)           # the ACK passes the probe, then is lost on its way
    cv.c(t + 201 * MS, seq, ack, "PA", 700)     # RTO: every byte was already acknowledged
    cv.s(t + 211 * MS, ack, seq + 700)
    r = one(cv)
    zero_except(r, "src", retrans_packets=1, retrans_bytes=700, spurious_retrans_packets=1)
    assert r["src_tcp_rtt_samples"] == 1 and r["src_tcp_rtt_p50_ns"] == 10 * MS


def test_zero_window_probes_and_window_full():
    cv = Conv()
    t = cv.handshake(ws=0)
    seq, ack = 1001, 5001
    cv.s(t + 1 * MS, ack, seq, win=3000)                        # server window: 3000 bytes
    cv.c(t + 2 * MS, seq, ack, "PA", 1000)
    cv.c(t + 2 * MS + 10 * US, seq + 1000, ack, "PA", 1000)
    cv.c(t + 2 * MS + 20 * US, seq + 2000, ack, "PA", 1000)     # reaches the right edge: window full
    cv.s(t + 5 * MS, ack, seq + 3000, win=0)                    # all taken, nothing read: zero window
    cv.c(t + 205 * MS, seq + 2999, ack)                         # Linux-style probe: edge minus one
    cv.s(t + 206 * MS, ack, seq + 3000, win=0)
    cv.c(t + 605 * MS, seq + 2999, ack)
    cv.s(t + 606 * MS, ack, seq + 3000, win=0)
    cv.s(t + 700 * MS, ack, seq + 3000, win=8000)               # window update
    cv.c(t + 701 * MS, seq + 3000, ack, "PA", 1000)
    cv.s(t + 702 * MS, ack, seq + 4000, win=8000)
    r = one(cv)
    zero_except(r, "src", zero_window_probes=2, window_full_packets=1)
    zero_except(r, "dst", zero_window_events=1)


def test_window_scaling_is_honoured_for_window_full():
    cv = Conv()
    t = cv.handshake(ws=7)                      # both SYNs carry wscale 7
    seq, ack = 1001, 5001
    cv.s(t + 1 * MS, ack, seq, win=16)          # 16 << 7 = 2048 bytes
    cv.c(t + 2 * MS, seq, ack, "PA", 1024)
    cv.c(t + 2 * MS + 10 * US, seq + 1024, ack, "PA", 1024)     # reaches 2048: full
    r = one(cv)
    assert r["src_tcp_window_full_packets"] == 1
    cv2 = Conv()                                # only the client offers scaling: off both ways (RFC 7323)
    cv2.c(0, 1000, 0, "S", opts=[("WScale", 7)])
    cv2.s(1 * MS, 5000, 1001, "SA")
    cv2.c(2 * MS, 1001, 5001, "A")
    cv2.s(3 * MS, ack, seq, win=16)
    cv2.c(4 * MS, seq, ack, "PA", 1024)         # would reach the edge if 16 were scaled; is far beyond it
    cv2.c(5 * MS, seq + 1024, ack, "PA", 1024)  # unscaled, each of these passes the 16-byte edge
    assert one(cv2)["src_tcp_window_full_packets"] == 2
    cv3 = Conv()
    cv3.c(0, 1000, 0, "S", opts=[("WScale", 7)])
    cv3.s(1 * MS, 5000, 1001, "SA")
    cv3.c(2 * MS, 1001, 5001, "A")
    cv3.s(3 * MS, ack, seq, win=2048)
    cv3.c(4 * MS, seq, ack, "PA", 1024)
    cv3.c(5 * MS, seq + 1024, ack, "PA", 1024)  # exactly the unscaled 2048: one
    assert one(cv3)["src_tcp_window_full_packets"] == 1


def test_sequence_wrap():
    cv = Conv()
    isn = 2**32 - 1501
    t = cv.handshake(isn_c=isn)
    seq, ack = isn + 1, 5001                    # 2^32 - 1500: the second segment crosses zero
    for i in range(3):
        cv.c(t + i * 10 * US, seq + 1000 * i, ack, "PA", 1000)
    cv.s(t + 4 * MS, ack, seq + 1000)
    cv.c(t + 204 * MS, seq + 1000, ack, "PA", 1000)            # the wrapping segment, again (RTO)
    cv.s(t + 208 * MS, ack, seq + 3000)
    r = one(cv)
    zero_except(r, "src", retrans_packets=1, retrans_bytes=1000, timeout_retrans_packets=1)
    assert r["src_tcp_rtt_samples"] == 1 and r["src_tcp_rtt_max_ns"] == 4 * MS - 0


def test_syn_retransmission_and_handshake_halves():
    cv = Conv()
    cv.c(0, 1000, 0, "S")
    cv.c(1000 * MS, 1000, 0, "S")               # SYN sent again after 1 s
    cv.s(1000 * MS + 2 * MS, 5000, 1001, "SA")
    cv.c(1000 * MS + 2 * MS + 250 * US, 1001, 5001, "A")
    r = one(cv)
    zero_except(r, "src", retrans_packets=1, syn_retrans_packets=1, timeout_retrans_packets=1)
    assert r["tcp_handshake_server_ns"] == 2 * MS            # from the most recent SYN
    assert r["tcp_handshake_client_ns"] == 250 * US
    assert r["tcp_handshake_rtt_ns"] == 2 * MS + 250 * US


def test_rst_by_side_and_phase():
    cv = Conv()
    cv.c(0, 1000, 0, "S")
    cv.s(300 * US, 0, 1001, "RA")               # refused
    r = one(cv)
    zero_except(r, "dst", rst_handshake=1)
    assert r["tcp_handshake_rtt_ns"] == 300 * US              # as tshark: first ACK without SYN
    assert r["tcp_handshake_server_ns"] is None and r["tcp_handshake_client_ns"] is None
    cv = Conv()
    t = cv.handshake()
    cv.c(t + 1 * MS, 1001, 5001, "RA")
    zero_except(one(cv), "src", rst_established=1)


def test_delayed_ack_rtt_and_application_response_time():
    cv = Conv()
    t = cv.handshake()
    seq, ack = 1001, 5001
    cv.c(t + 1 * MS, seq, ack, "PA", 100)                     # request
    cv.s(t + 41 * MS, ack, seq + 100)                         # delayed ACK, 40 ms
    cv.s(t + 46 * MS, ack, seq + 100, "PA", 2000)             # response 45 ms after the request
    cv.c(t + 47 * MS, seq + 100, ack + 2000)
    r = one(cv)
    assert (r["src_tcp_rtt_samples"], r["src_tcp_rtt_min_ns"], r["src_tcp_rtt_p50_ns"]) == (1, 40 * MS, 40 * MS)
    assert (r["dst_tcp_rtt_samples"], r["dst_tcp_rtt_p50_ns"]) == (1, 1 * MS)
    assert (r["tcp_art_samples"], r["tcp_art_min_ns"], r["tcp_art_p99_ns"]) == (1, 45 * MS, 45 * MS)
    assert r["tcp_handshake_rtt_ns"] == 1800 * US
    assert (r["tcp_handshake_server_ns"], r["tcp_handshake_client_ns"]) == (1500 * US, 300 * US)


def test_request_boundary_multi_segment_request_and_response():
    """A request in 3 segments and a response in 2: one response time, from the request's last segment to
    the response's first; a second exchange gives a second."""
    cv = Conv()
    t = cv.handshake()
    seq, ack = 1001, 5001
    for i in range(3):
        cv.c(t + i * MS, seq + 100 * i, ack, "PA", 100)
    cv.s(t + 2 * MS + 7 * MS, ack, seq + 300, "PA", 1000)
    cv.s(t + 2 * MS + 8 * MS, ack + 1000, seq + 300, "PA", 1000)
    cv.c(t + 20 * MS, seq + 300, ack + 2000, "PA", 50)
    cv.s(t + 23 * MS, ack + 2000, seq + 350, "PA", 10)
    r = one(cv)
    assert r["tcp_art_samples"] == 2
    assert (r["tcp_art_min_ns"], r["tcp_art_max_ns"], r["tcp_art_mean_ns"]) == (3 * MS, 7 * MS, 5 * MS)


def test_timestamp_echo_rtt():
    cv = Conv()
    t = cv.handshake()
    seq, ack = 1001, 5001
    cv.c(t + 1 * MS, seq, ack, "PA", 100, opts=[("Timestamp", (700, 90))])
    cv.c(t + 1 * MS + 50 * US, seq + 100, ack, "PA", 100, opts=[("Timestamp", (700, 90))])
    cv.s(t + 13 * MS, ack, seq + 200, opts=[("Timestamp", (91, 700))])   # echoes 700, 12 ms later
    cv.c(t + 20 * MS, seq + 200, ack, "PA", 100, opts=[("Timestamp", (707, 91))])
    cv.s(t + 23 * MS, ack, seq + 300, opts=[("Timestamp", (92, 707))])
    r = one(cv)
    assert r["src_tcp_ts_rtt_samples"] == 2
    assert (r["src_tcp_ts_rtt_min_ns"], r["src_tcp_ts_rtt_max_ns"]) == (3 * MS, 12 * MS)


def test_mid_stream_start_has_no_false_retransmissions():
    cv = Conv()
    seq, ack = 777_000, 9_000
    cv.c(0, seq + 1000, ack, "PA", 1000)        # capture starts here
    cv.c(50 * US, seq, ack, "PA", 1000)         # older data, sent before: never seen, not a retransmission
    cv.s(5 * MS, ack, seq + 2000)
    for i in range(2, 6):
        cv.c(6 * MS + i * 10 * US, seq + 1000 * i, ack, "PA", 1000)
    cv.s(11 * MS, ack, seq + 6000)
    r = one(cv)
    zero_except(r, "src")
    zero_except(r, "dst")
    assert r["tcp_handshake_rtt_ns"] is None and r["tcp_handshake_server_ns"] is None


def test_active_timeout_restarts_counters_not_sequence_state():
    cv = Conv()
    t = cv.handshake()
    seq, ack = 1001, 5001
    cv.c(t + 1 * MS, seq, ack, "PA", 100)
    cv.c(t + 201 * MS, seq, ack, "PA", 100)     # retransmission in period 1
    cv.s(t + 205 * MS, ack, seq + 100)
    # period 2 starts at 10 s: one new segment, one retransmission of it
    cv.c(10_000 * MS + 1 * MS, seq + 100, ack, "PA", 100)
    cv.c(10_000 * MS + 301 * MS, seq + 100, ack, "PA", 100)
    cv.s(10_000 * MS + 310 * MS, ack, seq + 200)
    cv.s(10_000 * MS + 320 * MS, ack, seq + 200, "PA", 10)     # response: one ART sample in period 2
    cv.c(10_000 * MS + 327 * MS, seq + 200, ack + 10)          # its ACK: one dst RTT sample, 7 ms
    t_ = meter(cv, active_timeout_s=10.0)
    assert t_.column("record_seq").to_pylist() == [0, 1]
    assert t_.column("src_tcp_retrans_packets").to_pylist() == [1, 1]
    assert t_.column("tcp_handshake_rtt_ns").to_pylist() == [1800 * US, None]
    # samples and histograms restart with the period: period 2's response and its ACK give the only ones
    assert t_.column("dst_tcp_rtt_samples").to_pylist() == [0, 1]
    h = t_.column("dst_tcp_rtt_hist").to_pylist()[1]
    assert h["counts"] == [1] and h["first_bucket"] == bucket(7 * MS)
    assert t_.column("tcp_art_samples").to_pylist() == [0, 1]
    assert t_.column("tcp_art_hist").to_pylist()[1]["counts"] == [1]


def test_non_tcp_flow_has_zero_counters_and_null_measurements():
    cv = Conv()
    p = Ether() / IP(src="10.9.0.1", dst="10.9.0.2") / UDP(sport=5000, dport=53) / Raw(b"q" * 20)
    cv.pkts.append((0, p))
    r = one(cv)
    zero_except(r, "src")
    assert r["tcp_handshake_rtt_ns"] is None and r["src_tcp_rtt_hist"] is None and r["tcp_art_samples"] == 0


# ---- percentiles and histogram ---------------------------------------------------------------------------

def bucket(x: int) -> int:
    """Global histogram bucket of x ns (dpi.schema.HIST_LAYOUT): the largest k with 2^(k/8) <= x, i.e.
    floor(log2(x^8)), in exact integer arithmetic; 0 and 1 ns go to bucket 0."""
    return 0 if x <= 1 else (int(x) ** 8).bit_length() - 1


def nearest_rank(x: np.ndarray, q: float) -> int:
    s = np.sort(x)
    return int(s[max(1, math.ceil(q * len(s))) - 1])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_within_5_percent_and_histogram_layout(seed):
    """2000 request/response exchanges with random delays: the RTT (data to ACK) and the response time of
    each exchange are known exactly; percentiles must be within 5 % of the exact nearest-rank values and
    the histogram must count every sample in the bucket its layout names."""
    rng = np.random.default_rng(seed)
    n = 2000
    rtt = np.maximum(1, rng.lognormal(np.log(2 * MS), 0.8, n)).astype(np.int64)
    art = rtt + rng.integers(0, 50 * MS, n)
    cv = Conv()
    t0 = cv.handshake()
    # one exchange built by scapy, repeated n times with its times, sequence and ACK numbers moved on
    cv.c(0, 0, 0, "PA", 10)
    cv.s(0, 0, 0, "A")
    cv.s(0, 0, 0, "PA", 10)
    hs = np.concatenate([record(*p) for p in cv.pkts[:3]], dtype=PKT_DTYPE)
    tpl = np.concatenate([record(*p) for p in cv.pkts[3:]], dtype=PKT_DTYPE)
    start = t0 + np.concatenate([[0], np.cumsum(art[:-1] + 1 * MS)])
    ex = np.repeat(tpl[None, :], n, axis=0)                     # (n, 3): data, ACK, response
    ex["ts_ns"] = np.stack([start, start + rtt, start + art], axis=1)
    cseq = (1001 + 10 * np.arange(n)).astype(np.uint32)
    sseq = (5001 + 10 * np.arange(n)).astype(np.uint32)
    ex["tcp_seq"] = np.stack([cseq, sseq, sseq], axis=1)
    ex["tcp_ack"] = np.stack([sseq, cseq + 10, cseq + 10], axis=1)
    records = np.concatenate([hs, ex.reshape(-1)], dtype=PKT_DTYPE)
    eng = Engine(EngineConfig(observer_host="test"))
    tab = pa.Table.from_batches(list(eng.add(records)) + list(eng.flush()))
    assert tab.num_rows == 1
    r = {k: v[0] for k, v in tab.drop_columns(["flow_start", "flow_end"]).to_pydict().items()}
    assert r["src_tcp_rtt_samples"] == n and r["tcp_art_samples"] == n
    for name, x, qs in (("src_tcp_rtt", rtt, (0.5, 0.9, 0.99)), ("tcp_art", art, (0.5, 0.99))):
        assert r[f"{name}_min_ns"] == x.min() and r[f"{name}_max_ns"] == x.max()
        assert r[f"{name}_mean_ns"] == int(x.sum()) // n
        for q in qs:
            exact = nearest_rank(x, q)
            got = r[f"{name}_p{round(q * 100)}_ns"]
            assert abs(got - exact) / exact < 0.05, (name, q, got, exact)
        h = r[f"{name}_hist"]
        k = np.array([bucket(v) for v in x])                          # 2^(k/8) <= x < 2^((k+1)/8)
        assert h["first_bucket"] == k.min()
        want = np.bincount(k - h["first_bucket"], minlength=len(h["counts"]))
        assert not h["collapsed"] and want.tolist() == h["counts"]


def test_bucket_edges_match_their_definition():
    g = 2 ** (1 / 8)
    edges_src = open(_header()).read()
    for k in range(1, 8):
        assert str(math.ceil(2**31 * g**k)) + "u" in edges_src


def _header():
    import pathlib
    return pathlib.Path(__file__).resolve().parents[1] / "ext" / "ft_hist.h"   # the one sketch (issue 4)


def test_meter_state_size_is_documented():
    import pathlib
    doc = (pathlib.Path(__file__).resolve().parents[1] / "docs" / "tcp.md").read_text()
    assert f"{_flowtable.TCP_METER_BYTES} bytes" in doc
