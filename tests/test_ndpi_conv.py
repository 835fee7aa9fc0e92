"""flowtap's flows against tshark's TCP/UDP conversations on the nDPI captures (see docs/validation.md).

The reference is Wireshark 4.0. Each capture is dissected once, with IP and TCP reassembly off
(`ip.defragment`, `ipv6.defragment`, `tcp.desegment_tcp_streams` FALSE) and name resolution off, and gives:

- the conversation tables `conv:TCP` and `conv:UDP`, the taps behind `tshark -z conv,tcp -z conv,udp`:
  frames per direction of every conversation;
- per-packet fields: `frame.protocols`, `ip.*`, `ipv6.*`, `tcp.*`, `udp.*`, `tcp.stream`, `udp.stream`.
  The tables count FRAME bytes (link-layer and tunnel headers, padding, rounded to kB in tshark's text);
  flowtap counts IP octets (IPv4 total length, IPv6 payload length + 40, of the metered packet). So bytes are
  summed from the `ip.len` / `ipv6.plen` of the IP header carrying each packet's TCP/UDP header, and the
  conversations built from the fields are checked against the tables first (same conversations, same frames
  per direction, but for one named class of tshark's own), so comparing with them is comparing with the
  tables, plus bytes.

Wireshark runs as `sharkd` (its JSON-RPC front end, installed with tshark), which loads one capture after
another in one process: a `tshark` per capture spends 0.5 s starting up, 2 min 20 s for the corpus with two
processes, against about 40 s here with two sharkd processes. test_sharkd_tables_equal_tshark_cli checks on
a few captures that sharkd's tables are the ones `tshark -z conv,...` prints.

flowtap runs with idle, active and closed timeouts of 10^9 s (31 years: some captures are stitched from
traces years apart), so its flows end only where a TCP connection is replaced by a new one on the same
4-tuple, as tshark's streams do.

Units: a tshark conversation (protocol, stream index, two (address, port) endpoints) and a flowtap TCP/UDP
flow record are paired when protocol, endpoints and first-packet time agree; a pair agrees exactly when each
endpoint sent the same packets and the same IP octets in both. Every other unit must be explained by a named
class below (a predicate whose docstring says why the tools differ); the test fails on anything else and
prints the agreement figures. To explain, every packet is compared too: the conversations tshark puts it in
against the flow flowtap's parser assigns it to (dpi.capture.CaptureReader gives the records the engine
meters; the engine's flows are checked to be exactly those records, grouped).

FLOWTAP_CONV_DETAILS=1 prints every differing group, by class.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

SHARED = Path(os.environ.get("FLOWTAP_SHARED_DATA",
                             Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
NDPI = SHARED / "ndpi"
PCAP_DIR = NDPI / "pcap"
BIG_TIMEOUT_S = 1e9
WORKERS = 2          # sharkd processes (this machine kind has 2 cores)
UNEXPLAINED = "UNEXPLAINED"

pytestmark = [
    pytest.mark.skipif(not (NDPI / "capinfos.tsv").is_file(),
                       reason=f"nDPI captures not found at {PCAP_DIR} (set FLOWTAP_SHARED_DATA to the shared "
                              "data directory)"),
    pytest.mark.skipif(shutil.which("sharkd") is None or shutil.which("tshark") is None,
                       reason="tshark/sharkd (Wireshark 4) not installed"),
]

# ------------------------------------------------------------------------------------------------------------
# tshark side
# ------------------------------------------------------------------------------------------------------------

PREFS = {
    "ip.defragment": "FALSE",
    "ipv6.defragment": "FALSE",
    "tcp.desegment_tcp_streams": "FALSE",
    "nameres.network_name": "FALSE",
    "nameres.transport_name": "FALSE",
    "nameres.mac_name": "FALSE",
}
FIELDS = ("frame.time_epoch", "frame.protocols", "ip.src", "ip.dst", "ip.len", "ip.hdr_len", "ipv6.src",
          "ipv6.dst", "ipv6.plen", "tcp.srcport", "tcp.dstport", "tcp.stream", "tcp.flags", "tcp.seq_raw",
          "tcp.hdr_len", "udp.srcport", "udp.dstport", "udp.stream",
          # expert items: a check mark when present
          "_ws.malformed", "tcp.bogus_header_length", "tcp.short_segment")
FI = {f: i for i, f in enumerate(FIELDS)}


class Sharkd:
    """One `sharkd -` process, spoken to over stdin/stdout JSON-RPC (one request line, one reply line)."""

    def __init__(self):
        self.proc = subprocess.Popen(["sharkd", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self.rpc_id = 0
        for name, value in PREFS.items():
            reply = self.call("setconf", name=name, value=value)
            assert reply.get("result", {}).get("status") == "OK", (name, reply)

    def send(self, method: str, **params) -> int:
        self.rpc_id += 1
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": self.rpc_id, "method": method,
                                          "params": params}) + "\n")
        self.proc.stdin.flush()
        return self.rpc_id

    def call(self, method: str, **params) -> dict:
        want = self.send(method, **params)
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"sharkd exited (status {self.proc.poll()}) during {method}")
            reply = json.loads(line)
            if reply.get("id") == want:
                return reply

    def dissect(self, path: Path) -> tuple[list[list[str]], list[dict]]:
        """(per-frame field strings in FIELDS order, rows of the TCP and UDP conversation tables)."""
        # sharkd 4.0 sends no reply to a "load" whose file ends in a read error (the frames before the
        # error are loaded, as tshark reads them); "status" always answers, so waiting for it cannot hang.
        self.send("load", file=str(path))
        self.call("status")
        taps = self.call("tap", tap0="conv:TCP", tap1="conv:UDP")["result"]["taps"]
        rows = [dict(c, proto=6 if t["proto"] == "TCP" else 17) for t in taps for c in t["convs"]]
        # occurrence 0: every occurrence, comma separated, outermost first
        cols = {f"column{i}": f"{f}:0" for i, f in enumerate(FIELDS)}
        frames = [fr["c"] for fr in self.call("frames", **cols)["result"]]
        return frames, rows

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _ns(epoch: str) -> int:
    sec, _, frac = epoch.partition(".")
    return int(sec) * 1_000_000_000 + int((frac + "000000000")[:9])


def _addr(text: str) -> str:
    return str(ipaddress.ip_address(text))


@dataclass(slots=True)
class Transport:
    """A TCP or UDP header tshark dissected, with the IP header that carries it."""
    pos: int            # index in TPacket.layers
    proto: int          # 6 or 17
    stream: int         # tcp.stream / udp.stream
    src: tuple          # (address, port)
    dst: tuple
    octets: int         # IP octets of the carrying IP header
    ip_index: int       # which IP header of the frame carries it (0 = outermost)
    tcp_flags: int = 0
    tcp_seq: int = 0

    @property
    def key(self) -> tuple:
        return (self.proto, frozenset((self.src, self.dst)))


@dataclass(slots=True)
class TPacket:
    """One frame as tshark dissected it."""
    num: int                     # frame number, 1-based
    ts_ns: int
    ts_text: str                 # frame.time_epoch as tshark printed it
    layers: list                 # frame.protocols, split
    ips: list                    # (src, dst, IP octets, IP payload octets) per IP header, outermost first
    transports: list             # Transport per TCP/UDP header, outermost first, none quoted in ICMP errors
    # tshark found a TCP header it could not fully read: an exception (Malformed Packet), a header length
    # under 20 (bogus), beyond the captured segment (short segment) or beyond the IP payload
    bad_header: bool = False


def tshark_packets(frames: list[list[str]]) -> list[TPacket]:
    out = []
    for num, c in enumerate(frames, 1):
        def occ(name):
            v = c[FI[name]]
            return v.split(",") if v else []

        layers = c[FI["frame.protocols"]].split(":")
        pkt = TPacket(num, _ns(c[FI["frame.time_epoch"]]), c[FI["frame.time_epoch"]], layers, [], [])
        pkt.bad_header = any(c[FI[f]] for f in ("_ws.malformed", "tcp.bogus_header_length",
                                                "tcp.short_segment"))
        ip4 = list(zip(occ("ip.src"), occ("ip.dst"), occ("ip.len"), occ("ip.hdr_len")))
        ip6 = list(zip(occ("ipv6.src"), occ("ipv6.dst"), occ("ipv6.plen")))
        l4 = {"tcp": (occ("tcp.srcport"), occ("tcp.dstport"), occ("tcp.stream"), occ("tcp.flags"),
                      occ("tcp.seq_raw"), occ("tcp.hdr_len")),
              "udp": (occ("udp.srcport"), occ("udp.dstport"), occ("udp.stream"))}
        # An IP header tshark could not read (fuzzed captures) leaves its layer name without fields: the
        # occurrences no longer line up with the layers, and such a frame is left without IP layers.
        if layers.count("ip") != len(ip4) or layers.count("ipv6") != len(ip6):
            out.append(pkt)
            continue
        seen = Counter()
        for pos, name in enumerate(layers):
            k = seen[name]
            seen[name] += 1
            if name == "ip":
                s, d, length, hdr = ip4[k]
                pkt.ips.append((_addr(s), _addr(d), int(length), int(length) - int(hdr)))
            elif name == "ipv6":
                s, d, plen = ip6[k]
                pkt.ips.append((_addr(s), _addr(d), int(plen) + 40, int(plen)))
            elif name in l4 and pkt.ips:
                # A header quoted in an ICMP error belongs to no conversation table (tcp.stream is absent,
                # udp.stream present but the tap skips it) and flowtap meters the packet as ICMP. Quoted
                # headers come after every other one, so the occurrence index k stays right for those.
                cols = l4[name]
                if any(t in ("icmp", "icmpv6") for t in layers[:pos]) or k >= len(cols[2]):
                    continue
                s, d, octets, payload = pkt.ips[-1]
                t = Transport(pos, 6 if name == "tcp" else 17, int(cols[2][k]), (s, int(cols[0][k])),
                              (d, int(cols[1][k])), octets, len(pkt.ips) - 1)
                if name == "tcp":
                    if k < len(cols[3]) and k < len(cols[4]):
                        t.tcp_flags, t.tcp_seq = int(cols[3][k], 16), int(cols[4][k])
                    if k < len(cols[5]) and int(cols[5][k]) > payload:
                        pkt.bad_header = True
                pkt.transports.append(t)
        out.append(pkt)
    return out


@dataclass
class TConv:
    """One tshark conversation: a stream index and one endpoint pair. (tshark can give two address pairs
    the same udp.stream when a dissector registered a wildcard conversation; its table lists them as
    separate rows, and so does this.)"""
    proto: int
    stream: int
    endpoints: frozenset
    first_ts: int                                 # earliest frame time (flowtap's flow_start is its earliest)
    sent: dict = field(default_factory=dict)      # (addr, port) -> [packets, IP octets]
    frames: list = field(default_factory=list)    # (frame number, Transport)
    began_at_removed_syn: bool = False            # (residual groups) its first frame, a SYN, was taken out


def tshark_conversations(pkts: list[TPacket]) -> list[TConv]:
    convs: dict[tuple, TConv] = {}
    for p in pkts:
        for t in p.transports:
            k = (t.proto, t.stream, t.key[1])
            c = convs.get(k)
            if c is None:
                c = convs[k] = TConv(t.proto, t.stream, t.key[1], p.ts_ns, {ep: [0, 0] for ep in t.key[1]})
            c.first_ts = min(c.first_ts, p.ts_ns)   # merged captures go back in time
            c.sent[t.src][0] += 1
            c.sent[t.src][1] += t.octets
            c.frames.append((p.num, t))
    return list(convs.values())


def tshark_table_differences(convs: list[TConv], rows: list[dict], tpk: list[TPacket]) -> list[tuple]:
    """Conversations from the fields against the conversation tables: (class, text) per difference."""
    mine = defaultdict(list)
    for c in convs:
        mine[(c.proto, c.endpoints)].append(c)
    table = defaultdict(list)
    for r in rows:
        a, b = (_addr(r["saddr"]), int(r["sport"])), (_addr(r["daddr"]), int(r["dport"]))
        table[(r["proto"], frozenset((a, b)))].append({a: r["txf"], b: r["rxf"]} if a != b else
                                                      {a: r["txf"] + r["rxf"]})
    out = []
    for key in set(mine) | set(table):
        have = sorted(tuple(sorted((ep, v[0]) for ep, v in c.sent.items())) for c in mine.get(key, []))
        theirs = sorted(tuple(sorted(r.items())) for r in table.get(key, []))
        if have != theirs:
            text = f"{key[0]} {sorted(key[1])}: fields {have} vs table {theirs}"
            out.append((_first_class(TABLE_CLASSES, (mine.get(key, []), have, theirs, tpk)), text))
    return out


# ------------------------------------------------------------------------------------------------------------
# flowtap side
# ------------------------------------------------------------------------------------------------------------

def flowtap_flows(path: Path, out: Path):
    """Replay one capture; returns (ReplayResult, TCP/UDP flow records as dicts with endpoints and sent)."""
    import pyarrow.parquet as pq
    from dpi.engine import EngineConfig
    from dpi.replay import replay

    cfg = EngineConfig(idle_timeout_s=BIG_TIMEOUT_S, active_timeout_s=BIG_TIMEOUT_S,
                       closed_timeout_s=BIG_TIMEOUT_S, observer_host="test")
    res = replay([str(path)], str(out), cfg)
    t = pq.read_table(out, columns=["flow_id", "flow_start", "src_ip", "dst_ip", "src_port", "dst_port",
                                     "protocol", "vlan_id", "tunnel_id", "src_packets", "dst_packets",
                                     "src_bytes", "dst_bytes"])
    out.unlink()
    t = t.set_column(1, "flow_start", t.column("flow_start").cast("int64"))
    flows = []
    for r in t.to_pylist():
        if r["protocol"] not in (6, 17):
            continue
        a, b = (_addr(r["src_ip"]), r["src_port"]), (_addr(r["dst_ip"]), r["dst_port"])
        r["endpoints"] = frozenset((a, b))
        if a == b:
            r["sent"] = {a: [r["src_packets"] + r["dst_packets"], r["src_bytes"] + r["dst_bytes"]]}
        else:
            r["sent"] = {a: [r["src_packets"], r["src_bytes"]], b: [r["dst_packets"], r["dst_bytes"]]}
        flows.append(r)
    return res, flows


@dataclass(slots=True)
class FPacket:
    """One packet as flowtap's parser recorded it."""
    reason: str
    flags: int
    proto: int
    src: Optional[tuple]       # (address, port); port 0 without ports
    dst: Optional[tuple]
    octets: int
    tunnel: str
    key: Optional[tuple]       # (proto, endpoints) of the flow the engine meters it in; None = not metered


