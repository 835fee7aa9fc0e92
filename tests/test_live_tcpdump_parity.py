"""Live capture and tcpdump on the same interface at the same time, the tcpdump file replayed with
`flowtap replay`: the same flow records (keys and counters). Root only."""
from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest

from test_live_common import PY, REPO, Capture, VethPair, in_ns, live_skip_reason, read_flows, tcp_exchange

pytestmark = [pytest.mark.root, pytest.mark.skipif(live_skip_reason() is not None, reason=live_skip_reason() or "")]

KEY = ["src_ip", "dst_ip", "src_port", "dst_port", "protocol"]
COUNTERS = ["src_packets", "dst_packets", "src_bytes", "dst_bytes", "src_tcp_flags", "dst_tcp_flags",
            "icmp_type", "icmp_code", "flow_end_reason"]

UDP_BURST = r'''
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
for i in range(200):
    s.sendto(b"u" * (i % 900 + 1), (sys.argv[1], 7000 + i % 5))
'''


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")
def test_live_records_equal_replayed_tcpdump_records(tmp_path):
    live_out, pcap, replay_out = tmp_path / "live.arrows", tmp_path / "same.pcap", tmp_path / "replay.arrows"
    with VethPair() as p:
        # --immediate-mode: without it libpcap hands over packets a buffer block at a time, and the last
        # block (the UDP burst) could still be unread when tcpdump is stopped
        dump = subprocess.Popen(["ip", "netns", "exec", p.ns_a, "tcpdump", "-i", p.if_a, "-s", "0", "-U",
                                 "--immediate-mode", "-n", "-w", str(pcap)], stderr=subprocess.PIPE, text=True)
        try:
            assert "listening on" in dump.stderr.readline()
            with Capture(p.ns_a, [p.if_a], live_out) as cap:
                tcp_exchange(p, 200_000, 30_000, port=5301)
                tcp_exchange(p, 5_000, 90_000, port=5302, v6=True)
                in_ns(p.ns_a, PY, "-c", UDP_BURST, p.ip6_b)
                cap.stop()
        finally:
            time.sleep(0.3)
            dump.send_signal(signal.SIGINT)
            dump.communicate(timeout=30)
    subprocess.run([PY, "-m", "probe.cli", "replay", str(pcap), "-o", str(replay_out)], cwd=REPO, check=True,
                   capture_output=True)
    from dpi.writer import read_counters  # noqa: F401  (replay output is a valid flowtap file)
    live = read_flows(live_out)
    rep = read_flows(replay_out)

    def rows(t):
        # the live capture may have started a moment before tcpdump (or after): compare the flows the test
        # made, which both saw from their first packet to their last
        out = {}
        for r in t.to_pylist():
            if r["protocol"] in (6, 17) and (r["dst_port"] in (5301, 5302) or 7000 <= r["dst_port"] < 7005):
                out[tuple(r[k] for k in KEY)] = tuple(r[k] for k in COUNTERS)
        return out

    lr, rr = rows(live), rows(rep)
    assert len(lr) == 2 + 5
    assert lr == rr
