"""TCP meter against the truth of a real TCP stack (root only; skipped otherwise).

Two network namespaces joined by a veth pair (TSO, GSO and GRO off, so one packet is one segment). A small
TC BPF program at the receiver's ingress drops a known share (1 in DROP_ONE_IN, at random) of the segments
that carry payload; the capture runs on the sender's side, before the drops, so every retransmission
passes the probe. The sender runs bulk transfers and, once the receiver has confirmed every byte (so no
retransmission can follow), reads TCP_INFO's tcpi_total_retrans from each socket before closing it.
Replayed, the capture must give, for every connection, src_tcp_retrans_packets == tcpi_total_retrans.

Traffic stays inside the two namespaces the test creates and removes (10.213.0.1 <-> 10.213.0.2).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

pytestmark = pytest.mark.root

DROP_ONE_IN = 40
CONNECTIONS = 8
BYTES = 1_500_000
NS_A, NS_B = "fttcp_snd", "fttcp_rcv"
IF_A, IF_B = "fttcp0", "fttcp1"
IP_A, IP_B, PORT = "10.213.0.1", "10.213.0.2", 5201

DROPPER = r"""
/* TC ingress program: drops 1 in DROP_ONE_IN IPv4 TCP segments that carry payload (not SYN/FIN/ACK-only
 * segments, so the handshake and the ACK stream are never touched). */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/pkt_cls.h>
#define SEC(n) __attribute__((section(n), used))
static __u32 (*bpf_get_prandom_u32)(void) = (void *)BPF_FUNC_get_prandom_u32;

SEC("tc") int drop_data(struct __sk_buff *skb)
{
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    struct ethhdr *eth = data;
    struct iphdr *ip;
    struct tcphdr *tcp;
    __u32 tot, hl;
    if ((void *)(eth + 1) > end || eth->h_proto != __builtin_bswap16(ETH_P_IP))
        return TC_ACT_OK;
    ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP || ip->ihl != 5)
        return TC_ACT_OK;
    tcp = (void *)(ip + 1);
    if ((void *)(tcp + 1) > end)
        return TC_ACT_OK;
    tot = __builtin_bswap16(ip->tot_len);
    hl = 20 + tcp->doff * 4;
    if (tot <= hl)
        return TC_ACT_OK;
    return bpf_get_prandom_u32() % DROP_ONE_IN == 0 ? TC_ACT_SHOT : TC_ACT_OK;
}
char _license[] SEC("license") = "GPL";
"""

RECEIVER = textwrap.dedent(f"""
    import socket
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{IP_B}", {PORT}))
    s.listen(64)
    print("ready", flush=True)
    for _ in range({CONNECTIONS}):
        c, _ = s.accept()
        got = 0
        while got < {BYTES}:
            b = c.recv(1 << 16)
            if not b:
                break
            got += len(b)
        c.sendall(b"k")          # every byte arrived: the sender may read its counters
        c.recv(1)                # wait for the sender's FIN
        c.close()
""")

SENDER = textwrap.dedent(f"""
    import json, socket, struct
    out = {{}}
    for _ in range({CONNECTIONS}):
        c = socket.create_connection(("{IP_B}", {PORT}))
        c.sendall(b"x" * {BYTES})
        assert c.recv(1) == b"k"
        info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        # struct tcp_info: 8 one-byte fields, then u32s; tcpi_total_retrans is the 24th u32 (offset 100)
        out[c.getsockname()[1]] = struct.unpack_from("I", info, 100)[0]
        c.close()
    print(json.dumps(out))
