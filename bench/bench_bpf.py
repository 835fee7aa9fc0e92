"""Benchmarks of the live probe (root; BCC). Three parts, each printed as a table:

1. kernel: cost per packet of the BPF program through BPF_PROG_TEST_RUN, with the bare `return XDP_PASS`
   (ft_xdp_pass) measured in the same run as the baseline. Steady state (repeat R on one frame: an existing
   flow) for a TCP data packet (unclassified: 128-byte snippet; classified: none) and a RoCEv2 packet; a
   new-flow packet (each run a new 5-tuple, repeat 1, against the baseline also at repeat 1).
2. drain: records through the ring into the engine on one core: the ring is filled by test runs, then
   drained (ext/ft_ring.h) and metered (Engine.add) while timed.
3. live (--live): tcpreplay sends UDP frames at a fixed rate between two network namespaces; `flowtap
   capture` (xdp on the receiving end) reports what the kernel counted and what the meters saw.

    sudo .venv/bin/python bench/bench_bpf.py            # parts 1 and 2
    sudo .venv/bin/python bench/bench_bpf.py --live     # and 3 (needs tcpreplay)
    sudo .venv/bin/python bench/bench_bpf.py --ab 95c898a --breakdown --kernel-only  # A/B, parts cut out
    sudo .venv/bin/python bench/bench_bpf.py --clocks --no-kernel        # each part alone, the floor programs
    sudo .venv/bin/python bench/bench_bpf.py --no-kernel --live-fast     # live: BPF live-frames sender
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def frames():
    from scapy.all import IP, TCP, UDP, Ether, Raw
    from scapy.contrib.roce import BTH
    tcp = bytes(Ether() / IP(src="10.0.0.1", dst="10.0.0.2") /
                TCP(sport=40000, dport=443, flags="A", seq=1000, ack=2000,
                    options=[("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]) / Raw(b"x" * 1400))
    roce = bytes(Ether() / IP(src="10.0.1.1", dst="10.0.1.2") / UDP(sport=49152, dport=4791) /
                 BTH(opcode=0x04, dqpn=0x11, psn=7) / Raw(b"r" * 1024))
    return tcp, roce


class _RingSkipper:
    """Empties a probe's ring by moving its consumer position to the producer's (no parsing): the kernel
    benchmark measures the producer only, and an older revision's samples need not be readable."""

    def __init__(self, fd: int):
        import mmap
        page = mmap.PAGESIZE
        self._cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ, offset=page)

    def __call__(self):
        self._cons[0:8] = self._prod[0:8]

    def close(self):
        self._cons.close()
        self._prod.close()


def _old_bpf_dir(rev: str, into: Path) -> Path:
    """probe/bpf/ of git revision rev, extracted into a directory (the A side of an A/B run)."""
    for name in ("flowtap.bpf.c", "ft_live.h"):
        text = subprocess.run(["git", "show", f"{rev}:probe/bpf/{name}"], cwd=REPO, check=True,
                              capture_output=True, text=True).stdout
        (into / name).write_text(text)
    return into


# --breakdown: copies of this tree's program with one part cut out by a textual edit (the shipped source has no
# benchmark switches), so the difference to "this tree" in the same run is that part's cost.
BREAKDOWN = {
    "no clock read": [("s->smp.rec.ts_ns = bpf_ktime_get_ns();", "s->smp.rec.ts_ns = 1;")],
    "no flow maps": [("        struct ft_live_flow *f = 0;\n"
                      "        ft_u32 seen = ft_flow_update(&key, side == 1, &s->smp.rec, segs, l3_bytes, c, &f);\n\n"
                      "        snip = ft_snippet_len(&s->smp.rec, &key, seen, f);",
                      "        snip = 0;")],
    # flow_stats added to atomically on every CPU, also on the flow's owner CPU: what the plain adds there save
    "always atomic": [("    if (f->owner_cpu == cpu) {", "    if (0) {")],
    # the XDP entry ends after the fast parse, without the clock: the record's set-up and the parse alone
    "parse only": [("s->smp.rec.ts_ns = bpf_ktime_get_ns();", "s->smp.rec.ts_ns = 1;"),
                   ("        ft_account(ctx, s, 1, 1); /* the common frames: parsed here, no tail call */\n", "")],
}