FT_F_L3, FT_F_L4, FT_F_FRAG, FT_F_FRAG_FIRST = 0x1, 0x2, 0x4, 0x8   # ext/ft_record.h


def flowtap_packets(path: Path) -> list[FPacket]:
    from dpi._reader import REASON_NAMES, TUNNEL_NAMES
    from dpi.capture import CaptureError, CaptureReader

    out = []
    try:
        with CaptureReader(str(path)) as rd:
            for recs, _data in rd:
                names = recs.dtype.names
                for values in recs.tolist():
                    r = dict(zip(names, values))
                    flags = r["flags"]
                    src = dst = key = None
                    if flags & FT_F_L3:
                        n = 4 if r["ip_version"] == 4 else 16
                        s = str(ipaddress.ip_address(bytes(r["src_addr"])[:n]))
                        d = str(ipaddress.ip_address(bytes(r["dst_addr"])[:n]))
                        # the engine's rule (make_key, ext/_flowtable.pyx): TCP and UDP packets need their
                        # ports, but IP fragments, which are metered with ports 0
                        ports = r["proto"] in (6, 17) and bool(flags & FT_F_L4)
                        src, dst = (s, r["sport"] if ports else 0), (d, r["dport"] if ports else 0)
                        if r["proto"] not in (6, 17) or ports or flags & FT_F_FRAG:
                            key = (r["proto"], frozenset((src, dst)))
                    out.append(FPacket(REASON_NAMES[r["reason"]], flags, r["proto"], src, dst, r["l3_len"],
                                       TUNNEL_NAMES[r["tunnel_type"]], key))
    except CaptureError:
        pass            # the packets before the error were metered; the replay reports the error
    return out


