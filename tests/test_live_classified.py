"""Payload snippets only while DPI needs them (root only): once the engine's DPI verdict for a flow is final,
the capture loop marks the flow in the kernel's `classified` map and the kernel sends no more snippets for it.

Real TCP between two network namespaces: an HTTP request, a pause at the server long enough for the capture
loop to drain and mark (1 s; it wakes within 50 ms), the server's response, then many more data packets. DPI decides HTTP on
the request alone (dpi_packets 1), so exactly one record carries a snippet, and its bytes are the request."""
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
