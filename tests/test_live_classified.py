"""Payload snippets only while DPI needs them (root only): once the engine's DPI verdict for a flow is final,
the capture loop marks the flow in the kernel's `classified` map and the kernel sends no more snippets for it.

Real TCP between two network namespaces: an HTTP request, a pause at the server long enough for the capture
loop to drain and mark (1 s; it wakes within 10 ms), the server's response, then many more data packets. DPI
decides HTTP on the request alone (dpi_packets 1), so exactly one record carries a snippet: the request."""
from __future__ import annotations

import json
import subprocess

import pytest

from test_live_common import PY, Capture, VethPair, in_ns, live_skip_reason, read_flows

pytestmark = [pytest.mark.root, pytest.mark.skipif(live_skip_reason() is not None,
                                                   reason=live_skip_reason() or "")]

REQUEST = b"GET /index.html HTTP/1.1\r\nHost: example.test\r\nUser-Agent: flowtap-test\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
CHUNKS, CHUNK = 120, 400

SERVER = r'''
import socket, sys, json, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
req = b""
while not req.endswith(b"\r\n\r\n"):
    req += c.recv(4096)
time.sleep(1.0)  # DPI is done on the request: the capture loop marks the flow meanwhile
c.sendall(bytes.fromhex(sys.argv[3]))
got = 0
while True:
    b = c.recv(65536)
    if not b: break
    got += len(b)
c.close()
print(json.dumps({"request": len(req), "after": got}), flush=True)
'''

CLIENT = r'''
import socket, sys, time
c = socket.socket(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
c.connect((sys.argv[1], int(sys.argv[2])))
c.sendall(bytes.fromhex(sys.argv[3]))
resp = b""
while len(resp) < int(sys.argv[4]):
    resp += c.recv(4096)
for i in range(int(sys.argv[5])):
    c.sendall(b"d" * int(sys.argv[6]))
    time.sleep(0.003)  # one segment each
c.shutdown(socket.SHUT_WR)
c.recv(10)
c.close()
'''


def test_snippets_stop_once_dpi_classified_the_flow(tmp_path):
    port = 8080
    with VethPair() as p:
        # IPv6 off on the pair: its neighbour discovery and MLD packets would be flows of their own, each
        # with one snippet before the loop marks it (ICMPv6 has no dissector: DPI is done at once)
        for ns, ifn in ((p.ns_a, p.if_a), (p.ns_b, p.if_b)):
            in_ns(ns, "sysctl", "-qw", f"net.ipv6.conf.{ifn}.disable_ipv6=1")
        out = tmp_path / "http.arrows"
        with Capture(p.ns_a, [p.if_a], out) as cap:
            srv = subprocess.Popen(["ip", "netns", "exec", p.ns_b, PY, "-c", SERVER, p.ip_b, str(port),
                                    RESPONSE.hex()], stdout=subprocess.PIPE, text=True)
            try:
                assert srv.stdout.readline().strip() == "ready"
                in_ns(p.ns_a, PY, "-c", CLIENT, p.ip_b, port, REQUEST.hex(), len(RESPONSE), CHUNKS, CHUNK,
                      timeout=120)
                srv_out, _ = srv.communicate(timeout=60)
            finally:
                if srv.poll() is None:
                    srv.kill()
            summary = cap.stop()
    assert json.loads(srv_out.strip().splitlines()[-1]) == {"request": len(REQUEST), "after": CHUNKS * CHUNK}
    live = summary["counters"]["live"]
    assert live["ring_full_drops"] == 0 and live["meters_packets_seen"] == live["kernel_packets"]
    rows = [r for r in read_flows(out).to_pylist() if r["protocol"] == 6 and r["dst_port"] == port]
    assert len(rows) == 1, rows
    f = rows[0]
    assert f["app_proto"] == "http" and f["http_method"] == "GET" and f["http_path"] == "/index.html"
    assert f["dpi_packets"] == 1
    # every byte went through the meters: IPv4 20 + TCP 20 + timestamps 12 per packet, the SYN's 8 more
    # option bytes (MSS, SACK-permitted, window scale)
    assert f["src_bytes"] == len(REQUEST) + CHUNKS * CHUNK + 52 * f["src_packets"] + 8
    assert f["dst_bytes"] == len(RESPONSE) + 52 * f["dst_packets"] + 8
    assert f["src_packets"] >= CHUNKS + 1 + 3  # request, chunks, handshake ACK, FIN; SYN
    # of the 1 + 1 + CHUNKS packets with payload only the request's record carried a snippet: the whole
    # request (shorter than the 128-byte snap length)
    assert live["snippets"] == 1
    assert live["ring"]["snippet_bytes"] == len(REQUEST)
    # one flow marked, once, in one batched call; nothing deferred for lack of room
    assert live["classified_marks"] == 1
    assert live["classified_mark_calls"] == 1
    assert live["classified_marks_deferred"] == 0