# ------------------------------------------------------------------------------------------------------------
# The classes of difference. Each is a predicate registered under its name; its docstring says WHY the
# tools differ (docs/validation.md repeats them with the figures).
# ------------------------------------------------------------------------------------------------------------

@dataclass
class PacketDiff:
    """A packet the tools place differently. side "tshark": tshark has it in conversation `key` (header
    `t`), flowtap does not meter it under that key; side "flowtap": flowtap meters it under `key`, tshark has
    it in no conversation of that key; side "bytes": same key, other IP octets."""
    num: int
    side: str
    key: tuple
    tp: TPacket
    fp: Optional[FPacket]         # None: flowtap's reader did not deliver this frame
    t: Optional[Transport] = None


@dataclass
class Group:
    """Everything with one (protocol, endpoint pair): tshark conversations, flowtap flows, packet diffs."""
    key: tuple
    convs: list
    flows: list
    diffs: list
    tpk: list


PACKET_CLASSES: list[tuple[str, Callable]] = []   # (name, predicate(PacketDiff) -> bool)
SPLIT_CLASSES: list[tuple[str, Callable]] = []    # (name, predicate(Group) -> bool), same packets cut apart
TABLE_CLASSES: list[tuple[str, Callable]] = []    # (name, predicate((convs, fields, table, tpk)) -> bool)


