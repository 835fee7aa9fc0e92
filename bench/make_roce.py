"""Generate a deterministic RoCEv2-only capture for the replay benchmark and the RoCE meters.

    python bench/make_roce.py /work/benchdata/roce1m.pcap                  # >= 1,000,000 packets, seed 1
    python bench/make_roce.py small.pcap --packets 20000 --seed 7 --snaplen 128

What is in it: reliable-connected (RC) queue pairs between a handful of hosts, as seen at one 100 GbE mirror
port. Each QP runs one operation at a time and the QPs are interleaved packet by packet:

- RDMA WRITE messages of 1..256 pages: FIRST (RETH) / MIDDLE / LAST, or ONLY (RETH) for one page; every
  payload is 4096 bytes (the RoCE path MTU). AckReq is set on LAST/ONLY and on every 16th packet.
- coalesced ACKs: the responder answers each AckReq packet (so one ACK covers up to 16 packets), a few
  packets later, with AETH syndrome 0x1f (ACK, credits not valid) and its message sequence number (MSN).
- RDMA READ requests (RETH, 1..64 pages) answered by READ RESPONSE FIRST (AETH) / MIDDLE / LAST (AETH), or
  ONLY (AETH); the request takes as many PSNs as there are response packets, as IBTA 9.4.3 requires.
- ECN: data travels ECT(0) at DSCP 26; during short congestion episodes some data packets arrive CE-marked and
  the receiving NIC answers with a CNP (BTH opcode 0x81, BECN set, 16 reserved bytes, DSCP 48) to the
  sender's QP, at most one per QP per 50 us (the usual NIC default interval).
- PSNs start at seeded random values; one QP starts 1000 below 2**24 so it wraps. Two QPs run over IPv6 and
  a quarter of the QPs carry an 802.1Q tag (PCP 3, VID 100).

Every frame is complete (unless --snaplen cuts the captured part) with correct IPv4 header checksums, UDP
checksum 0 over IPv4 as RoCEv2 NICs send it, a computed UDP checksum over IPv6 (RFC 8200 forbids 0), and
the RoCEv2 ICRC: CRC-32 (the zlib/Ethernet polynomial) over 8 bytes of 0xff standing in for the LRH, then
the IP header with the fields routers may change set to all ones (IPv4 TOS, TTL, header checksum; IPv6
traffic class, flow label, hop limit), the UDP header with its checksum set to all ones, the BTH with its
reserved byte (FECN/BECN/resv6) set to all ones, and the rest of the packet up to the ICRC, which is stored
least significant byte first (IBTA RoCEv2 annex A17.3.3). Checked bit for bit against the real SoftRoCE
packet in ../shared/data/roce and against scapy.contrib.roce (see --check).

Timestamps advance by the serialisation time of each frame at --gbps (preamble and gap included), with
nanosecond resolution; output is pcap (nanosecond magic, Ethernet link type).
"""
import argparse
import random
import struct
import sys
import zlib
from collections import Counter

ROCE_PORT = 4791
MTU_PAYLOAD = 4096
ACK_EVERY = 16
CNP_INTERVAL_NS = 50_000
DSCP_DATA, DSCP_CNP = 26, 48
ECT0, CE = 0b10, 0b11
AETH_ACK_NO_CREDIT = 0x1F  # syndrome: ACK (bits 7:5 = 000), credit count 11111 = credits not valid

# BTH opcodes, reliable connected (IBTA table 38)
WRITE_FIRST, WRITE_MIDDLE, WRITE_LAST, WRITE_ONLY = 0x06, 0x07, 0x08, 0x0A
READ_REQUEST = 0x0C
READ_RESP_FIRST, READ_RESP_MIDDLE, READ_RESP_LAST, READ_RESP_ONLY = 0x0D, 0x0E, 0x0F, 0x10
ACKNOWLEDGE = 0x11
CNP = 0x81
OPCODE_NAMES = {
    WRITE_FIRST: "RDMA WRITE First", WRITE_MIDDLE: "RDMA WRITE Middle", WRITE_LAST: "RDMA WRITE Last",
    WRITE_ONLY: "RDMA WRITE Only", READ_REQUEST: "RDMA READ Request",
    READ_RESP_FIRST: "RDMA READ Response First", READ_RESP_MIDDLE: "RDMA READ Response Middle",
    READ_RESP_LAST: "RDMA READ Response Last", READ_RESP_ONLY: "RDMA READ Response Only",
    ACKNOWLEDGE: "Acknowledge", CNP: "CNP",
}