def _edited_bpf_dir(edits, into: Path) -> Path:
    src = (REPO / "probe" / "bpf" / "flowtap.bpf.c").read_text()
    for old, new in edits:
        assert src.count(old) == 1, f"breakdown edit no longer matches the source: {old!r}"
        src = src.replace(old, new)
    (into / "flowtap.bpf.c").write_text(src)
    (into / "ft_live.h").write_text((REPO / "probe" / "bpf" / "ft_live.h").read_text())
    return into


ALL = 1 << 30  # a snippet budget no benchmark reaches


def bench_kernel(repeat: int, runs: int, ab_rev: str | None = None, no_records: bool = True,
                 breakdown: bool = False):
    """Returns (variant names, rows): each row (label, {variant: median ns}, baseline ns). Every run round
    measures the baseline and every variant back to back on the same frame, so all see the same load."""
    from probe.live import KEY_DTYPE, BpfConfig, Probe, test_run
    td = tempfile.TemporaryDirectory()
    variants = {}
    for rev in (ab_rev.split(",") if ab_rev else []):
        d = Path(td.name) / f"rev_{rev}"
        d.mkdir()
        variants[rev] = Probe(BpfConfig(ring_bytes=1 << 26, snippet_budget=ALL), bpf_dir=_old_bpf_dir(rev, d))
    # The steady-state rows repeat one flow 20,000 times: with the default snippet budget (16 payload packets)
    # all but the first would go without a snippet and without the `classified` lookup. Every variant but
    # "budget 16" therefore lifts the budget, so that its rows measure a flow still within it.
    variants["this tree"] = Probe(BpfConfig(ring_bytes=1 << 26, snippet_budget=ALL))
    variants["budget 16"] = Probe(BpfConfig(ring_bytes=1 << 26))
    if no_records:
        variants["no ring record"] = Probe(BpfConfig(ring_bytes=1 << 26, want_records=False, snippet_budget=ALL))
    if breakdown:
        for name, edits in BREAKDOWN.items():
            d = Path(td.name) / name.replace(" ", "_")
            d.mkdir()
            variants[name] = Probe(BpfConfig(ring_bytes=1 << 26, snippet_budget=ALL), bpf_dir=_edited_bpf_dir(edits, d))
    skips = {k: _RingSkipper(p.ring_fd) for k, p in variants.items()}
    # One CPU for the whole run, as RSS keeps a flow's packets on one CPU: the flow's entry is created and
    # updated on the same CPU (its owner's plain adds; ft_live.h struct ft_live_flow).
    saved_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {ctypes.CDLL(None).sched_getcpu()})
    base = variants["this tree"].fd("ft_xdp_pass")

    def drain():
        for sk in skips.values():
            sk()

    def measure(frame, rep, rounds):
        vals = {k: [] for k in variants}
        bvals = []
        for _ in range(rounds):
            bvals.append(test_run(base, frame, rep)[1])
            for k, p in variants.items():
                vals[k].append(test_run(p.fd("ft_xdp"), frame, rep)[1])
            drain()
        return {k: (statistics.median(v), min(v)) for k, v in vals.items()}, statistics.median(bvals)

    tcp, roce = frames()
    out = []
    for p in variants.values():  # create the flows first: steady state is an existing flow
        test_run(p.fd("ft_xdp"), tcp)
        test_run(p.fd("ft_xdp"), roce)
    drain()
    for label, frame in (("TCP data 1400 B, unclassified (128 B snippet)", tcp), ("RoCEv2 RC SEND only 1024 B", roce)):
        v, b = measure(frame, repeat, runs)
        out.append((label, v, b))
    # the same TCP flow once DPI has marked it classified: no snippet
    key = np.zeros(1, KEY_DTYPE)
    key["addr_a"] = np.frombuffer(bytes([10, 0, 0, 1]) + bytes(12), "V16")
    key["addr_b"] = np.frombuffer(bytes([10, 0, 0, 2]) + bytes(12), "V16")
    key["port_a"], key["port_b"], key["ip_version"], key["proto"] = 40000, 443, 4, 6
    for p in variants.values():
        p.mark_classified(key)
    v, b = measure(tcp, repeat, runs)
    out.append(("TCP data 1400 B, classified (no snippet)", v, b))
    # new flows: one run per distinct 5-tuple
    from scapy.all import IP, TCP, Ether
    n = 2000
    fresh = [bytes(Ether() / IP(src="10.2.%d.%d" % (i >> 8, i & 255), dst="10.3.0.1") /
                   TCP(sport=1024 + i, dport=80, flags="S")) for i in range(n)]
    news = {k: [] for k in variants}
    bases = []
    for f in fresh:
        bases.append(test_run(base, f, 1)[1])
        for k, p in variants.items():
            news[k].append(test_run(p.fd("ft_xdp"), f, 1)[1])
    drain()
    out.append(("new-flow TCP SYN (repeat 1: includes the timer read)",
                {k: (statistics.median(v), min(v)) for k, v in news.items()}, statistics.median(bases)))
    os.sched_setaffinity(0, saved_cpus)
    counters = variants["this tree"].counters()
    for sk in skips.values():
        sk.close()
    for p in variants.values():
        p.close()
    td.cleanup()
    assert counters["ring_full"] == 0 and counters["tail_call_failed"] == 0, counters
    return list(variants), out