""")


def sh(*args, ns=None, check=True, **kw):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


@pytest.fixture
def namespaces(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, tc, BPF)")
    for tool in ("ip", "tc", "tcpdump", "ethtool"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (apt-get install -y clang llvm): needed for the TC dropper")
    src = tmp_path / "drop.c"
    src.write_text(DROPPER)
    obj = tmp_path / "drop.o"
    arch = os.uname().machine
    r = subprocess.run(["clang", "-O2", "-target", "bpf", f"-DDROP_ONE_IN={DROP_ONE_IN}",
                        f"-I/usr/include/{arch}-linux-gnu", "-c", str(src), "-o", str(obj)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot compile the BPF dropper: {r.stderr.strip()[:300]}")
    for ns in (NS_A, NS_B):
        sh("ip", "netns", "del", ns, check=False)
    try:
        sh("ip", "netns", "add", NS_A)
        sh("ip", "netns", "add", NS_B)
        sh("ip", "link", "add", IF_A, "netns", NS_A, "type", "veth", "peer", "name", IF_B, "netns", NS_B)
        for ns, dev, addr in ((NS_A, IF_A, IP_A), (NS_B, IF_B, IP_B)):
            sh("ip", "addr", "add", f"{addr}/24", "dev", dev, ns=ns)
            sh("ip", "link", "set", dev, "up", ns=ns)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            sh("ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", ns=ns)
        sh("tc", "qdisc", "add", "dev", IF_B, "clsact", ns=NS_B)
        r = sh("tc", "filter", "add", "dev", IF_B, "ingress", "bpf", "da", "obj", str(obj), "sec", "tc",
               ns=NS_B, check=False)
        if r.returncode:
            pytest.skip(f"cannot attach the TC program: {r.stderr.strip()[:300]}")
        yield tmp_path
    finally:
        for ns in (NS_A, NS_B):
            sh("ip", "netns", "del", ns, check=False)


def test_retransmissions_equal_the_sender_kernel_count(namespaces):
    tmp = namespaces
    cap = tmp / "sender.pcap"
    dump = subprocess.Popen(["ip", "netns", "exec", NS_A, "tcpdump", "-i", IF_A, "-s", "128", "-B", "65536",
                             "-U", "--immediate-mode", "-w", str(cap), "tcp"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    rcv = subprocess.Popen(["ip", "netns", "exec", NS_B, sys.executable, "-c", RECEIVER],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert rcv.stdout.readline().strip() == "ready"
        deadline = time.time() + 10
        while not cap.exists() or cap.stat().st_size == 0:   # tcpdump writes the file header when ready
            assert time.time() < deadline, "tcpdump did not start"
            time.sleep(0.05)
        snd = subprocess.run(["ip", "netns", "exec", NS_A, sys.executable, "-c", SENDER],
                             capture_output=True, text=True, timeout=120)
        assert snd.returncode == 0, snd.stderr
        kernel = {int(k): v for k, v in json.loads(snd.stdout).items()}
        rcv.wait(timeout=30)
        # tcpdump may lag behind a fast veth: stop it only once the file has stopped growing
        size, deadline = -1, time.time() + 20
        while time.time() < deadline and cap.stat().st_size != size:
            size = cap.stat().st_size
            time.sleep(0.5)
    finally:
        dump.send_signal(signal.SIGINT)
        _, err = dump.communicate(timeout=10)
        if rcv.poll() is None:
            rcv.kill()
    dropped = [line for line in err.splitlines() if "dropped by kernel" in line]
    assert dropped and dropped[0].split()[0] == "0", f"the capture lost packets: {dropped}"

    from dpi.capture import iter_captures
    from dpi.engine import Engine, EngineConfig
    eng = Engine(EngineConfig(observer_host="test"))
    batches = []
    for b in iter_captures([str(cap)]):
        batches.extend(eng.add(b.pkts))
    batches.extend(eng.flush())
    t = pa.Table.from_batches(batches, schema=eng.schema).to_pydict()
    ours = {}
    for i in range(len(t["flow_id"])):
        if t["protocol"][i] == 6 and t["src_ip"][i] == IP_A and t["dst_port"][i] == PORT:
            ours[t["src_port"][i]] = ours.get(t["src_port"][i], 0) + t["src_tcp_retrans_packets"][i]
    print(f"\nper connection (sender port: kernel tcpi_total_retrans / flowtap src_tcp_retrans_packets): "
          + ", ".join(f"{p}: {kernel[p]}/{ours.get(p)}" for p in sorted(kernel)))
    assert sum(kernel.values()) > 0, "no retransmission happened: the dropper did not work"
    assert ours == kernel