PSN_MOD = 1 << 24
FF8 = b"\xff" * 8


def ipv4_checksum(header):
    """RFC 1071 ones' complement sum of a 20-byte header whose checksum field is zero; host-order int."""
    s = sum(struct.unpack("!10H", header))
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp6_checksum(src, dst, udp_and_payload):
    """RFC 8200 8.1 UDP checksum over the IPv6 pseudo-header; 0 is sent as 0xffff (RFC 768)."""
    data = src + dst + struct.pack("!IxxxB", len(udp_and_payload), 17) + udp_and_payload
    if len(data) & 1:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s & 0xFFFF) or 0xFFFF


class Endpoint:
    """One host: MAC, IP (4 or 16 bytes), an IPv4 identification counter, optional VLAN."""

    def __init__(self, idx, v6, vlan):
        self.mac = bytes([0x02, 0x00, 0x5E, 0x10, 0x00, idx])
        self.v6 = v6
        self.ip = (bytes.fromhex("fd00000000000000000000000000") + bytes([0, idx])) if v6 \
            else bytes([10, 0, 0, idx])
        self.vlan = vlan
        self.ip_id = (idx * 7919) & 0xFFFF


class Frames:
    """Builds complete Ethernet/IP/UDP/BTH frames with their ICRC."""

    def __init__(self):
        self.count = Counter()

    def build(self, src, dst, sport, tos, opcode, dqpn, psn, ackreq=False, becn=False, ext=b"",
              payload=b""):
        """Return the frame bytes: Ethernet (+802.1Q) / IPv4|IPv6 / UDP / BTH / ext / payload / ICRC.

        ext holds the extension headers (RETH, AETH, or the CNP's 16 reserved bytes), network byte order.
        """
        self.count[opcode] += 1
        bth_flags = 0  # SE 0, MigReq 0, pad count 0 (payloads are 4-byte multiples), TVer 0
        bth_tail = struct.pack("!I", (ackreq << 31) | psn)
        bth = struct.pack("!BBHB", opcode, bth_flags, 0xFFFF, becn << 6) + (dqpn).to_bytes(3, "big") + bth_tail
        bth_masked = bth[:4] + b"\xff" + bth[5:]
        body = ext + payload
        udp_len = 8 + 12 + len(body) + 4
        if src.v6:
            vtf = (6 << 28) | (tos << 20)  # flow label 0
            ip = struct.pack("!IHBB", vtf, udp_len, 17, 64) + src.ip + dst.ip
            ip_masked = b"\x6f\xff\xff\xff" + struct.pack("!HBB", udp_len, 17, 0xFF) + src.ip + dst.ip
            ethertype = 0x86DD
        else:
            src.ip_id = (src.ip_id + 1) & 0xFFFF
            head = struct.pack("!BBHHHBBH4s4s", 0x45, tos, 20 + udp_len, src.ip_id, 0x4000, 64, 17, 0,
                               src.ip, dst.ip)
            ip = head[:10] + struct.pack("!H", ipv4_checksum(head)) + head[12:]
            ip_masked = head[:1] + b"\xff" + head[2:8] + b"\xff" + head[9:10] + b"\xff\xff" + head[12:]
            ethertype = 0x0800
        udp_masked = struct.pack("!HHHH", sport, ROCE_PORT, udp_len, 0xFFFF)
        crc = zlib.crc32(body, zlib.crc32(FF8 + ip_masked + udp_masked + bth_masked))
        icrc = struct.pack("<I", crc)
        if src.v6:
            csum = udp6_checksum(src.ip, dst.ip, struct.pack("!HHHH", sport, ROCE_PORT, udp_len, 0)
                                 + bth + body + icrc)
        else:
            csum = 0  # RoCEv2 over IPv4 sends no UDP checksum; the ICRC covers the payload
        udp = struct.pack("!HHHH", sport, ROCE_PORT, udp_len, csum)
        if src.vlan is not None:
            l2 = dst.mac + src.mac + struct.pack("!HHH", 0x8100, (3 << 13) | src.vlan, ethertype)
        else:
            l2 = dst.mac + src.mac + struct.pack("!H", ethertype)
        return l2 + ip + udp + bth + body + icrc