def difference_class(registry: list, name: str):
    def register(pred):
        registry.append((name, pred))
        return pred
    return register


def _first_class(registry: list, item) -> str:
    return next((name for name, pred in registry if pred(item)), UNEXPLAINED)


def _before(d: PacketDiff) -> list:
    return d.tp.layers[:d.t.pos]


def _meters_outer(d: PacketDiff) -> bool:
    """tshark's header sits behind an inner IP header; flowtap metered the packet on the outermost IP
    header, no tunnel removed."""
    return (d.side == "tshark" and d.t.ip_index > 0 and d.fp is not None and d.fp.key is not None
            and d.fp.tunnel == "" and (d.fp.src[0], d.fp.dst[0]) == d.tp.ips[0][:2])


@difference_class(PACKET_CLASSES, "outer VXLAN conversation")
def outer_vxlan(d: PacketDiff) -> bool:
    """tshark lists the outer UDP/4789 conversation of VXLAN packets besides the inner one; flowtap meters
    the inner flow only (tunnel_type vxlan) and keeps no flow of the outer UDP header."""
    return (d.side == "tshark" and d.t.proto == 17 and d.tp.layers[d.t.pos + 1:d.t.pos + 2] == ["vxlan"]
            and d.fp is not None and d.fp.tunnel == "vxlan")


@difference_class(PACKET_CLASSES, "IP-in-IP not unwrapped by flowtap")
def ip_in_ip(d: PacketDiff) -> bool:
    """tshark decodes IP-in-IP (4in4, 6in4, 4in6, 6in6) and lists the inner conversation; flowtap unwraps
    GRE, ERSPAN and VXLAN only, and meters the packet as an IP protocol 4 or 41 flow of the outer
    addresses (outside this TCP/UDP comparison)."""
    if not _meters_outer(d) or d.fp.proto not in (4, 41):
        return False
    first = next(i for i, name in enumerate(d.tp.layers) if name in ("ip", "ipv6"))
    return d.tp.layers[first + 1] in ("ip", "ipv6")


@difference_class(PACKET_CLASSES, "GTP-U or CAPWAP not unwrapped by flowtap")
def udp_tunnel(d: PacketDiff) -> bool:
    """tshark decodes GTP-U (UDP 2152) and CAPWAP data (UDP 5247) and lists the inner conversation as well as
    the outer UDP one; flowtap meters the outer UDP flow only (which agrees with tshark's outer
    conversation)."""
    return (_meters_outer(d) and d.fp.proto == 17 and d.tp.transports[0].key == d.fp.key
            and any(name in ("gtp", "capwap.data") for name in _before(d)))


@difference_class(PACKET_CLASSES, "GRE version 1 (PPTP) not unwrapped by flowtap")
def gre_v1(d: PacketDiff) -> bool:
    """tshark decodes PPP in enhanced GRE (version 1, PPTP); flowtap's parser unwraps GRE version 0 only:
    it counts the packet as unsupported_tunnel and meters it as an IP protocol 47 flow."""
    return (_meters_outer(d) and d.fp.proto == 47 and d.fp.reason == "unsupported_tunnel"
            and "gre" in _before(d))


@difference_class(PACKET_CLASSES, "non-first IP fragment")
def non_first_fragment(d: PacketDiff) -> bool:
    """flowtap meters a non-first fragment on its addresses and protocol with ports 0 (it has no TCP/UDP
    header); with reassembly off, tshark dissects no TCP/UDP header in it: it is in no conversation."""
    return (d.side == "flowtap" and bool(d.fp.flags & FT_F_FRAG) and not d.fp.flags & FT_F_FRAG_FIRST
            and d.fp.src[1] == 0 and not any(t.key == d.key for t in d.tp.transports))