def bench_drain(records: int) -> tuple[float, float, int]:
    """Mpps of ring -> PKT_DTYPE batch (drain alone), and of ring -> engine (drain + Engine.add)."""
    from dpi._reader import PKT_DTYPE
    from dpi.engine import Engine, EngineConfig
    from probe.live import BpfConfig, Probe, test_run
    tcp, _ = frames()
    probe = Probe(BpfConfig(ring_bytes=1 << 27))
    key_frames = []
    from scapy.all import IP, TCP, Ether, Raw
    for i in range(64):  # 64 flows, so the engine does real table work
        key_frames.append(bytes(Ether() / IP(src="10.4.0.%d" % i, dst="10.5.0.1") /
                                TCP(sport=2000 + i, dport=443, flags="A") / Raw(b"y" * 200)))
    ring = probe.ring_reader()
    batch = 16384
    pk = np.zeros(batch, PKT_DTYPE)
    sn = np.zeros(batch, np.uint16)
    data = np.zeros(batch * 128, np.uint8)
    results = []
    for with_engine in (False, True):
        per = records // len(key_frames)
        for f in key_frames:
            test_run(probe.fd("ft_xdp"), f, per)
        engine = Engine(EngineConfig(observer_host="bench"))
        got = 0
        t0 = time.perf_counter()
        while True:
            n, _u, _more = ring.drain(pk, data, sn, 0)
            if not n:
                break
            got += n
            if with_engine:
                for _b in engine.add(pk[:n]):
                    pass
        dt = time.perf_counter() - t0
        results.append(got / dt / 1e6)
    full = probe.counters()["ring_full"]
    ring.close()
    probe.close()
    return results[0], results[1], full


SENDER_PCAP_PKTS = 10000