class QueuePair:
    """One RC connection: a requester (sends WRITEs and READ requests) and its responder."""

    def __init__(self, rng, req, resp, req_qpn, resp_qpn, start_psn, payloads):
        self.rng, self.req, self.resp = rng, req, resp
        self.req_qpn, self.resp_qpn = req_qpn, resp_qpn
        self.psn = start_psn
        self.msn = 0
        self.req_port = 49152 + rng.randrange(16384)  # the NIC hashes the QP into the source port
        self.resp_port = 49152 + rng.randrange(16384)
        self.rkey = rng.getrandbits(32)
        self.va = rng.getrandbits(36) << 12
        self.payloads = payloads
        self.pending = []  # frames owed: [packets still to wait, "ack", psn, msn] or [.., "cnp", src, dst, port, qpn]
        self.last_cnp_ns = {True: -CNP_INTERVAL_NS, False: -CNP_INTERVAL_NS}

    def operations(self, frames, clock, congestion):
        """Yield (frame, ends_operation) forever, one operation (with its ACKs and CNPs) after another.

        Looks one frame ahead so that the last frame of an operation can say so; a frame is therefore built
        one emission before it is written, which shifts the congestion clock by one frame time.
        """
        while True:
            if self.rng.random() < 0.75:
                op = self._write(frames, clock, congestion)
            else:
                op = self._read(frames, clock, congestion)
            prev = next(op)  # every operation has at least one frame
            for frame in op:
                yield prev, False
                prev = frame
            yield prev, True

    def _payload(self, psn):
        return self.payloads[psn % len(self.payloads)]

    def _tos(self, congestion):
        return (DSCP_DATA << 2) | (CE if congestion() else ECT0)

    def _data(self, frames, clock, to_responder, tos, **kw):
        """A data frame, then a CNP back when it arrived CE-marked (rate-limited per QP and direction)."""
        src, dst = (self.req, self.resp) if to_responder else (self.resp, self.req)
        sport = self.req_port if to_responder else self.resp_port
        dqpn = self.resp_qpn if to_responder else self.req_qpn
        frame = frames.build(src, dst, sport, tos, dqpn=dqpn, **kw)
        if tos & 0b11 == CE and clock() - self.last_cnp_ns[to_responder] >= CNP_INTERVAL_NS:
            self.last_cnp_ns[to_responder] = clock()
            # the notification point (receiver of the marked packet) tells the sender's QP to slow down
            sender_qpn = self.req_qpn if to_responder else self.resp_qpn
            np_port = self.resp_port if to_responder else self.req_port
            self.pending.append([self.rng.randrange(1, 4), "cnp", dst, src, np_port, sender_qpn])
        return frame

    def _drain(self, frames):
        """Frames owed by the far side whose delay (in this QP's packets) has run out."""
        out = []
        for item in list(self.pending):
            item[0] -= 1
            if item[0] <= 0:
                self.pending.remove(item)
                kind = item[1]
                if kind == "ack":
                    _, _, psn, msn = item
                    out.append(frames.build(self.resp, self.req, self.resp_port, (DSCP_DATA << 2) | ECT0,
                                            ACKNOWLEDGE, self.req_qpn, psn,
                                            ext=struct.pack("!I", (AETH_ACK_NO_CREDIT << 24) | msn)))
                else:
                    _, _, src, dst, sport, qpn = item
                    out.append(frames.build(src, dst, sport, DSCP_CNP << 2, CNP, qpn, 0, becn=True,
                                            ext=bytes(16)))
        return out

    def _write(self, frames, clock, congestion):
        pages = 1 if self.rng.random() < 0.1 else self.rng.randint(2, 256)
        length = pages * MTU_PAYLOAD
        va = self.va + self.rng.randrange(1 << 20) * MTU_PAYLOAD
        for i in range(pages):
            psn = self.psn
            self.psn = (self.psn + 1) % PSN_MOD
            last = i == pages - 1
            if pages == 1:
                op, ext = WRITE_ONLY, struct.pack("!QII", va, self.rkey, length)
            elif i == 0:
                op, ext = WRITE_FIRST, struct.pack("!QII", va, self.rkey, length)
            else:
                op, ext = (WRITE_LAST if last else WRITE_MIDDLE), b""
            ackreq = last or (i + 1) % ACK_EVERY == 0
            yield self._data(frames, clock, True, self._tos(congestion), opcode=op, psn=psn, ackreq=ackreq,
                             ext=ext, payload=self._payload(psn))
            if last:
                self.msn = (self.msn + 1) % PSN_MOD
            if ackreq:  # coalesced: one ACK for every ACK_EVERY packets or message end
                self.pending.append([self.rng.randrange(1, 4), "ack", psn, self.msn])
            yield from self._drain(frames)
        yield from self._flush(frames)

    def _read(self, frames, clock, congestion):
        pages = 1 if self.rng.random() < 0.15 else self.rng.randint(2, 64)
        length = pages * MTU_PAYLOAD
        va = self.va + self.rng.randrange(1 << 20) * MTU_PAYLOAD
        first_psn = self.psn
        self.psn = (self.psn + pages) % PSN_MOD
        yield frames.build(self.req, self.resp, self.req_port, (DSCP_DATA << 2) | ECT0, READ_REQUEST,
                           self.resp_qpn, first_psn, ackreq=True,
                           ext=struct.pack("!QII", va, self.rkey, length))
        self.msn = (self.msn + 1) % PSN_MOD
        aeth = struct.pack("!I", (AETH_ACK_NO_CREDIT << 24) | self.msn)
        for i in range(pages):
            psn = (first_psn + i) % PSN_MOD
            last = i == pages - 1
            if pages == 1:
                op, ext = READ_RESP_ONLY, aeth
            elif i == 0:
                op, ext = READ_RESP_FIRST, aeth
            elif last:
                op, ext = READ_RESP_LAST, aeth
            else:
                op, ext = READ_RESP_MIDDLE, b""
            yield self._data(frames, clock, False, self._tos(congestion), opcode=op, psn=psn, ext=ext,
                             payload=self._payload(psn))
            yield from self._drain(frames)
        yield from self._flush(frames)

    def _flush(self, frames):
        while self.pending:
            yield from self._drain(frames)