@difference_class(PACKET_CLASSES, "PPPoE not parsed by flowtap")
def pppoe(d: PacketDiff) -> bool:
    """flowtap's parser does not decode PPPoE session frames (ethertype 0x8864): they are counted as not_ip
    and not metered; tshark decodes the PPP and IP inside."""
    return d.side == "tshark" and d.fp is not None and d.fp.reason == "not_ip" and "pppoes" in _before(d)


@difference_class(PACKET_CLASSES, "Cisco FabricPath not parsed by flowtap")
def fabricpath(d: PacketDiff) -> bool:
    """flowtap's parser does not decode Cisco FabricPath (ethertype 0x8903: an outer MAC header before the
    Ethernet frame): counted as not_ip, not metered."""
    return d.side == "tshark" and d.fp is not None and d.fp.reason == "not_ip" and "cfp" in _before(d)


@difference_class(PACKET_CLASSES, "link type not parsed by flowtap")
def link_type(d: PacketDiff) -> bool:
    """flowtap's parser reads Ethernet, raw IP, Linux SLL/SLL2 and null/loopback captures; PPP (9), Cisco
    HDLC (104) and PPI (192) captures are counted as unsupported_linktype and not metered."""
    return d.side == "tshark" and d.fp is not None and d.fp.reason == "unsupported_linktype"


@difference_class(PACKET_CLASSES, "TCP header flowtap rejects")
def tcp_header_rejected(d: PacketDiff) -> bool:
    """flowtap's parser rejects a TCP header whose data offset is under 5 words or beyond the IP payload,
    or that the capture cuts (bad_tcp_data_offset, truncated_l4): the packet is counted, not metered (but a
    first fragment is metered with its fragments, ports 0). tshark reads the ports from the first 4 bytes
    and keeps the frame in the stream, flagged bogus/short/malformed (and out of its conversation table)."""
    return d.fp is not None and d.fp.reason in ("bad_tcp_data_offset", "truncated_l4") and d.tp.bad_header


@difference_class(PACKET_CLASSES, "record flowtap's reader rejects")
def reader_rejects(d: PacketDiff) -> bool:
    """flowtap's reader stops at a record whose captured length exceeds 262,144 bytes and reports the
    file and offset; Wireshark reads that record (and would read on)."""
    return d.fp is None


@difference_class(SPLIT_CLASSES, "timestamp out of range")
def bad_timestamp(g: Group) -> bool:
    """A fuzzed record's sub-second field exceeds its unit (4,293,562,680 us): flowtap carries the excess
    into the seconds, Wireshark's time overflows (printed with a fraction of over 9 digits). Same packets,
    different first-packet times."""
    return (len(g.convs) == 1 and len(g.flows) == 1 and g.convs[0].sent == g.flows[0]["sent"]
            and len(g.tpk[g.convs[0].frames[0][0] - 1].ts_text.partition(".")[2]) > 9)


@difference_class(SPLIT_CLASSES, "VLAN in flowtap's key")
def vlan_split(g: Group) -> bool:
    """flowtap's flow key includes the innermost VLAN id, so one 5-tuple seen on several VLANs (a connection
    mirrored from two VLANs, or each direction tagged differently) is several flows; tshark's conversations
    ignore VLANs."""
    return len(g.convs) == 1 and len(g.flows) == len({f["vlan_id"] for f in g.flows}) > 1


@difference_class(SPLIT_CLASSES, "UDP conversation split per direction by tshark")
def udp_one_way_streams(g: Group) -> bool:
    """tshark gives each direction of these UDP conversations its own udp.stream: a signalling dissector
    (SIP/SDP for RTP and T.38, HART-IP, skinny) registered the conversation beforehand with a wildcard,
    which matches one direction only. flowtap's key has no direction: one flow."""
    return (g.key[0] == 17 and len(g.flows) == 1 and len(g.convs) > 1
            and all(sum(1 for v in c.sent.values() if v[0]) == 1 for c in g.convs))


def _syn(t: Transport) -> bool:
    return t.proto == 6 and (t.tcp_flags & 0x12) == 0x02


@difference_class(SPLIT_CLASSES, "tshark new stream at a SYN flowtap rejects")
def stream_change_at_rejected_syn(g: Group) -> bool:
    """tshark started a new stream at a SYN whose TCP header flowtap rejects (a fuzzed data offset, class
    "TCP header flowtap rejects"): that SYN is not metered, so flowtap sees no new connection."""
    later = sorted(g.convs, key=lambda c: c.frames[0][0])[1:]
    return (g.key[0] == 6 and len(g.flows) == 1 and len(g.convs) > 1
            and all(c.began_at_removed_syn for c in later))


@difference_class(SPLIT_CLASSES, "tshark new stream without a SYN")
def stream_change_without_syn(g: Group) -> bool:
    """tshark's tcp.stream changes in the middle of a connection, at a packet without SYN (its VNC dissector
    registers a new conversation for the 4-tuple); flowtap keeps one flow, as no new connection began."""
    later = sorted(g.convs, key=lambda c: c.frames[0][0])[1:]
    return (g.key[0] == 6 and len(g.flows) == 1 and len(g.convs) > 1
            and all(not _syn(c.frames[0][1]) and not c.began_at_removed_syn for c in later))