def bench_live(rates: list[int], seconds: float) -> list[dict]:
    sys.path.insert(0, str(REPO / "tests"))
    from scapy.all import IP, UDP, Ether, Raw, wrpcap
    from test_live_common import VethPair, in_ns
    rows = []
    with tempfile.TemporaryDirectory() as td, VethPair() as p:
        mac_b = json.loads(in_ns(p.ns_b, "ip", "-j", "link", "show", p.if_b).stdout)[0]["address"]
        pkts = [Ether(dst=mac_b) / IP(src="10.6.%d.%d" % (i >> 8 & 255, i & 255), dst="10.7.0.1") /
                UDP(sport=1000 + i % 50000, dport=9) / Raw(b"z" * 18) for i in range(SENDER_PCAP_PKTS)]
        pcap = Path(td) / "udp.pcap"
        wrpcap(str(pcap), pkts)
        for rate in rates:
            out = Path(td) / f"r{rate}.arrows"
            cap = subprocess.Popen(["ip", "netns", "exec", p.ns_b, sys.executable, "-m", "probe.cli", "capture",
                                    "-i", p.if_b, "--mode", "xdp", "--json", "-o", str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
            cap.stderr.readline()
            loops = max(1, int((rate or 500_000) * seconds / SENDER_PCAP_PKTS))
            speed = ["--topspeed"] if not rate else ["--pps", str(rate)]
            t0 = time.time()
            in_ns(p.ns_a, "tcpreplay", "-q", "-i", p.if_a, *speed, "--loop", str(loops), "--preload-pcap",
                  str(pcap), check=False)
            sent_s = time.time() - t0
            time.sleep(0.5)
            cap.send_signal(signal.SIGINT)  # after the sender is done: the capture saw the whole run
            o, e = cap.communicate(timeout=120)
            live = json.loads(o)["counters"]["live"]
            rows.append({"target_pps": rate or "top speed", "sent": loops * SENDER_PCAP_PKTS,
                         "achieved_mpps": round(loops * SENDER_PCAP_PKTS / sent_s / 1e6, 3),
                         "kernel_packets": live["kernel_packets"], "meters_saw": live["meters_packets_seen"],
                         "ring_full_drops": live["ring_full_drops"]})
    return rows


# ---- live, fast sender: BPF_PROG_TEST_RUN with BPF_F_TEST_XDP_LIVE_FRAMES in namespace A ----------------
# The kernel runs a small XDP program returning XDP_TX on a frame `repeat` times as if it had arrived on A's
# veth; XDP_TX becomes a real transmission out of that veth, so the frames reach B's veth (and the probe's XDP
# program there) without a socket, a qdisc or a pcap reader in the way. Each call costs ~30 ms of set-up here
# (the kernel builds a page pool), so the rate is not paced by calls but by a busy loop of `delay` iterations
# in the sender's program per frame. The veth delivers to B in the sender's softirq on the same CPU, so B's
# receive path (the probe included) is part of each frame's cost, and the rate reached at delay 0 is what one
# CPU sustains; the capture process (ring -> engine) runs on the other CPU.
SENDER = r"""
import ctypes, json, socket, struct, sys, time
from bcc import BPF
ifname, frame, delay, total = sys.argv[1], bytes.fromhex(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
b = BPF(text="int tx(struct xdp_md *c) { for (int i = 0; i < %d; i++) asm volatile(\"\"); return XDP_TX; }" % delay)
fd = b.load_func(b"tx", BPF.XDP).fd
libc = ctypes.CDLL(None, use_errno=True)
data = ctypes.create_string_buffer(frame, len(frame))
ctx = ctypes.create_string_buffer(struct.pack("6I", 0, len(frame), 0, socket.if_nametoindex(ifname), 0, 0), 24)
# prog_fd retval size_in size_out data_in data_out repeat duration ctx_size_in ctx_size_out ctx_in ctx_out
# flags (BPF_F_TEST_XDP_LIVE_FRAMES) cpu batch_size
attr = ctypes.create_string_buffer(struct.pack("IIIIQQIIIIQQIII", fd, 0, len(frame), 0, ctypes.addressof(data),
                                               0, total, 0, 24, 0, ctypes.addressof(ctx), 0, 2, 0, 0), 80)
t0 = time.perf_counter()
if libc.syscall(321, 10, attr, 80) < 0:
    raise OSError(ctypes.get_errno(), "BPF_PROG_TEST_RUN live frames")
print(json.dumps({"sent": total, "seconds": time.perf_counter() - t0}))
"""


def bench_live_fast(delays: list[int], seconds: float) -> list[dict]:
    """Capture (xdp, native on veth B) while the live-frames sender in A sends one 64-byte UDP frame over and
    over with each per-frame delay. Returns per run what was sent and how fast, what the kernel hook counted
    and what the meters saw, the ring's drops and the receiving veth's own drop counter."""
    sys.path.insert(0, str(REPO / "tests"))
    from scapy.all import IP, UDP, Ether, Raw
    from test_live_common import VethPair, in_ns
    rows = []
    # to a MAC address B does not have: after the probe, B's stack drops the frame at once (PACKET_OTHERHOST)
    frame = bytes(Ether(dst="02:00:00:00:00:02") / IP(src="10.6.0.1", dst="10.7.0.1") / UDP(sport=1000, dport=9) /
                  Raw(b"z" * 18))
    with tempfile.TemporaryDirectory() as td, VethPair() as p:
        total = 100_000
        for delay in delays:
            out = Path(td) / f"d{delay}.arrows"
            cap = subprocess.Popen(["ip", "netns", "exec", p.ns_b, sys.executable, "-m", "probe.cli", "capture",
                                    "-i", p.if_b, "--mode", "xdp", "--xdp-mode", "native", "--json", "-o",
                                    str(out)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            cap.stderr.readline()
            rx0 = json.loads(in_ns(p.ns_b, "ip", "-j", "-s", "link", "show", p.if_b).stdout)[0]["stats64"]["rx"]
            r = in_ns(p.ns_a, sys.executable, "-c", SENDER, p.if_a, frame.hex(), str(delay), str(total), check=False)
            if r.returncode != 0:
                cap.send_signal(signal.SIGINT)
                cap.communicate(timeout=60)
                raise RuntimeError(f"sender failed: {r.stderr[-2000:]}")
            snd = json.loads(r.stdout.strip().splitlines()[-1])
            time.sleep(0.5)
            cap.send_signal(signal.SIGINT)
            o, e = cap.communicate(timeout=120)
            live = json.loads(o)["counters"]["live"]
            rx = json.loads(in_ns(p.ns_b, "ip", "-j", "-s", "link", "show", p.if_b).stdout)[0]["stats64"]["rx"]
            rows.append({"delay": delay, "sent": snd["sent"],
                         "achieved_mpps": round(snd["sent"] / snd["seconds"] / 1e6, 3),
                         "kernel_packets": live["kernel_packets"], "meters_saw": live["meters_packets_seen"],
                         "ring_full_drops": live["ring_full_drops"],
                         "veth_rx_dropped": rx.get("dropped", 0) - rx0.get("dropped", 0)})
            # next run long enough to take `seconds` at this rate
            total = max(100_000, min(int(snd["sent"] / snd["seconds"] * seconds), 50_000_000))
    return rows


# ---- clocks, ring records and map lookups alone (--clocks): what each part costs here, all in one run ---------
# The "floor" programs do what issue 6 requires of every packet, and nothing else: one precise clock read (the
# record's time), one lookup and add in a bounded hash map (exact per-flow counters in the kernel) and one ring
# record; no parse, no counters, no snippet. floor_probe has the shipped layouts (48-byte struct ft_live_key,
# 144-byte TCP record); floor_small a 16-byte key and a 64-byte record, smaller than any layout that can carry
# IPv6 and the TCP fields the meters need; floor_batch28 the shipped layouts with 28 records copied into a per-CPU
# buffer and sent as one ring sample (what batching would save). Their cost bounds the probe's from below.
MICRO = r"""
#include <uapi/linux/bpf.h>
static __u64 (*ft_tai_ns)(void) = (void *)208;    /* BPF_FUNC_ktime_get_tai_ns: not in BCC 0.26's helpers.h */
static __u64 (*ft_boot_ns)(void) = (void *)125;   /* BPF_FUNC_ktime_get_boot_ns */
static __u64 (*ft_coarse_ns)(void) = (void *)160; /* BPF_FUNC_ktime_get_coarse_ns */
struct blob { __u64 w[64]; };                     /* 8-byte aligned: BPF copies it a word at a time */
struct key48 { __u64 w[6]; };                     /* sizeof(struct ft_live_key) */
struct key16 { __u64 w[2]; };
struct flow { __u64 packets[2]; __u64 bytes[2]; __u64 first_ns; __u64 last_ns; };
struct batch { __u32 used; __u32 n; __u8 d[4096] __attribute__((aligned(8))); };
BPF_PERCPU_ARRAY(sink, __u64, 1);
BPF_PERCPU_ARRAY(scr, struct blob, 1);
BPF_PERCPU_ARRAY(bat, struct batch, 1);
BPF_TABLE("hash", struct key48, struct flow, flows48, 65536);
BPF_TABLE("hash", struct key16, struct flow, flows16, 65536);
BPF_RINGBUF_OUTPUT(rb, (1 << 26) / 4096);
static __always_inline int put(__u64 v) { __u32 z = 0; __u64 *s = sink.lookup(&z); if (s) *s += v; return XDP_PASS; }
static __always_inline int out(__u32 len) { __u32 z = 0; struct blob *s = scr.lookup(&z);
    if (s && len <= 512) rb.ringbuf_output(s, len, BPF_RB_NO_WAKEUP); return XDP_PASS; }
static __always_inline void rb_out(void *src, __u32 len) { rb.ringbuf_output(src, len, BPF_RB_NO_WAKEUP); }
/* A fixed TCP 4-tuple's counters, as the steady-state rows of part 1: lookup and two adds, or the entry created
 * (first run only: bench_micro runs every program once before measuring). Returns the entry, or NULL. */
static __always_inline struct flow *add48(void) { struct key48 k = {}; struct flow *f;
    k.w[0] = 0x0100000a; k.w[2] = 0x0200000a; k.w[4] = 0x0604bb01409c;
    f = flows48.lookup(&k);
    if (!f) { struct flow init = {}; flows48.insert(&k, &init); return 0; }
    f->packets[0] += 1; f->bytes[0] += 1440; return f; }
static __always_inline struct flow *add16(void) { struct key16 k = {}; struct flow *f;
    k.w[0] = 0x0200000a0100000aULL; k.w[1] = 0x0604bb01409c;
    f = flows16.lookup(&k);
    if (!f) { struct flow init = {}; flows16.insert(&k, &init); return 0; }
    f->packets[0] += 1; f->bytes[0] += 1440; return f; }
/* a floor program's record: its time, and its flow's counters with the last-seen time; NULL on the first run */
static __always_inline struct blob *stamp(int small) { __u32 z = 0; struct blob *r = scr.lookup(&z); struct flow *f;
    if (!r) return 0;
    r->w[0] = bpf_ktime_get_ns();
    f = small ? add16() : add48();
    if (!f) return 0;
    f->last_ns = r->w[0];
    return r; }
int m_pass(struct xdp_md *c) { return XDP_PASS; }
int m_store_const(struct xdp_md *c) { return put(1); }
int m_ktime_get_ns(struct xdp_md *c) { return put(bpf_ktime_get_ns()); }
int m_ktime_get_boot_ns(struct xdp_md *c) { return put(ft_boot_ns()); }
int m_ktime_get_tai_ns(struct xdp_md *c) { return put(ft_tai_ns()); }
int m_ktime_get_coarse_ns(struct xdp_md *c) { return put(ft_coarse_ns()); }
int m_ringbuf_16(struct xdp_md *c) { return out(16); }
int m_ringbuf_64(struct xdp_md *c) { return out(64); }
int m_ringbuf_144(struct xdp_md *c) { return out(144); }
int m_ringbuf_272(struct xdp_md *c) { return out(272); }
int m_ringbuf_400(struct xdp_md *c) { return out(400); }
int m_hash48(struct xdp_md *c) { add48(); return XDP_PASS; }
int m_hash16(struct xdp_md *c) { add16(); return XDP_PASS; }
int m_floor_probe(struct xdp_md *c) { struct blob *r = stamp(0); if (r) rb_out(r, 144); return XDP_PASS; }
int m_floor_small(struct xdp_md *c) { struct blob *r = stamp(1); if (r) rb_out(r, 64); return XDP_PASS; }
int m_floor_batch28(struct xdp_md *c) { __u32 z = 0; struct blob *r = stamp(0); struct batch *b = bat.lookup(&z);
    __u32 u;
    if (!r || !b) return XDP_PASS;
    u = b->used;  /* in 8-byte words, so that the copy goes a word at a time */
    if (u > 512 - 18) u = 0;
    __builtin_memcpy((__u64 *)b->d + u, r->w, 144);
    u += 18;
    b->n += 1;
    if (b->n >= 28) { if (u <= 512) rb_out(&b->d[0], u * 8); u = 0; b->n = 0; }
    b->used = u;
    return XDP_PASS; }
"""

MICRO_NAMES = ("pass", "store_const", "ktime_get_ns", "ktime_get_boot_ns", "ktime_get_tai_ns", "ktime_get_coarse_ns",
               "ringbuf_16", "ringbuf_64", "ringbuf_144", "ringbuf_272", "ringbuf_400", "hash48", "hash16",
               "floor_probe", "floor_small", "floor_batch28")


def bench_micro(runs: int) -> list[tuple[str, float, float]]:
    """ns per run of each MICRO program (median, minimum), interleaved rounds of 50,000 runs on one CPU."""
    from bcc import BPF

    from probe.live import test_run
    b = BPF(text=MICRO)
    fds = {n: b.load_func(f"m_{n}".encode(), BPF.XDP).fd for n in MICRO_NAMES}
    skip = _RingSkipper(b.get_table(b"rb").map_fd)
    saved_cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {ctypes.CDLL(None).sched_getcpu()})  # the flow entries' CPU, as RSS keeps it
    for fd in fds.values():  # create the map entries: the rows measure an existing flow
        test_run(fd, bytes(64), 1)
    skip()
    res = {n: [] for n in MICRO_NAMES}
    for _ in range(runs):
        for n in MICRO_NAMES:
            res[n].append(test_run(fds[n], bytes(64), 50_000)[1])
            skip()
    os.sched_setaffinity(0, saved_cpus)
    skip.close()
    b.cleanup()
    return [(n, statistics.median(v), min(v)) for n, v in res.items()]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--live", action="store_true")
    ap.add_argument("--ab", metavar="REV[,REV]", help="also load probe/bpf/ of these git revisions, measured in the same run")
    ap.add_argument("--no-split", action="store_true", help="skip the variant without ring records")
    ap.add_argument("--kernel-only", action="store_true")
    ap.add_argument("--clocks", action="store_true", help="first: clock helpers, ring outputs, map lookups "
                    "alone, and the floor programs (a clock read, a map lookup and a ring record; nothing else)")
    ap.add_argument("--no-kernel", action="store_true", help="skip parts 1 and 2 (live parts only)")
    ap.add_argument("--live-fast", action="store_true", help="live part with the BPF live-frames sender")
    ap.add_argument("--delays", default="0,0,300,1000,3000",
                    help="--live-fast: busy-loop iterations per frame in the sender (0: top speed; the first run "
                         "only calibrates the size of the next)")
    ap.add_argument("--breakdown", action="store_true", help="also this tree without the clock / the flow maps")
    ap.add_argument("--rates", default="100000,250000,500000,0", help="pps list for --live; 0 = top speed")
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_bpf: needs root (BPF)")
    if a.clocks:
        print(f"# parts alone and floor programs (bench_bpf.py MICRO): ns per run, BPF_PROG_TEST_RUN median / min of {a.runs} rounds x 50,000; "
              f"load {os.getloadavg()[0]:.2f}")
        for name, med, mn in bench_micro(a.runs):
            print(f"{name:<22} {med:6.0f} / {mn:.0f}")
        print()
    if not a.no_kernel:
        print(f"# kernel: ns per packet, BPF_PROG_TEST_RUN median of {a.runs} runs x {a.repeat} repeats, XDP; "
              f"load {os.getloadavg()[0]:.2f}")
        names, rows = bench_kernel(a.repeat, a.runs, a.ab, not a.no_split, a.breakdown)
        print("  (each cell: median / minimum; on a shared VM the minimum is the steadier figure)")
        print(f"{'packet':<55} " + " ".join(f"{n[:16]:>16}" for n in names) + f" {'XDP_PASS':>9}")
        for label, v, b in rows:
            print(f"{label:<55} " + " ".join(f"{v[n][0]:>10.0f} / {v[n][1]:<3.0f}" for n in names) + f" {b:>9.0f}")
        if a.kernel_only:
            return
        d, e, full = bench_drain(a.records)
        print(f"\n# drain: {a.records:,} records of 200-byte TCP payloads (snippet 128 B) on one core")
        print(f"ring -> PKT_DTYPE batches      {d:6.2f} Mpps")
        print(f"ring -> batches -> Engine.add  {e:6.2f} Mpps   (ring-full drops while filling: {full})")
    if a.live_fast:
        delays = [int(x) for x in a.delays.split(",")]
        print(f"\n# live: BPF_PROG_TEST_RUN live frames (XDP_TX) in ns A -> veth -> ns B, flowtap capture --mode xdp "
              f"(native) on B, one 64-byte UDP frame; load {os.getloadavg()[0]:.2f}")
        print(f"{'delay':>6} {'achieved Mpps':>14} {'sent':>10} {'kernel saw':>11} {'meters saw':>11} "
              f"{'ring drops':>11} {'veth rx drop':>13}")
        for r in bench_live_fast(delays, a.seconds):
            print(f"{r['delay']:>6} {r['achieved_mpps']:>14} {r['sent']:>10} {r['kernel_packets']:>11} "
                  f"{r['meters_saw']:>11} {r['ring_full_drops']:>11} {r['veth_rx_dropped']:>13}")
    if a.live:
        if not shutil.which("tcpreplay"):
            sys.exit("bench_bpf: --live needs tcpreplay (apt-get install tcpreplay)")
        rates = [int(x) for x in a.rates.split(",")]
        print(f"\n# live: tcpreplay UDP 64-byte frames ns A -> ns B over veth, flowtap capture --mode xdp on B")
        print(f"{'target':>10} {'achieved Mpps':>14} {'sent':>10} {'kernel saw':>11} {'meters saw':>11} "
              f"{'ring drops':>11}")
        for r in bench_live(rates, a.seconds):
            print(f"{r['target_pps']!s:>10} {r['achieved_mpps']:>14} {r['sent']:>10} {r['kernel_packets']:>11} "
                  f"{r['meters_saw']:>11} {r['ring_full_drops']:>11}")


if __name__ == "__main__":
    main()
