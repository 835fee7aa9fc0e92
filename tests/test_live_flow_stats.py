"""The kernel's exact per-flow counters (flow_stats) when one flow's packets arrive on several CPUs (root only).

The CPU that created a flow's entry adds with plain adds to its own counters, every other CPU atomically to
the shared ones (probe/bpf/ft_live.h struct ft_live_flow); the totals must be exact either way. The test pins
itself to each CPU in turn and runs the XDP program there (BPF_PROG_TEST_RUN runs on the calling CPU)."""
from __future__ import annotations

import os

import pytest

from test_live_common import live_skip_reason

pytestmark = [pytest.mark.root, pytest.mark.skipif(live_skip_reason() is not None,
                                                   reason=live_skip_reason() or "")]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to run on")
def test_flow_counters_exact_across_cpus():
    from scapy.all import IP, TCP, Ether, Raw

    from probe.live import BpfConfig, Probe, test_run
    cpus = sorted(os.sched_getaffinity(0))[:2]
    # a -> b: 10.8.0.1:1000 -> 10.8.0.2:2000 (a sorts first); b -> a the reply; IP bytes by arithmetic
    fwd = bytes(Ether() / IP(src="10.8.0.1", dst="10.8.0.2") / TCP(sport=1000, dport=2000, flags="A") / Raw(b"f" * 60))
    rev = bytes(Ether() / IP(src="10.8.0.2", dst="10.8.0.1") / TCP(sport=2000, dport=1000, flags="A") / Raw(b"r" * 7))
    fwd_ip, rev_ip = 20 + 20 + 60, 20 + 20 + 7
    probe = Probe(BpfConfig(ring_bytes=1 << 22))
    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpus[0]})
        test_run(probe.fd("ft_xdp"), fwd, 5)       # creates the entry: cpus[0] owns it
        test_run(probe.fd("ft_tc_ingress"), rev, 3)
        os.sched_setaffinity(0, {cpus[1]})
        test_run(probe.fd("ft_xdp"), fwd, 7)
        test_run(probe.fd("ft_tc_ingress"), rev, 11)
        os.sched_setaffinity(0, {cpus[0]})
        test_run(probe.fd("ft_xdp"), fwd, 2)
        rows = probe.kernel_flows()
        assert len(rows) == 1
        f = rows[0]["flow"]
        assert int(f["owner_cpu"]) == cpus[0]
        assert f["own_packets"].tolist() == [5 + 2, 3] and f["own_bytes"].tolist() == [7 * fwd_ip, 3 * rev_ip]
        assert f["packets"].tolist() == [14, 14] and f["bytes"].tolist() == [14 * fwd_ip, 14 * rev_ip]  # totals
        assert probe.counters()["flow_packets"] == 28
        assert probe.expire_kernel_flows(1 << 63) == (1, 28, 14 * fwd_ip + 14 * rev_ip)
    finally:
        os.sched_setaffinity(0, saved)
        probe.close()