@difference_class(SPLIT_CLASSES, "SYN with the same ISN after RST/FIN")
def resyn_same_isn(g: Group) -> bool:
    """flowtap starts a new flow when a SYN comes on a closed connection (RST, or FIN both ways), whatever
    its sequence number (docs/architecture.md); tshark starts a new stream only when a SYN's sequence number
    differs from the stream's first SYN, so a SYN retried with the same ISN after a RST stays in the old
    stream. (Both split on a SYN with a new ISN.)"""
    if g.key[0] != 6 or len(g.flows) <= len(g.convs):
        return False
    frames = sorted(((n, t) for c in g.convs for n, t in c.frames), key=lambda x: x[0])
    for f in sorted(g.flows, key=lambda f: f["flow_start"])[1:]:
        at = [(n, t) for n, t in frames if g.tpk[n - 1].ts_ns == f["flow_start"] and _syn(t)]
        if not at:
            return False
        n, t = at[0]
        earlier = [(m, u) for m, u in frames if m < n and u.stream == t.stream]
        first = next((m for m, u in earlier if _syn(u) and u.src == t.src and u.tcp_seq == t.tcp_seq), None)
        if first is None:
            return False
        after = [u for m, u in earlier if m > first]
        rst = any(u.tcp_flags & 0x04 for u in after)
        fin_both = len({u.src for u in after if u.tcp_flags & 0x01}) == 2
        if not (rst or fin_both):
            return False
    return True


@difference_class(TABLE_CLASSES, "tshark's table skips frames with a broken TCP header")
def table_skips_broken_headers(item) -> bool:
    """tshark feeds its conversation tap at the end of the TCP header dissection. A header length under 20
    ("Bogus TCP header length"), beyond the captured segment ("Short segment") or the IP payload, or an
    exception ("Malformed Packet") stops it before: the frame keeps ports and tcp.stream but is missing
    from the table. Holds when the table lacks at most as many frames per endpoint as there are such."""
    convs, have, theirs, tpk = item
    broken = Counter(t.src for c in convs for n, t in c.frames if tpk[n - 1].bad_header)
    fields = Counter({ep: v for conv in have for ep, v in conv})
    table = Counter({ep: v for conv in theirs for ep, v in conv})
    return all(0 <= fields[ep] - table[ep] <= broken[ep] for ep in set(fields) | set(table))


# ------------------------------------------------------------------------------------------------------------
# comparison of one capture
# ------------------------------------------------------------------------------------------------------------

def packet_diffs(tpk: list[TPacket], fpk: list[FPacket]) -> list[PacketDiff]:
    out = []
    for i, tp in enumerate(tpk):
        fp = fpk[i] if i < len(fpk) else None
        fkey = fp.key if fp is not None else None
        for t in tp.transports:
            if t.key != fkey:
                out.append(PacketDiff(tp.num, "tshark", t.key, tp, fp, t))
            elif t.octets != fp.octets:
                out.append(PacketDiff(tp.num, "bytes", t.key, tp, fp, t))
        if fkey is not None and fkey[0] in (6, 17) and not any(t.key == fkey for t in tp.transports):
            out.append(PacketDiff(tp.num, "flowtap", fkey, tp, fp))
    return out


def engine_mismatches(flows: list[dict], fpk: list[FPacket]) -> list[str]:
    """The engine's TCP/UDP flows must hold exactly the packets its parser gave it (per endpoint pair and
    sender): this is what lets the packet comparison explain the flow comparison."""
    from_packets = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for p in fpk:
        if p.key is not None and p.key[0] in (6, 17):
            from_packets[p.key][p.src][0] += 1
            from_packets[p.key][p.src][1] += p.octets
    from_flows = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for f in flows:
        for ep, (n, b) in f["sent"].items():
            from_flows[(f["protocol"], f["endpoints"])][ep][0] += n
            from_flows[(f["protocol"], f["endpoints"])][ep][1] += b
    out = []
    for key in set(from_packets) | set(from_flows):
        a = {ep: v for ep, v in from_packets[key].items() if v[0]}
        b = {ep: v for ep, v in from_flows[key].items() if v[0]}
        if a != b:
            out.append(f"engine flows {key}: {b} but its parser's packets {a}")
    return out


def pair_units(g: Group):
    """Pair conversations and flows of one group by first-packet time: (pairs, lone convs, lone flows)."""
    pairs, lone = [], []
    left = sorted(g.flows, key=lambda f: (f["flow_start"], f["flow_id"]))
    for c in sorted(g.convs, key=lambda c: c.first_ts):
        hit = next((f for f in left if f["flow_start"] == c.first_ts), None)
        if hit is None:
            lone.append(c)
        else:
            left.remove(hit)
            pairs.append((c, hit))
    return pairs, lone, left


def without_diffs(g: Group) -> Group:
    """The group with the packets only tshark has taken out of its conversations (emptied ones dropped)."""
    gone = {(d.num, d.t.pos) for d in g.diffs if d.side == "tshark"}
    convs = []
    for c in g.convs:
        kept = [(n, t) for n, t in c.frames if (n, t.pos) not in gone]
        if kept:
            r = TConv(c.proto, c.stream, c.endpoints, min(g.tpk[n - 1].ts_ns for n, _ in kept),
                      {ep: [0, 0] for ep in c.endpoints}, kept)
            for _, t in kept:
                r.sent[t.src][0] += 1
                r.sent[t.src][1] += t.octets
            r.began_at_removed_syn = kept[0] != c.frames[0] and _syn(c.frames[0][1])
            convs.append(r)
    return Group(g.key, convs, g.flows, [], g.tpk)


