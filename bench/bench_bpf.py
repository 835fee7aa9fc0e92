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


def _median_ns(fd, frame, repeat, runs, drain):
    from probe.live import test_run
    vals = []
    for _ in range(runs):
        vals.append(test_run(fd, frame, repeat)[1])
        drain()
    return statistics.median(vals)


def bench_kernel(repeat: int, runs: int) -> list[tuple[str, float, float]]:
    from dpi._reader import PKT_DTYPE
    from probe.live import KEY_DTYPE, BpfConfig, Probe, test_run
    probe = Probe(BpfConfig(ring_bytes=1 << 26))
    ring = probe.ring_reader()
    pk = np.zeros(1 << 16, PKT_DTYPE)
    sn = np.zeros(1 << 16, np.uint16)
    data = np.zeros((1 << 16) * 128, np.uint8)

    def drain():
        while ring.drain(pk, data, sn, 0)[2] or ring.pending_bytes():
            pass

    tcp, roce = frames()
    xdp, base = probe.fd("ft_xdp"), probe.fd("ft_xdp_pass")
    out = []
    test_run(xdp, tcp)  # create the flows first: steady state is an existing flow
    test_run(xdp, roce)
    drain()
    for label, frame in (("TCP data 1400 B, unclassified (128 B snippet)", tcp), ("RoCEv2 RC SEND only 1024 B", roce)):
        b = _median_ns(base, frame, repeat, runs, drain)
        p = _median_ns(xdp, frame, repeat, runs, drain)
        out.append((label, p, b))
    # the same TCP flow once DPI has marked it classified: no snippet
    key = np.zeros(1, KEY_DTYPE)
    key["addr_a"] = np.frombuffer(bytes([10, 0, 0, 1]) + bytes(12), "V16")
    key["addr_b"] = np.frombuffer(bytes([10, 0, 0, 2]) + bytes(12), "V16")
    key["port_a"], key["port_b"], key["ip_version"], key["proto"] = 40000, 443, 4, 6
    probe.mark_classified(key)
    b = _median_ns(base, tcp, repeat, runs, drain)
    p = _median_ns(xdp, tcp, repeat, runs, drain)
    out.append(("TCP data 1400 B, classified (no snippet)", p, b))
    # new flows: one run per distinct 5-tuple
    from scapy.all import IP, TCP, Ether
    n = 2000
    fresh = [bytes(Ether() / IP(src="10.2.%d.%d" % (i >> 8, i & 255), dst="10.3.0.1") /
                   TCP(sport=1024 + i, dport=80, flags="S")) for i in range(n)]
    news, bases = [], []
    for f in fresh:
        news.append(test_run(xdp, f, 1)[1])
        bases.append(test_run(base, f, 1)[1])
    drain()
    out.append(("new-flow TCP SYN (repeat 1: includes the timer read)", statistics.median(news),
                statistics.median(bases)))
    counters = probe.counters()
    ring.close()
    probe.close()
    assert counters["ring_full"] == 0 and counters["tail_call_failed"] == 0, counters
    return out


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--records", type=int, default=400_000)
    ap.add_argument("--live", action="store_true")
    ap.add_argument("--rates", default="100000,250000,500000,0", help="pps list for --live; 0 = top speed")
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_bpf: needs root (BPF)")
    print(f"# kernel: ns per packet, BPF_PROG_TEST_RUN median of {a.runs} runs x {a.repeat} repeats, XDP")
    print(f"{'packet':<55} {'probe ns':>9} {'XDP_PASS ns':>12} {'probe - base':>13}")
    for label, p, b in bench_kernel(a.repeat, a.runs):
        print(f"{label:<55} {p:>9.0f} {b:>12.0f} {p - b:>13.0f}")
    d, e, full = bench_drain(a.records)
    print(f"\n# drain: {a.records:,} records of 200-byte TCP payloads (snippet 128 B) on one core")
    print(f"ring -> PKT_DTYPE batches      {d:6.2f} Mpps")
    print(f"ring -> batches -> Engine.add  {e:6.2f} Mpps   (ring-full drops while filling: {full})")
    if a.live:
        if not shutil.which("tcpreplay"):
            sys.exit("bench_bpf: --live needs tcpreplay (apt-get install tcpreplay)")
        rates = [int(x) for x in a.rates.split(",")]
        print(f"\n# live: tcpreplay UDP 64-byte frames ns A -> ns B over veth, flowtap capture --mode xdp on B")
        print(f"{'target':>10} {'achieved Mpps':>14} {'sent':>10} {'kernel saw':>11} {'meters saw':>11} {'ring drops':>11}")
        for r in bench_live(rates, a.seconds):
            print(f"{r['target_pps']!s:>10} {r['achieved_mpps']:>14} {r['sent']:>10} {r['kernel_packets']:>11} "
                  f"{r['meters_saw']:>11} {r['ring_full_drops']:>11}")


if __name__ == "__main__":
    main()