def build_qps(rng, n_qps, n_hosts, payloads):
    """Return n_qps queue pairs between n_hosts IPv4 hosts (a quarter tagged) and one IPv6 host pair."""
    v4 = [Endpoint(i + 1, False, 100 if i % 4 == 3 else None) for i in range(n_hosts)]
    v6 = [Endpoint(101, True, None), Endpoint(102, True, None)]
    qps = []
    for q in range(n_qps):
        if q >= n_qps - 2:  # the last two QPs run over IPv6
            a, b = (v6[0], v6[1]) if q % 2 else (v6[1], v6[0])
        else:
            a, b = rng.sample(v4, 2)
        start = PSN_MOD - 1000 if q == 0 else rng.randrange(PSN_MOD)  # QP 0 wraps its PSN early on
        qps.append(QueuePair(rng, a, b, 0x100 + 2 * q, 0x200 + 2 * q + 1, start, payloads))
    return qps


def generate(out_path, n_packets, seed, n_qps, n_hosts, gbps, snaplen):
    """Write the capture; return (packets, opcode counter, capture duration in ns)."""
    rng = random.Random(seed)
    payloads = [rng.randbytes(MTU_PAYLOAD) for _ in range(61)]  # prime count: varies with PSN
    frames = Frames()
    now_ns = [1_704_067_200 * 10**9]
    congested_until = [0]

    def clock():
        return now_ns[0]

    def congestion():
        # short episodes (about 20 us) start rarely; inside one a third of the data packets are CE-marked
        if now_ns[0] >= congested_until[0] and rng.random() < 2e-5:
            congested_until[0] = now_ns[0] + 20_000
        return now_ns[0] < congested_until[0] and rng.random() < 0.33

    qps = build_qps(rng, n_qps, n_hosts, payloads)
    streams = [qp.operations(frames, clock, congestion) for qp in qps]
    ns_per_byte = 8 / gbps
    written = 0
    with open(out_path, "wb", buffering=8 << 20) as f:
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, snaplen or 262144, 1))

        def emit(frame):
            sec, nsec = divmod(now_ns[0], 10**9)
            cap = frame if not snaplen else frame[:snaplen]
            f.write(struct.pack("<IIII", sec, nsec, len(cap), len(frame)))
            f.write(cap)
            now_ns[0] += int((len(frame) + 24) * ns_per_byte)  # + preamble, SFD, FCS and inter-frame gap
            if rng.random() < 0.01:
                now_ns[0] += rng.randrange(200, 5000)  # an idle moment on the link

        while written < n_packets:
            # interleave: a burst of 1..8 frames from one QP, as a NIC scheduler round-robins its QPs
            s = rng.choice(streams)
            for _ in range(rng.randint(1, 8)):
                emit(next(s)[0])
                written += 1
        # let every QP finish the operation it is in, so no message is cut in half
        for s in streams:
            written += finish(s, emit)
    duration = now_ns[0] - 1_704_067_200 * 10**9
    return written, frames.count, duration