def group_label(g: Group) -> str:
    """The class(es) explaining a group whose conversations and flows differ. Packets placed differently
    are explained one by one (PACKET_CLASSES); what remains once they are taken out must then agree
    exactly, or differ only in where conversations and flows are cut (SPLIT_CLASSES)."""
    if not g.diffs:
        return _first_class(SPLIT_CLASSES, g)
    names = {_first_class(PACKET_CLASSES, d) for d in g.diffs}
    rest = without_diffs(g)
    if any(d.side != "tshark" for d in g.diffs):
        # packets only flowtap meters here (fragments): explained when tshark has nothing else here, that
        # is when these flows hold nothing but such packets
        if rest.convs:
            names.add(UNEXPLAINED)
    else:
        pairs, lone_convs, lone_flows = pair_units(rest)
        if lone_convs or lone_flows or any(c.sent != f["sent"] for c, f in pairs):
            names.add(_first_class(SPLIT_CLASSES, rest))
    return " + ".join(sorted(names))


@dataclass
class FileResult:
    name: str
    convs: int = 0                                    # tshark TCP/UDP conversations
    flows: int = 0                                    # flowtap TCP/UDP flows
    exact: int = 0                                    # pairs that agree exactly
    conv_packets: int = 0                             # TCP/UDP headers in tshark's conversations
    units: Counter = field(default_factory=Counter)   # class label -> differing units
    packets: Counter = field(default_factory=Counter)  # class -> packets placed differently
    table: Counter = field(default_factory=Counter)   # class -> conversations where fields and table differ
    frames_tshark: int = 0
    packets_flowtap: int = 0
    errors: list = field(default_factory=list)
    unexplained: list = field(default_factory=list)
    details: list = field(default_factory=list)       # (label, description) per differing group


def _describe(g: Group) -> str:
    cs = "; ".join(f"{'tcp' if c.proto == 6 else 'udp'}.stream {c.stream} sent {c.sent} frames "
                   f"{[n for n, _ in c.frames[:4]]}" for c in g.convs)
    fs = "; ".join(f"flow {f['flow_id']} vlan {f['vlan_id']} sent {f['sent']}" for f in g.flows)
    ds = "; ".join(f"#{d.num} {d.side} {d.fp.reason if d.fp else 'unread'}" for d in g.diffs[:4])
    return f"tshark [{cs}] flowtap [{fs}] packets [{ds}]"


def compare_file(sk: Sharkd, path: Path, tmp: Path) -> FileResult:
    fr = FileResult(path.name)
    frames, rows = sk.dissect(path)
    tpk = tshark_packets(frames)
    convs = tshark_conversations(tpk)
    for cls, text in tshark_table_differences(convs, rows, tpk):
        fr.table[cls] += 1
        fr.details.append((f"tshark fields vs table: {cls}", f"{path.name}: {text}"))
        if cls == UNEXPLAINED:
            fr.unexplained.append(f"{path.name}: tshark fields vs table: {text}")
    res, flows = flowtap_flows(path, tmp / (path.name + ".parquet"))
    fpk = flowtap_packets(path)
    fr.errors, fr.frames_tshark, fr.packets_flowtap = res.errors, len(tpk), res.packets
    fr.convs, fr.flows = len(convs), len(flows)
    fr.conv_packets = sum(len(c.frames) for c in convs)
    fr.unexplained += [f"{path.name}: {m}" for m in engine_mismatches(flows, fpk)]

    groups: dict[tuple, Group] = {}
    for key, item, slot in ([((c.proto, c.endpoints), c, "convs") for c in convs] +
                            [((f["protocol"], f["endpoints"]), f, "flows") for f in flows]):
        getattr(groups.setdefault(key, Group(key, [], [], [], tpk)), slot).append(item)
    for d in packet_diffs(tpk, fpk):
        groups.setdefault(d.key, Group(d.key, [], [], [], tpk)).diffs.append(d)
        cls = _first_class(PACKET_CLASSES, d)
        fr.packets[cls] += 1
        if cls == UNEXPLAINED:
            fr.unexplained.append(f"{path.name}: packet #{d.num} {d.side} {d.key} tshark {d.tp.layers} {d.t} "
                                  f"flowtap {d.fp}")

    for g in groups.values():
        pairs, lone_convs, lone_flows = pair_units(g)
        exact = sum(1 for c, f in pairs if c.sent == f["sent"])
        fr.exact += exact
        differing = len(pairs) - exact + len(lone_convs) + len(lone_flows)
        if not differing:
            continue
        label = group_label(g)
        fr.units[label] += differing
        fr.details.append((label, f"{path.name}: {_describe(g)}"))
        if UNEXPLAINED in label:
            fr.unexplained.append(f"{path.name}: {label}: {_describe(g)}")
    return fr


# ------------------------------------------------------------------------------------------------------------
# the tests
# ------------------------------------------------------------------------------------------------------------

def _captures() -> list[Path]:
    """The captures capinfos listed (every file of the directory but README.txt)."""
    names = [line.split("\t")[0] for line in (NDPI / "capinfos.tsv").read_text().splitlines()]
    return [PCAP_DIR / n for n in sorted(names)]


def run_all(tmp: Path) -> list[FileResult]:
    """Compare every capture, WORKERS at a time (one sharkd each; the replay is in this process)."""
    free = [Sharkd() for _ in range(WORKERS)]
    pool = list(free)
    lock = threading.Lock()

    def work(path):
        with lock:
            sk = free.pop()
        try:
            return compare_file(sk, path, tmp)
        finally:
            with lock:
                free.append(sk)

    try:
        with ThreadPoolExecutor(WORKERS) as ex:
            return list(ex.map(work, _captures()))
    finally:
        for sk in pool:
            sk.close()