def _frame(sport, dport, payload, proto="tcp", flags="A"):
    from scapy.all import IP, TCP, UDP, Ether, Raw
    from scapy.contrib.roce import BTH
    l4 = TCP(sport=sport, dport=dport, flags=flags) if proto == "tcp" else \
        UDP(sport=sport, dport=4791) / BTH(opcode=0x04, dqpn=0x11, psn=7)
    return bytes(Ether() / IP(src="10.9.0.1", dst="10.9.0.2") / l4 / Raw(payload))


def test_snippets_end_at_the_budget_and_at_the_mark_in_the_kernel():
    """Through BPF_PROG_TEST_RUN, no engine: a flow nobody marks carries snippets on its first
    FT_SNIPPET_BUDGET payload packets only (packets without payload do not count); RoCEv2 is exempt; a flow
    marked after 3 packets carries no more (also once the mark left the map: the kernel noted it in the flow's
    entry), until a SYN opens a new connection on its 4-tuple: then its
    budget starts over and the mark is gone; likewise for the flow whose budget was spent."""
    import numpy as np

    from probe.live import KEY_DTYPE, BpfConfig, Probe, test_run
    probe = Probe(BpfConfig(snippet_budget=5, ring_bytes=1 << 20))
    fd = probe.fd("ft_xdp")

    def snippets_after(frames):
        before = probe.counters()["snippets"]
        for f in frames:
            test_run(fd, f)
        return probe.counters()["snippets"] - before
    try:
        plain = _frame(1111, 2222, b"p" * 300)
        bare = _frame(1111, 2222, b"")
        assert snippets_after([plain, bare, plain, bare, plain]) == 3
        assert snippets_after([plain] * 6) == 2  # 5 payload packets in all carried one
        assert snippets_after([_frame(4000, 4791, b"r" * 64, "udp")] * 8) == 8
        marked = _frame(3333, 4444, b"m" * 50)
        assert snippets_after([marked] * 3) == 3
        key = np.zeros(1, KEY_DTYPE)
        key["addr_a"] = np.frombuffer(bytes([10, 9, 0, 1]) + bytes(12), "V16")
        key["addr_b"] = np.frombuffer(bytes([10, 9, 0, 2]) + bytes(12), "V16")
        key["port_a"], key["port_b"], key["ip_version"], key["proto"] = 3333, 4444, 4, 6
        assert probe.mark_classified(np.concatenate([key, key])) == 1  # repeats merged
        assert snippets_after([marked]) == 0
        # the kernel noted the mark in the flow's entry (its later packets skip the lookup): with the mark gone
        # from the map, as an LRU eviction takes it, the flow still sends none (without the note, the 5th
        # payload packet would: it is within the budget)
        t = probe.bpf.get_table(b"classified")
        del t[t.Key.from_buffer_copy(key.tobytes())]
        assert snippets_after([marked] * 3) == 0
        syn = _frame(3333, 4444, b"", flags="S")
        assert snippets_after([syn] + [marked] * 7) == 5  # new connection: budget 5 again, no mark
        assert snippets_after([_frame(1111, 2222, b"", flags="S"), plain, plain]) == 2
        c = probe.counters()
        assert c["ring_records"] == 5 + 6 + 8 + 3 + 1 + 3 + 8 + 3 and c["ring_full"] == 0
    finally:
        probe.close()
