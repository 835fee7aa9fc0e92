"""Ground truth from the kernel (root only; needs the TCP meters of issue 3): a test program drops a known
share of the client's data packets after flowtap's hook; the retransmissions flowtap counts for the
connection must equal the sender kernel's own count for that socket (TCP_INFO tcpi_total_retrans), and
flowtap's RTT for the connection must be consistent with the kernel's RTT estimates for that socket.

Skipped with "needs the TCP meters (issue 3)" while the flow schema has no src_tcp_retrans_packets column."""
from __future__ import annotations

import pytest

from test_live_common import PY, Capture, VethPair, in_ns, live_skip_reason, read_flows, tcp_exchange, tcp_info

pytestmark = [pytest.mark.root, pytest.mark.skipif(live_skip_reason() is not None, reason=live_skip_reason() or "")]


def _has_tcp_meters() -> bool:
    from dpi.schema import COLUMN_NAMES
    return "src_tcp_retrans_packets" in COLUMN_NAMES and "src_tcp_rtt_min_ns" in COLUMN_NAMES


# Drops every TCP packet to port 5401 whose sequence number falls in the 4th of each 10 blocks of 16 KiB, the
# first time that sequence number is seen: about 10 % of the data. It sits at tc ingress of the receiver's
# end of the veth pair, after flowtap's hook on the sender's end: a drop at the sender's own tc egress would
# be reported back to its TCP stack (the transmit fails) and resent as if new, not as a retransmission.
DROPPER = r'''
import sys
from bcc import BPF
from pyroute2 import IPRoute
b = BPF(text=b"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/tcp.h>
BPF_HASH(dropped, u32, u8, 65536);
BPF_ARRAY(drops, u64, 1);
int dropper(struct __sk_buff *skb) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip = data + sizeof(*eth);
    struct tcphdr *tcp = data + sizeof(*eth) + sizeof(*ip);
    if ((void *)(tcp + 1) > end || eth->h_proto != htons(ETH_P_IP) || ip->protocol != 6 || ip->ihl != 5)
        return TC_ACT_UNSPEC;
    if (tcp->dest != htons(5401) || ntohs(ip->tot_len) <= 40 + tcp->doff * 4 - 20)
        return TC_ACT_UNSPEC;
    u32 seq = ntohl(tcp->seq), zero = 0;
    u8 one = 1;
    if (((seq >> 14) % 10) != 3 || dropped.lookup(&seq))
        return TC_ACT_UNSPEC;
    dropped.update(&seq, &one);
    u64 *d = drops.lookup(&zero);
    if (d) __sync_fetch_and_add(d, 1);
    return TC_ACT_SHOT;
}
""")
fn = b.load_func(b"dropper", BPF.SCHED_CLS)
ipr = IPRoute()
idx = ipr.link_lookup(ifname=sys.argv[1])[0]
try:
    ipr.tc("add", "clsact", idx)
except Exception:
    pass
ipr.tc("add-filter", "bpf", idx, ":1", fd=fn.fd, name="dropper", parent="ffff:fff2", classid=1,
       direct_action=True, prio=20)
'''


def test_retransmissions_and_rtt_match_the_sender_kernel(tmp_path):
    if not _has_tcp_meters():
        pytest.skip("needs the TCP meters (issue 3): no src_tcp_retrans_packets / src_tcp_rtt_min_ns column")
    with VethPair() as p:
        in_ns(p.ns_b, PY, "-c", DROPPER, p.if_b)
        out = tmp_path / "drop.arrows"
        with Capture(p.ns_a, [p.if_a], out) as cap:
            cli, srv = tcp_exchange(p, 2_000_000, 1000, port=5401)
            cap.stop()
    ci = tcp_info(cli["tcp_info"])
    assert srv["received"] == 2_000_000
    assert ci["total_retrans"] > 0  # the dropper did its job
    rows = [r for r in read_flows(out).to_pylist() if r["protocol"] == 6 and r["dst_port"] == 5401]
    assert len(rows) == 1
    f = rows[0]
    assert f["src_tcp_retrans_packets"] == ci["total_retrans"]
    # RTT: flowtap times data leaving the hook to the ACK coming back through it, a leg inside the one the
    # kernel times (from its transmit to its ACK processing), so flowtap's smallest sample cannot exceed
    # the kernel's smallest (tcpi_min_rtt, in us; 20 us for the us rounding and the timer read) and its
    # median stays within a few smoothed RTTs (tcpi_rtt) on an idle-free connection.
    import struct
    min_rtt_us = struct.unpack_from("<I", bytes.fromhex(cli["tcp_info"]), 148)[0]
    assert 0 < f["src_tcp_rtt_min_ns"] <= (min_rtt_us + 20) * 1000
    assert f["src_tcp_rtt_p50_ns"] <= 4 * ci["rtt_us"] * 1000 + 200_000