def report(results: list[FileResult], wall_s: float) -> str:
    exact = sum(r.exact for r in results)
    convs = sum(r.convs for r in results)
    flows = sum(r.flows for r in results)
    units, packets, table = Counter(), Counter(), Counter()
    for r in results:
        units.update(r.units)
        packets.update(r.packets)
        table.update(r.table)
    total = exact + sum(units.values())
    conv_packets = sum(r.conv_packets for r in results)
    pct = lambda a, b: f"{100.0 * a / b:.2f}%" if b else "-"   # noqa: E731
    lines = [
        f"flowtap vs tshark TCP/UDP conversations: {len(results)} captures, {wall_s:.1f} s",
        f"  exactly equal (packets and IP octets per direction): {exact} pairs",
        f"    of {convs} tshark conversations ({pct(exact, convs)}), of {flows} flowtap TCP/UDP flows "
        f"({pct(exact, flows)}), of {total} units ({pct(exact, total)}; a unit is a pair, a lone "
        f"conversation or a lone flow)",
        "  differing units by class:",
        *(f"    {v:6d}  {k}" for k, v in units.most_common()),
        f"  packets placed differently by class (of {conv_packets} TCP/UDP headers in tshark's "
        "conversations):",
        *(f"    {v:6d}  {k}" for k, v in packets.most_common()),
        "  tshark's own fields vs its conversation table (conversations):",
        *(f"    {v:6d}  {k}" for k, v in table.most_common()),
    ]
    return "\n".join(lines)


def test_flows_agree_with_tshark_conversations(tmp_path, capsys):
    t0 = time.monotonic()
    results = run_all(tmp_path)
    text = report(results, time.monotonic() - t0)
    with capsys.disabled():
        print("\n" + text)
        if os.environ.get("FLOWTAP_CONV_DETAILS"):
            for label, desc in sorted(d for r in results for d in r.details):
                print(f"[{label}] {desc}")
    # both read every frame (but the record flowtap's reader rejects, reported as an error)
    for r in results:
        assert r.frames_tshark == r.packets_flowtap or r.errors, r.name
    unexplained = [u for r in results for u in r.unexplained]
    assert not unexplained, "\n".join(unexplained)
    assert sum(r.exact for r in results) > 0


# --- sharkd's tables are tshark's ---------------------------------------------------------------------------

CONV_LINE = re.compile(r"^(\S+):(\d+)\s+<->\s+(\S+):(\d+)\s+(\d+) (\d+ bytes|\S+ [kMG]B)\s+(\d+) "
                       r"(\d+ bytes|\S+ [kMG]B)\s+")


def _tshark_cli_tables(path: Path) -> list[tuple]:
    """(proto, {endpoint: frames sent}, {endpoint: frame bytes sent, when printed exactly}) per row of
    `tshark -q -z conv,tcp -z conv,udp` (its text rounds bytes beyond 10 kB to kB)."""
    cmd = ["tshark", "-r", str(path), "-q", "-n", "-z", "conv,tcp", "-z", "conv,udp"]
    for name, value in PREFS.items():
        cmd += ["-o", f"{name}:{value}"]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    rows, proto = [], None
    for line in text.splitlines():
        if line.startswith(("TCP Conversations", "UDP Conversations")):
            proto = 6 if line.startswith("TCP") else 17
        m = CONV_LINE.match(line)
        if m:
            a, b = (_addr(m[1]), int(m[2])), (_addr(m[3]), int(m[4]))
            exact = lambda s: int(s.split()[0]) if s.endswith(" bytes") else None   # noqa: E731
            rows.append((proto, tuple(sorted(((a, int(m[7])), (b, int(m[5]))))),
                         ((a, exact(m[8])), (b, exact(m[6])))))
    return rows


@pytest.mark.parametrize("name", ["vxlan.pcap", "gnutella.pcap", "dns_fragmented.pcap", "rtsp.pcap",
                                  "6in4tunnel.pcap", "quic_interop_V.pcapng"])
def test_sharkd_tables_equal_tshark_cli(name):
    """The conversation tables read from sharkd are those `tshark -z conv,tcp -z conv,udp` prints, frames
    and (where tshark prints them unrounded) frame bytes, with the same preferences."""
    path = PCAP_DIR / name
    sk = Sharkd()
    try:
        _, rows = sk.dissect(path)
    finally:
        sk.close()
    cli = _tshark_cli_tables(path)
    assert len(cli) == len(rows) > 0
    mine = []
    for r in rows:
        a, b = (_addr(r["saddr"]), int(r["sport"])), (_addr(r["daddr"]), int(r["dport"]))
        mine.append((r["proto"], tuple(sorted(((a, r["txf"]), (b, r["rxf"])))),
                     ((a, r["txb"]), (b, r["rxb"]))))
    key = lambda row: (row[0], row[1])   # noqa: E731
    assert sorted(map(key, cli)) == sorted(map(key, mine))
    by_frames = defaultdict(list)
    for row in mine:
        by_frames[key(row)].append(dict(row[2]))
    for row in cli:
        printed = {ep: b for ep, b in row[2] if b is not None}
        assert any(all(m[ep] == b for ep, b in printed.items()) for m in by_frames[key(row)]), row