def finish(stream, emit):
    """Emit frames from stream up to the end of the operation in progress; return how many."""
    n = 0
    while True:
        frame, ends_operation = next(stream)
        emit(frame)
        n += 1
        if ends_operation:
            return n


def frame_opcode(frame):
    off = 18 if frame[12:14] == b"\x81\x00" else 14
    ip_len = 40 if frame[off] >> 4 == 6 else 20
    return frame[off + ip_len + 8]


def check(seed):
    """Compare frames of every kind against scapy.contrib.roce and the ICRC of the real SoftRoCE packet."""
    from pathlib import Path
    from scapy.all import Ether, raw
    from scapy.contrib.roce import BTH

    real = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "roce" / "softroce_read_request.pcap"
    if real.exists():
        data = real.read_bytes()[40:]
        ip, udp, bth = bytearray(data[14:34]), bytearray(data[34:42]), bytearray(data[42:54])
        ip[1], ip[8], ip[10:12], udp[6:8], bth[4] = 0xFF, 0xFF, b"\xff\xff", b"\xff\xff", 0xFF
        mine = struct.pack("<I", zlib.crc32(data[54:-4], zlib.crc32(FF8 + ip + udp + bth)))
        print(f"SoftRoCE packet ICRC {data[-4:].hex()}, recomputed {mine.hex()}: "
              + ("match" if mine == data[-4:] else "MISMATCH"))
        if mine != data[-4:]:
            return 1
    else:
        print(f"skip: {real} not found")
    rng = random.Random(seed)
    payloads = [rng.randbytes(MTU_PAYLOAD) for _ in range(3)]
    frames = Frames()
    qps = build_qps(rng, 6, 4, payloads)
    seen, bad = Counter(), 0
    for qp in qps:
        s = qp.operations(frames, lambda: 10**12, lambda: rng.random() < 0.05)
        for _ in range(3000):
            frame = next(s)[0]
            key = (frame_opcode(frame), frame[12:14].hex())
            if seen[key] >= 3:
                continue
            seen[key] += 1
            p = Ether(frame)
            p[BTH].icrc = None  # scapy recomputes the ICRC; every other field stays as generated
            if p["UDP"].chksum:  # IPv6: recomputed; IPv4: 0 (absent) stays 0
                p["UDP"].chksum = None
            if "IP" in p:
                p["IP"].chksum = None
            if raw(p) != frame:
                bad += 1
                print(f"MISMATCH opcode {key[0]:#x} ethertype {key[1]}: {frame[-4:].hex()} vs {raw(p)[-4:].hex()}")
    print(f"scapy.contrib.roce: {sum(seen.values())} frames of {len(seen)} (opcode, ethertype) kinds compared, "
          f"{bad} mismatches")
    return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", help="output pcap (keep it outside the repository)")
    ap.add_argument("--packets", type=int, default=1_000_000, help="at least this many (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--qps", type=int, default=16, help="RC queue pairs (default 16, two of them IPv6)")
    ap.add_argument("--hosts", type=int, default=6, help="IPv4 hosts (default 6)")
    ap.add_argument("--gbps", type=float, default=100.0, help="link speed for timestamps (default 100)")
    ap.add_argument("--snaplen", type=int, default=0, help="captured bytes per frame; 0 keeps whole frames")
    ap.add_argument("--check", action="store_true", help="verify the ICRC and framing against scapy, then exit")
    args = ap.parse_args(argv)
    if args.check:
        return check(args.seed)
    if not args.out:
        ap.error("an output path is required (or --check)")
    if args.qps < 3 or args.hosts < 2:
        ap.error("need at least 3 QPs and 2 hosts")
    n, count, duration = generate(args.out, args.packets, args.seed, args.qps, args.hosts, args.gbps,
                                  args.snaplen)
    print(f"wrote {args.out}: {n:,} packets over {duration / 1e6:.3f} ms of packet time", file=sys.stderr)
    for op, c in sorted(count.items()):
        print(f"  {OPCODE_NAMES[op]:<28} {c:>9,}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
