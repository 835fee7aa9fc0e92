"""Every built-in dissector through the real DPI registry (dpi._flowtable.DpiFlow: one flow, no table):

  - a positive vector: the label and the fields the payload carries,
  - a truncated one: the message cut in two segments (TCP) or a datagram cut by the snap length (UDP) gives
    no verdict and leaves the dissector waiting; the rest (the next segment, a whole datagram) gives it,
  - garbage that must not match: random bytes, and near misses of the signature.

Vectors are built by scapy where it has the protocol, otherwise byte by byte from the specification named
beside them; the expected values are the ones put into the vector.
"""
from __future__ import annotations

import random
import struct

import pytest

from dpi._flowtable import DpiFlow, dpi_dissectors

scapy = pytest.importorskip("scapy.all")
from scapy.all import raw  # noqa: E402

CLIENT, SERVER = 0, 1


def feed(proto, cport, sport, pkts, budget=16, cut_last=False):
    """Runs (payload, direction) packets through one flow; TCP sequence numbers advance per direction."""
    f = DpiFlow(proto, cport, sport, budget=budget)
    seq = {CLIENT: 1000, SERVER: 900000}
    for i, (payload, d) in enumerate(pkts):
        f.packet(payload, d, seq[d], cut_last and i == len(pkts) - 1)
        seq[d] = (seq[d] + len(payload)) & 0xffffffff
    return f


def verdict(proto, cport, sport, pkts, **kw):
    f = feed(proto, cport, sport, pkts, **kw)
    return f.result()


def assert_split(proto, cport, sport, payload, at, label, d=CLIENT, before=()):
    """payload cut at `at`: no verdict and still waiting after the first part; `label` once the rest comes."""
    f = DpiFlow(proto, cport, sport)
    seq = 1000
    for p, dd in before:
        f.packet(p, dd, 500)
    f.packet(payload[:at], d, seq)
    st = f.state()
    assert st["label"] is None and st["need_more"] and not st["done"], st
    f.packet(payload[at:], d, seq + at)
    assert f.state()["label"] == label, f.state()
    return f.result()


def assert_udp_cut(cport, sport, payload, at, label, d=CLIENT):
    """A datagram cut by the snap length: no verdict, still waiting; the next, whole datagram decides."""
    f = DpiFlow("udp", cport, sport)
    f.packet(payload[:at], d, 0, True)
    st = f.state()
    assert st["label"] is None and st["need_more"] and not st["done"], st
    f.packet(payload, d, 0)
    assert f.state()["label"] == label, f.state()
    return f.result()


def random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


GARBAGE = [random_bytes(seed, n) for seed, n in [(1, 1), (2, 7), (3, 64), (4, 300), (5, 1400), (6, 48), (7, 148)]]


def assert_no_match(proto, cport, sport, payloads, d=CLIENT):
    for p in payloads:
        r = verdict(proto, cport, sport, [(p, d)])
        assert r["app"] == "" and r["base"] is None, (p[:40], r)


# ---- TLS ------------------------------------------------------------------------------------------------

def tls_ext(t, body):
    return struct.pack(">HH", t, len(body)) + body


def client_hello(sni="api.example.com", alpn=("h2", "http/1.1"), versions=(0x0304, 0x0303), extra=b""):
    """A TLS ClientHello record (RFC 8446 4.1.2) with server_name (RFC 6066 3), ALPN (RFC 7301 3.1) and
    supported_versions (RFC 8446 4.2.1)."""
    name = sni.encode()
    exts = tls_ext(0, struct.pack(">HBH", len(name) + 3, 0, len(name)) + name)
    protos = b"".join(bytes([len(a)]) + a.encode() for a in alpn)
    exts += tls_ext(16, struct.pack(">H", len(protos)) + protos)
    vers = b"".join(struct.pack(">H", v) for v in (0x1a1a,) + tuple(versions))  # a GREASE value first
    exts += tls_ext(43, bytes([len(vers)]) + vers)
    exts += extra
    body = (b"\x03\x03" + bytes(32) + b"\x20" + bytes(range(32)) + struct.pack(">H", 4) + b"\x13\x01\x13\x02"
            + b"\x01\x00" + struct.pack(">H", len(exts)) + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


def server_hello(version=0x0304, alpn=None):
    exts = tls_ext(43, struct.pack(">H", version)) if version >= 0x0304 else b""
    if alpn:
        exts += tls_ext(16, struct.pack(">H", len(alpn) + 1) + bytes([len(alpn)]) + alpn.encode())
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x13\x01" + b"\x00" + struct.pack(">H", len(exts)) + exts
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x03" + struct.pack(">H", len(hs)) + hs


def test_tls_client_and_server_hello():
    r = verdict("tcp", 51000, 443, [(client_hello(), CLIENT), (server_hello(0x0304), SERVER)])
    assert (r["app"], r["server_name"], r["alpn"], r["version"]) == ("tls", "api.example.com", "h2", "TLSv1.3")
    assert r["rule_id"] == 1 and r["conf"] == 1  # dissector:tls, confidence payload
    # TLS 1.2: the server's ALPN choice is in clear and replaces the client's first offer
    r = verdict("tcp", 51000, 443, [(client_hello(alpn=("grpc-exp", "h2"), versions=(0x0303,)), CLIENT),
                                    (server_hello(0x0303, alpn="h2"), SERVER)])
    assert (r["alpn"], r["version"]) == ("h2", "TLSv1.2")


def test_tls_hello_split_over_segments_is_reassembled():
    # a large hello (padding extension, RFC 7685) in two segments: SNI and ALPN sit after the cut
    ch = client_hello(sni="etcd-0.etcd.kube-system.svc", extra=tls_ext(21, bytes(1500)))
    r = assert_split("tcp", 51000, 2379, ch, 60, "tls")
    assert (r["server_name"], r["alpn"]) == ("etcd-0.etcd.kube-system.svc", "h2")


def test_tls_midstream_records_and_garbage():
    app_data = b"\x17\x03\x03\x00\x20" + bytes(32) + b"\x17\x03\x03\x01\x00" + bytes(100)
    assert verdict("tcp", 51000, 8443, [(app_data, SERVER)])["app"] == "tls"
    near = [b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",          # hello far too short for its fixed part
            b"\x16\x03\x09" + bytes(60),                           # no TLS version 3.9
            b"\x17\x03\x03\x00\x00" + bytes(10)]                   # empty application-data record
    assert_no_match("tcp", 51000, 8443, GARBAGE + near)


# ---- HTTP/1.x, Prometheus, Kubernetes API ------------------------------------------------------------

def http_request(method, path, host, ua, extra=""):
    from scapy.layers.http import HTTP, HTTPRequest
    return raw(HTTP() / HTTPRequest(Method=method.encode(), Path=path.encode(), Host=host.encode(),
                                    User_Agent=ua.encode()))


def test_http_request_fields():
    req = http_request("POST", "/v1/upload?session=42", "Files.Example.com:8080", "curl/8.5.0")
    r = verdict("tcp", 40000, 8080, [(req, CLIENT)])
    assert (r["app"], r["http_method"], r["http_path"], r["server_name"], r["user_agent"], r["version"]) == \
        ("http", "POST", "/v1/upload", "files.example.com", "curl/8.5.0", "HTTP/1.1")


def test_http_prometheus_scrape_and_kube_api_client():
    r = verdict("tcp", 40000, 9100, [(http_request("GET", "/metrics", "node1:9100", "Prometheus/2.48.1"), CLIENT)])
    assert (r["app"], r["base"], r["http_path"]) == ("prometheus", "http", "/metrics")
    r = verdict("tcp", 40000, 8080, [(http_request("GET", "/api/v1/namespaces/default/pods", "10.96.0.1",
                                                   "kubectl/v1.29.2 (linux/amd64) kubernetes/4b8e819"), CLIENT)])
    assert r["app"] == "kube-apiserver"
    r = verdict("tcp", 40000, 80, [(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", SERVER)])
    assert (r["app"], r["version"]) == ("http", "HTTP/1.1")


def test_http_headers_in_a_second_segment():
    req = http_request("GET", "/index.html", "www.example.org", "Mozilla/5.0")
    r = assert_split("tcp", 40000, 80, req, req.index(b"Host") + 3, "http")
    assert (r["server_name"], r["user_agent"]) == ("www.example.org", "Mozilla/5.0")
    # cut inside the method itself
    assert_split("tcp", 40000, 80, req, 2, "http")


def test_http_garbage():
    near = [b"GET  /x HTTP/1.1\r\n\r\n", b"GET /x FTP/1.0\r\n\r\n", b"GETX / HTTP/1.1\r\n\r\n",
            b"get / http/1.1\r\n\r\n", b"GET /\x01\x02 HTTP/1.1\r\n\r\n", b"HTTP/2.0 200 OK\r\n\r\n"]
    assert_no_match("tcp", 40000, 80, GARBAGE + near)


# ---- HTTP/2, gRPC, etcd -------------------------------------------------------------------------------

def h2_request(headers: str) -> bytes:
    """Client preface + SETTINGS + the HEADERS frame scapy's HPACK encoder makes (Huffman strings).
    headers: one per line, ":name value" for pseudo-headers, "name: value" for the others."""
    from scapy.contrib import http2 as h2
    tbl = h2.HPackHdrTable()
    frames = tbl.parse_txt_hdrs(headers.encode(), stream_id=1, max_frm_sz=16384, max_hdr_lst_sz=65535,
                                is_sensitive=lambda n, v: False, should_index=lambda n: False, register=False)
    settings = raw(h2.H2Frame() / h2.H2SettingsFrame())
    return b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + settings + raw(frames)


def test_grpc_service_path_and_etcd():
    etcd = h2_request(":method POST\n:scheme http\n:path /etcdserverpb.KV/Range\n:authority etcd-0.etcd:2379\n"
                      "content-type: application/grpc\nte: trailers\nuser-agent: grpc-go/1.60.1")
    r = verdict("tcp", 50000, 2379, [(etcd, CLIENT)])
    assert (r["app"], r["base"], r["http_path"], r["server_name"], r["http_method"], r["user_agent"]) == \
        ("etcd", "http2", "/etcdserverpb.KV/Range", "etcd-0.etcd", "POST", "grpc-go/1.60.1")
    greet = h2_request(":method POST\n:scheme http\n:path /helloworld.Greeter/SayHello\n:authority svc:50051\n"
                       "content-type: application/grpc+proto")
    assert verdict("tcp", 50000, 50051, [(greet, CLIENT)])["app"] == "grpc"
    plain = h2_request(":method GET\n:scheme http\n:path /status\n:authority web")
    assert verdict("tcp", 50000, 80, [(plain, CLIENT)])["app"] == "http2"


def test_http2_headers_after_the_preface_packet():
    req = h2_request(":method POST\n:scheme http\n:path /ray.rpc.NodeManagerService/RequestWorkerLease\n"
                     ":authority 10.0.0.5:6379\ncontent-type: application/grpc")
    # cut inside the preface: nothing yet; with the rest (preface + HEADERS) it is gRPC
    assert_split("tcp", 50000, 6379, req, 10, "grpc")
    # the preface in a segment of its own decides http2; the HEADERS frame in the next one makes it grpc
    f = feed("tcp", 50000, 6379, [(req[:24], CLIENT), (req[24:], CLIENT)])
    assert f.result()["app"] == "grpc" and f.result()["http_path"].startswith("/ray.rpc.")


def test_http2_garbage():
    assert_no_match("tcp", 50000, 2379, GARBAGE + [b"PRI * HTTP/1.1\r\n\r\n", b"PRX * HTTP/2.0\r\n\r\nSM\r\n\r\n"])


# ---- DNS, mDNS, LLMNR ----------------------------------------------------------------------------------

def test_dns_query_and_response_code():
    from scapy.layers.dns import DNS, DNSQR
    q = raw(DNS(id=0x4242, rd=1, qd=DNSQR(qname="etcd.kube-system.svc.cluster.local.", qtype="SRV")))
    resp = raw(DNS(id=0x4242, qr=1, rd=1, ra=1, rcode=3, qd=DNSQR(qname="etcd.kube-system.svc.cluster.local.",
                                                                   qtype="SRV")))
    r = verdict("udp", 40000, 53, [(q, CLIENT), (resp, SERVER)])
    assert (r["app"], r["server_name"], r["dns_qtype"], r["dns_rcode"]) == \
        ("dns", "etcd.kube-system.svc.cluster.local", 33, 3)
    # over TCP, with the 2-byte length prefix (RFC 7766), split inside the name
    tq = struct.pack(">H", len(q)) + q
    r = assert_split("tcp", 40000, 53, tq, 20, "dns")
    assert r["server_name"] == "etcd.kube-system.svc.cluster.local"


def test_dns_cut_datagram_then_whole_one():
    from scapy.layers.dns import DNS, DNSQR
    q = raw(DNS(id=7, rd=1, qd=DNSQR(qname="prometheus.monitoring.svc.", qtype="A")))
    r = assert_udp_cut(40000, 53, q, 20, "dns")
    assert (r["server_name"], r["dns_qtype"]) == ("prometheus.monitoring.svc", 1)


def test_mdns_and_llmnr():
    from scapy.layers.dns import DNS, DNSQR
    from scapy.layers.llmnr import LLMNRQuery
    m = raw(DNS(id=0, qd=DNSQR(qname="_googlecast._tcp.local.", qtype="PTR")))
    assert verdict("udp", 5353, 5353, [(m, CLIENT)])["app"] == "mdns"
    ll = raw(LLMNRQuery(id=9, qd=DNSQR(qname="workstation", qtype="A")))
    r = verdict("udp", 50000, 5355, [(ll, CLIENT)])
    assert (r["app"], r["server_name"]) == ("llmnr", "workstation")


def test_dns_garbage():
    near = [struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # label > 63
            struct.pack(">HHHHHH", 1, 0x7900, 1, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01",              # opcode 15
            struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x09"]              # class 9
    assert_no_match("udp", 40000, 53, GARBAGE + near)


# ---- QUIC -----------------------------------------------------------------------------------------------

def quic_long_header(version: int, payload_len=1200) -> bytes:
    """A client Initial long header (RFC 9000 17.2.2) with an 8-byte DCID and a payload that is not a valid
    encryption: the version alone names QUIC."""
    dcid = bytes(range(8))
    rest = random_bytes(9, payload_len)
    return bytes([0xc3]) + struct.pack(">I", version) + b"\x08" + dcid + b"\x00" + b"\x00" + \
        struct.pack(">H", 0x4000 | len(rest)) + rest


def test_quic_versions_from_the_long_header():
    for v, name in [(0x00000001, "v1"), (0x6b3343cf, "v2"), (0xff00001d, "draft-29"), (0x51303436, "Q046")]:
        r = verdict("udp", 50000, 443, [(quic_long_header(v), CLIENT)])
        assert (r["app"], r["version"]) == ("quic", name), hex(v)


def test_quic_cut_datagram_then_whole_one():
    assert_udp_cut(50000, 443, quic_long_header(1), 5, "quic")


def test_quic_garbage():
    near = [quic_long_header(0x12345678), bytes([0x40]) + bytes(1199)]   # unknown version; short header
    assert_no_match("udp", 50000, 443, GARBAGE + near)


# ---- SSH ------------------------------------------------------------------------------------------------

def test_ssh_banners():
    r = verdict("tcp", 40000, 22, [(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n", SERVER),
                                   (b"SSH-2.0-paramiko_3.4.0\r\n", CLIENT)])
    assert (r["app"], r["version"]) == ("ssh", "OpenSSH_9.6p1 Ubuntu-3ubuntu13")
    r = assert_split("tcp", 40000, 22, b"SSH-2.0-Go\r\n", 6, "ssh")
    assert r["version"] == "Go"


def test_ssh_garbage():
    assert_no_match("tcp", 40000, 22, GARBAGE + [b"SSH-x.0-foo\r\n", b"SSH-2.0\r\n", b"SSX-2.0-a\r\n"])


# ---- RoCEv2 and RDMA CM ---------------------------------------------------------------------------------

def test_rocev2_and_rdma_cm():
    from scapy.contrib.roce import BTH
    # scapy's BTH carries the 4-byte ICRC after the header: the header is its first 12 bytes
    write = raw(BTH(opcode=0x0a, dqpn=0x11, psn=5557091))[:12] + bytes(16) + bytes(64)   # RC RDMA WRITE Only
    assert verdict("udp", 57236, 4791, [(write, CLIENT)])["app"] == "rocev2"
    # UD SEND Only to QP 1, DETH (Q_Key 0x80010000, source QP 1), MAD: base version 1, class 0x07 (CM),
    # class version 2, method Send (3), attribute ConnectRequest (0x0010)
    mad = bytes([1, 0x07, 2, 0x03]) + bytes(4) + struct.pack(">Q", 0x1234) + struct.pack(">HHI", 0x0010, 0, 0)
    cm = raw(BTH(opcode=0x64, dqpn=1, psn=1))[:12] + struct.pack(">II", 0x80010000, 1) + mad + bytes(232)
    r = verdict("udp", 49152, 4791, [(cm, CLIENT)])
    assert (r["app"], r["base"]) == ("rdma-cm", "rocev2")
    assert_udp_cut(57236, 4791, write, 8, "rocev2")


def test_roce_garbage():
    from scapy.contrib.roce import BTH
    bad = bytearray(raw(BTH(opcode=0x0a, dqpn=0x11))[:12] + bytes(20))
    bad[1] |= 0x03   # transport header version 3
    assert_no_match("udp", 57236, 4791, [bytes(bad), bytes([0x30]) + bytes(40)])


def test_roce_real_softroce_packet():
    from pathlib import Path
    import os
    data = Path(os.environ.get("FLOWTAP_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    pcap = data / "roce" / "softroce_read_request.pcap"
    if not pcap.exists():
        pytest.skip(f"{pcap} not found")
    from dpi.capture import CaptureReader
    from dpi.engine import Engine, EngineConfig
    eng = Engine(EngineConfig(observer_host="t"))
    out = []
    with CaptureReader(str(pcap)) as rd:
        for recs, d in rd:
            out += list(eng.add(recs, d))
    out += list(eng.flush())
    rows = [r for b in out for r in b.select(["dst_port", "app_proto", "app_rule"]).to_pylist()]
    assert rows == [{"dst_port": 4791, "app_proto": "rocev2", "app_rule": "dissector:roce"}]


# ---- storage: NVMe/TCP, iSCSI, NFS/ONC RPC, SMB ----------------------------------------------------------

def nvme_icreq() -> bytes:
    """NVMe/TCP ICReq (NVMe TCP transport 1.0, 3.6.2.2): type 0, flags 0, HLEN 128, PDO 0, PLEN 128 (LE),
    PFV 0, HPDA 0, DGST 0, MAXR2T 0, reserved."""
    return struct.pack("<BBBBI", 0x00, 0, 128, 0, 128) + struct.pack("<HBBI", 0, 0, 0, 0) + bytes(112)


def test_nvme_tcp():
    assert verdict("tcp", 40000, 4420, [(nvme_icreq(), CLIENT)])["app"] == "nvme-tcp"
    assert_split("tcp", 40000, 4420, nvme_icreq(), 5, "nvme-tcp")
    # a CapsuleCmd (HLEN 72) mid-connection counts on the NVMe/TCP port only
    cmd = struct.pack("<BBBBI", 0x04, 0, 72, 72, 72) + bytes(64)
    assert verdict("tcp", 40000, 4420, [(cmd, CLIENT)])["app"] == "nvme-tcp"
    assert verdict("tcp", 40000, 5000, [(cmd, CLIENT)])["app"] == ""
    assert_no_match("tcp", 40000, 4420, GARBAGE + [struct.pack("<BBBBI", 0x00, 0, 128, 0, 129) + bytes(120)])


def iscsi_login() -> bytes:
    """iSCSI Login Request (RFC 7143 11.12): opcode 0x03 with the immediate bit, T/CSG/NSG flags, version
    max/min 0, DataSegmentLength, ISID, ... and text keys in the data segment (padded to 4 bytes)."""
    data = b"InitiatorName=iqn.2024-01.com.example:node1\0SessionType=Normal\0"
    bhs = struct.pack(">BBBB", 0x43, 0x87, 0, 0) + struct.pack(">B", 0) + len(data).to_bytes(3, "big")
    bhs += bytes(6) + bytes(2) + struct.pack(">I", 1) + bytes(2) + bytes(2) + struct.pack(">II", 1, 0) + bytes(16)
    assert len(bhs) == 48
    return bhs + data + bytes(-len(data) % 4)


def test_iscsi():
    assert verdict("tcp", 40000, 3260, [(iscsi_login(), CLIENT)])["app"] == "iscsi"
    assert_split("tcp", 40000, 3260, iscsi_login(), 30, "iscsi")
    bad = bytearray(iscsi_login())
    bad[2] = 5   # version-max 5
    assert_no_match("tcp", 40000, 3261, GARBAGE + [bytes(bad)])


def test_nfs_portmap_and_other_onc_rpc():
    from scapy.contrib.oncrpc import RPC, RPC_Call
    nfs = raw(RPC(xid=7, mtype=0) / RPC_Call(program=100003, pversion=3, procedure=1))
    assert verdict("udp", 800, 2049, [(nfs, CLIENT)])["app"] == "nfs"
    rm = struct.pack(">I", 0x80000000 | len(nfs)) + nfs     # TCP record mark, last fragment
    assert verdict("tcp", 800, 2049, [(rm, CLIENT)])["app"] == "nfs"
    assert_split("tcp", 800, 2049, rm, 18, "nfs")
    pm = raw(RPC(xid=8, mtype=0) / RPC_Call(program=100000, pversion=2, procedure=3))
    assert verdict("udp", 900, 111, [(pm, CLIENT)])["app"] == "portmap"
    other = raw(RPC(xid=9, mtype=0) / RPC_Call(program=100004, pversion=2, procedure=1))   # NIS ypserv
    assert verdict("udp", 900, 700, [(other, CLIENT)])["app"] == "onc-rpc"
    assert_udp_cut(800, 2049, nfs, 16, "nfs")
    bad = bytearray(nfs)
    bad[11] = 3   # RPC version 3
    assert_no_match("udp", 800, 5000, GARBAGE + [bytes(bad)])


def test_smb2():
    from scapy.layers.netbios import NBTSession
    from scapy.layers.smb2 import SMB2_Header, SMB2_Negotiate_Protocol_Request
    neg = raw(NBTSession() / SMB2_Header() / SMB2_Negotiate_Protocol_Request(Dialects=[0x0302, 0x0311]))
    r = verdict("tcp", 40000, 445, [(neg, CLIENT)])
    assert (r["app"], r["version"]) == ("smb", "SMB2/3")
    assert_split("tcp", 40000, 445, neg, 6, "smb")
    assert_no_match("tcp", 40000, 445, GARBAGE + [b"\x00\x00\x00\x40\xfeSMX" + bytes(60)])


# ---- databases, caches, brokers --------------------------------------------------------------------------

def test_postgresql():
    params = b"user\0alice\0database\0orders\0\0"
    startup = struct.pack(">II", 8 + len(params), 196608) + params   # protocol 3.0
    r = verdict("tcp", 40000, 5432, [(startup, CLIENT)])
    assert (r["app"], r["version"]) == ("postgresql", "3.0")
    assert verdict("tcp", 40000, 5432, [(struct.pack(">II", 8, 80877103), CLIENT)])["app"] == "postgresql"
    assert_split("tcp", 40000, 5432, startup, 12, "postgresql")
    assert_no_match("tcp", 40000, 5433, GARBAGE + [struct.pack(">II", 8, 80877199)])


def mysql_greeting(version=b"8.0.36") -> bytes:
    """MySQL Handshake v10 (dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_
    packets_protocol_handshake_v10.html): protocol 10, version NUL-terminated, connection id, 8 bytes of
    auth data, filler, capabilities, charset, status, capabilities (upper), auth data length, reserved."""
    body = b"\x0a" + version + b"\0" + struct.pack("<I", 42) + b"abcdefgh" + b"\0" + struct.pack("<H", 0xffff)
    body += b"\xff" + struct.pack("<HH", 2, 0xdfff) + b"\x15" + bytes(10) + b"ijklmnopqrst\0" + b"caching_sha2_password\0"
    return len(body).to_bytes(3, "little") + b"\x00" + body


def test_mysql():
    r = verdict("tcp", 40000, 3306, [(mysql_greeting(), SERVER)])
    assert (r["app"], r["version"]) == ("mysql", "8.0.36")
    assert_split("tcp", 40000, 3306, mysql_greeting(b"10.11.6-MariaDB"), 8, "mysql", d=SERVER)
    assert_no_match("tcp", 40000, 3307, GARBAGE + [mysql_greeting()[:4] + b"\x09" + mysql_greeting()[5:]], d=SERVER)


def test_redis():
    cmd = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"
    assert verdict("tcp", 40000, 6379, [(cmd, CLIENT)])["app"] == "redis"
    assert verdict("tcp", 40000, 7000, [(cmd, CLIENT)])["app"] == "redis"   # arrays of bulk strings anywhere
    assert_split("tcp", 40000, 6379, cmd, 9, "redis")
    assert_no_match("tcp", 40000, 7000, GARBAGE + [b"*2\r\n$3\r\nG1T\r\n", b"*0\r\n", b"PING\r\n"])


def kafka_request(api_key=18, version=3, client=b"producer-1") -> bytes:
    """Kafka request header v2 (kafka.apache.org/protocol#protocol_messages): api_key, api_version,
    correlation_id, client_id (int16 length + bytes), tagged fields; then an empty-ish body."""
    body = struct.pack(">hhi", api_key, version, 1) + struct.pack(">h", len(client)) + client + b"\x00" + b"\x00"
    return struct.pack(">i", len(body)) + body


def test_kafka():
    assert verdict("tcp", 40000, 9092, [(kafka_request(), CLIENT)])["app"] == "kafka"
    assert_split("tcp", 40000, 9092, kafka_request(api_key=3, version=12), 10, "kafka")
    assert_no_match("tcp", 40000, 9092, GARBAGE + [kafka_request(api_key=900), kafka_request() + b"extra"])


def test_mqtt():
    from scapy.contrib.mqtt import MQTT, MQTTConnect
    c = raw(MQTT() / MQTTConnect(protoname="MQTT", protolevel=4, clientId="sensor-1"))
    r = verdict("tcp", 40000, 1883, [(c, CLIENT)])
    assert (r["app"], r["version"]) == ("mqtt", "3.1.1")
    assert_split("tcp", 40000, 1883, c, 5, "mqtt")
    bad = bytearray(c)
    bad[8] = 9   # protocol level 9
    assert_no_match("tcp", 40000, 1884, GARBAGE + [bytes(bad)])


def test_memcached():
    assert verdict("tcp", 40000, 11211, [(b"get user:1001\r\n", CLIENT)])["app"] == "memcached"
    binary = struct.pack(">BBHBBHIIQ", 0x80, 0x00, 3, 0, 0, 0, 3, 0, 0) + b"foo"   # binary GET, key "foo"
    assert verdict("tcp", 40000, 11211, [(binary, CLIENT)])["app"] == "memcached"
    udp = struct.pack(">HHHH", 1, 0, 1, 0) + b"gets a b\r\n"   # UDP frame header: id, seq 0, count 1
    assert verdict("udp", 40000, 11211, [(udp, CLIENT)])["app"] == "memcached"
    assert_split("tcp", 40000, 11211, b"set k 0 0 5\r\nhello\r\n", 5, "memcached")
    assert verdict("tcp", 40000, 11212, [(b"get user:1001\r\n", CLIENT)])["app"] == ""  # port-gated
    assert_no_match("tcp", 40000, 11211, GARBAGE + [b"getx\r\n", b"get \x01\x02\r\n"])


def test_tds_mongodb():
    # TDS PRELOGIN (MS-TDS 2.2.6.5): header type 0x12, status EOM, length; VERSION token at offset 6,
    # length 6; terminator 0xff; the version value
    opts = bytes([0x00]) + struct.pack(">HH", 6, 6) + b"\xff" + bytes([15, 0, 0x07, 0xd0, 0, 0])
    pre = struct.pack(">BBHHBB", 0x12, 0x01, 8 + len(opts), 0, 1, 0) + opts
    assert verdict("tcp", 40000, 1433, [(pre, CLIENT)])["app"] == "tds"
    assert_split("tcp", 40000, 1433, pre, 4, "tds")
    # MongoDB OP_MSG (wire protocol): length, requestID, responseTo 0, opCode 2013, flagBits, section 0
    doc = b"\x13\x00\x00\x00\x10isMaster\x00\x01\x00\x00\x00\x00"
    msg = struct.pack("<iiiiI", 16 + 4 + 1 + len(doc), 1, 0, 2013, 0) + b"\x00" + doc
    assert verdict("tcp", 40000, 27017, [(msg, CLIENT)])["app"] == "mongodb"
    assert_split("tcp", 40000, 27017, msg, 10, "mongodb")
    assert_no_match("tcp", 40000, 27018, GARBAGE + [struct.pack("<iiii", 32, 1, 0, 9999) + bytes(16)])


def test_fluentd_forward():
    # MessagePack (msgpack spec): fixarray(3) [fixstr tag, uint32 time, fixmap{log: "hello"}]
    tag = b"kube.var.log.containers.app"
    msg = bytes([0x93, 0xa0 | len(tag)]) + tag + b"\xce" + struct.pack(">I", 1700000000) + \
        b"\x81\xa3log\xa5hello"
    assert verdict("tcp", 40000, 24224, [(msg, CLIENT)])["app"] == "fluentd"
    # Forward mode: [tag, [[time, record]], option]
    fwd = bytes([0x93, 0xa0 | len(tag)]) + tag + b"\x91\x92\xce" + struct.pack(">I", 1) + b"\x80\x80"
    assert verdict("tcp", 40000, 24224, [(fwd, CLIENT)])["app"] == "fluentd"
    assert_split("tcp", 40000, 24224, msg, 6, "fluentd")
    assert_no_match("tcp", 40000, 24224, GARBAGE + [bytes([0x93, 0xa3]) + b"a b" + b"\xce\0\0\0\0",
                                                    bytes([0x93, 0xa3]) + b"abc" + b"\xc0"])


def test_amqp_zabbix_ceph():
    assert verdict("tcp", 40000, 5672, [(b"AMQP\x00\x00\x09\x01", CLIENT)])["version"] == "0-9-1"
    assert_split("tcp", 40000, 5672, b"AMQP\x00\x00\x09\x01", 3, "amqp")
    zbx = b"ZBXD\x01" + struct.pack("<II", 17, 0) + b'{"request":"ping"}'[:17]
    assert verdict("tcp", 40000, 10051, [(zbx, CLIENT)])["app"] == "zabbix"
    assert_split("tcp", 40000, 10051, zbx, 3, "zabbix")
    r = verdict("tcp", 40000, 3300, [(b"ceph v2\n" + struct.pack("<H", 16) + bytes(16), CLIENT)])
    assert (r["app"], r["version"]) == ("ceph", "msgr2")
    assert_split("tcp", 40000, 6789, b"ceph v027" + bytes(136), 4, "ceph")
    assert_no_match("tcp", 40000, 5000, GARBAGE + [b"AMQP\x01\x02\x03\x04", b"ZBXD\x08", b"ceph vX\n"])


# ---- monitoring and logging over UDP ---------------------------------------------------------------------

def test_statsd_and_dogstatsd():
    r = verdict("udp", 40000, 8125, [(b"api.requests:1|c|#env:prod,service:web\n", CLIENT)])
    assert r["app"] == "dogstatsd"
    assert verdict("udp", 40000, 8125, [(b"api.latency:12.5|ms|@0.1", CLIENT)])["app"] == "statsd"
    assert verdict("udp", 40000, 8125, [(b"_e{5,4}:title|text|#team:ml", CLIENT)])["app"] == "dogstatsd"
    assert_udp_cut(40000, 8125, b"api.requests:1|c|#env:prod\n", 3, "dogstatsd")
    assert_no_match("udp", 40000, 8125, GARBAGE + [b"api.requests:1|x\n", b"api requests:1|c\n"])


def test_syslog():
    r = verdict("udp", 40000, 514, [(b"<34>1 2024-05-01T10:00:00Z gpu17 kubelet 123 - - pod started", CLIENT)])
    assert r["app"] == "syslog"
    octet = b"62 <13>May  1 10:00:00 gpu17 slurmd[812]: launched job 4412 step 0"
    assert verdict("tcp", 40000, 601, [(octet, CLIENT)])["app"] == "syslog"
    assert_split("tcp", 40000, 601, octet, 5, "syslog")
    assert_no_match("udp", 40000, 514, GARBAGE + [b"<192>bad priority", b"<13 missing bracket"])


# ---- network services ------------------------------------------------------------------------------------

def test_bgp():
    from scapy.contrib.bgp import BGPHeader, BGPOpen
    o = raw(BGPHeader(type=1) / BGPOpen(my_as=64512, bgp_id="10.0.0.1"))
    r = verdict("tcp", 40000, 179, [(o, CLIENT)])
    assert (r["app"], r["version"]) == ("bgp", "BGP-4")
    assert_split("tcp", 40000, 179, o, 10, "bgp")
    assert_no_match("tcp", 40000, 179, GARBAGE + [b"\xff" * 16 + b"\x00\x13\x09", b"\xff" * 15 + b"\x00"])


def test_ntp_dhcp_dhcpv6_snmp():
    from scapy.layers.dhcp import BOOTP, DHCP
    from scapy.layers.dhcp6 import DHCP6_Solicit
    from scapy.layers.ntp import NTP
    from scapy.layers.snmp import SNMP, SNMPget, SNMPvarbind
    from scapy.asn1.asn1 import ASN1_OID
    ntp = raw(NTP(version=4, mode=3))
    assert verdict("udp", 40000, 123, [(ntp, CLIENT)])["version"] == "NTPv4"
    assert_udp_cut(40000, 123, ntp, 20, "ntp")
    dhcp = raw(BOOTP(chaddr=b"\x02\x00\x00\x00\x00\x01") / DHCP(options=[("message-type", "discover"), "end"]))
    assert verdict("udp", 68, 67, [(dhcp, CLIENT)])["app"] == "dhcp"
    assert_udp_cut(68, 67, dhcp, 100, "dhcp")
    assert verdict("udp", 546, 547, [(raw(DHCP6_Solicit(trid=0x123456)), CLIENT)])["app"] == "dhcpv6"
    snmp = raw(SNMP(version=1, community="public",
                    PDU=SNMPget(varbindlist=[SNMPvarbind(oid=ASN1_OID("1.3.6.1.2.1.1.1.0"))])))
    r = verdict("udp", 40000, 161, [(snmp, CLIENT)])
    assert (r["app"], r["version"]) == ("snmp", "v2c")
    assert_udp_cut(40000, 161, snmp, 10, "snmp")
    bad_ntp = bytes([0x3b]) + bytes(47)   # version 7
    bad_snmp = bytearray(snmp)
    bad_snmp[4] = 2                        # SNMP version 2 does not exist (0, 1, 3)
    assert_no_match("udp", 40000, 123, GARBAGE + [bad_ntp])
    assert_no_match("udp", 40000, 161, [bytes(bad_snmp)])


def test_stun_radius_netbios():
    from scapy.contrib.stun import STUN
    from scapy.layers.netbios import NBNSHeader, NBNSQueryRequest
    from scapy.layers.radius import Radius, RadiusAttr_User_Name
    stun = raw(STUN(stun_message_type="Binding request", transaction_id=0x1234))
    assert verdict("udp", 40000, 3478, [(stun, CLIENT)])["app"] == "stun"
    assert verdict("udp", 40000, 19302, [(stun, CLIENT)])["app"] == "stun"
    assert_udp_cut(40000, 19302, stun, 10, "stun")
    rad = raw(Radius(code=1, id=7, attributes=[RadiusAttr_User_Name(value=b"alice")]))
    assert verdict("udp", 40000, 1812, [(rad, CLIENT)])["app"] == "radius"
    assert_udp_cut(40000, 1812, rad, 12, "radius")
    nbns = raw(NBNSHeader() / NBNSQueryRequest(QUESTION_NAME="FILESERVER"))
    assert verdict("udp", 137, 137, [(nbns, CLIENT)])["app"] == "netbios"
    bad_rad = bytearray(rad)
    bad_rad[21] = 1                         # attribute length 1
    assert_no_match("udp", 40000, 1812, GARBAGE + [bytes(bad_rad)])
    assert_no_match("udp", 40000, 3478, [stun[:4] + b"\x21\x12\xa4\x43" + stun[8:]] * 0 + [b"\x00\x01\x00\x05" + bytes(21)])


def test_ldap_kerberos():
    from scapy.layers.ldap import LDAP, LDAP_BindRequest
    bind = raw(LDAP(protocolOp=LDAP_BindRequest(bind_name=b"cn=admin,dc=example,dc=org")))
    assert verdict("tcp", 40000, 389, [(bind, CLIENT)])["app"] == "ldap"
    assert_split("tcp", 40000, 389, bind, 3, "ldap")
    from scapy.layers.kerberos import Kerberos, KRB_AS_REQ, KRB_KDC_REQ_BODY
    try:
        asreq = raw(Kerberos(root=KRB_AS_REQ(reqBody=KRB_KDC_REQ_BODY(realm="EXAMPLE.ORG"))))
    except Exception as e:  # scapy's ASN.1 defaults vary between versions
        pytest.skip(f"scapy cannot build an AS-REQ here: {e}")
    assert asreq[0] == 0x6a
    assert verdict("udp", 40000, 88, [(asreq, CLIENT)])["app"] == "kerberos"
    tcp = struct.pack(">I", len(asreq)) + asreq
    assert_split("tcp", 40000, 88, tcp, 6, "kerberos")
    assert_no_match("tcp", 40000, 389, GARBAGE + [b"\x30\x05\x02\x01\x01\x62\x00"])   # tag 0x62 is no op
    assert_no_match("udp", 40000, 88, [b"\x6a\x03\x02\x01\x05"])                      # no SEQUENCE after


# ---- text protocols: SIP, RTSP, SSDP, mail, FTP -----------------------------------------------------------

def test_sip_rtsp_ssdp():
    inv = b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1\r\n\r\n"
    assert verdict("udp", 5060, 5060, [(inv, CLIENT)])["app"] == "sip"
    assert_split("tcp", 40000, 5060, inv, 12, "sip")
    r = verdict("tcp", 40000, 554, [(b"DESCRIBE rtsp://cam1.lab:554/stream1 RTSP/1.0\r\nCSeq: 2\r\n\r\n", CLIENT)])
    assert (r["app"], r["server_name"]) == ("rtsp", "cam1.lab")
    ssdp = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\n\r\n"
    assert verdict("udp", 50000, 1900, [(ssdp, CLIENT)])["app"] == "ssdp"
    assert_no_match("udp", 5060, 5060, GARBAGE + [b"INVITE sip:bob SIP/3.0\r\n\r\n", b"invite sip:x SIP/2.0\r\n"])


def test_mail_and_ftp():
    r = verdict("tcp", 40000, 25, [(b"220 mx.example.org ESMTP Postfix\r\n", SERVER)])
    assert r["app"] == "smtp"
    assert verdict("tcp", 40000, 110, [(b"+OK POP3 server ready\r\n", SERVER)])["app"] == "pop3"
    assert verdict("tcp", 40000, 143, [(b"* OK [CAPABILITY IMAP4rev1] ready\r\n", SERVER)])["app"] == "imap"
    assert verdict("tcp", 40000, 587, [(b"EHLO client.example.org\r\n", CLIENT)])["app"] == "smtp"
    assert verdict("tcp", 40000, 21, [(b"220 (vsFTPd 3.0.5)\r\n", SERVER)])["app"] == "ftp"
    f = DpiFlow("tcp", 40000, 25)
    f.packet(b"220 mx.example.org ES", SERVER, 10)
    assert f.state()["label"] is None and f.state()["need_more"]
    f.packet(b"MTP ready\r\n", SERVER, 31)
    assert f.state()["label"] == "smtp"
    assert_no_match("tcp", 40000, 2500, GARBAGE + [b"220 hello there\r\n", b"+OK\r\n"], d=SERVER)


# ---- remote access, VPN ----------------------------------------------------------------------------------

def test_vnc_rdp_socks():
    r = verdict("tcp", 40000, 5900, [(b"RFB 003.008\n", SERVER)])
    assert (r["app"], r["version"]) == ("vnc", "003.008")
    assert_split("tcp", 40000, 5900, b"RFB 003.008\n", 5, "vnc", d=SERVER)
    # TPKT (RFC 1006) + X.224 Connection Request with the mstshash cookie (MS-RDPBCGR 2.2.1.1)
    cookie = b"Cookie: mstshash=alice\r\n"
    x224 = bytes([6 + len(cookie), 0xe0, 0, 0, 0, 0, 0]) + cookie
    rdp = struct.pack(">BBH", 3, 0, 4 + len(x224)) + x224
    assert verdict("tcp", 40000, 3389, [(rdp, CLIENT)])["app"] == "rdp"
    assert_split("tcp", 40000, 3389, rdp, 3, "rdp")
    assert verdict("tcp", 40000, 102, [(rdp, CLIENT)])["app"] == ""    # ISO-TSAP (S7) on port 102
    assert verdict("tcp", 40000, 1080, [(b"\x05\x02\x00\x02", CLIENT)])["app"] == "socks"
    assert_no_match("tcp", 40000, 5900, GARBAGE + [b"RFB 3.8\n\n\n\n\n", b"\x03\x00\x00\x0b\x07\xe0" + bytes(5)])


def test_wireguard_openvpn_ipsec():
    from scapy.contrib.wireguard import Wireguard, WireguardInitiation
    wg = raw(Wireguard() / WireguardInitiation())
    assert len(wg) == 148 and verdict("udp", 40000, 51820, [(wg, CLIENT)])["app"] == "wireguard"
    assert_udp_cut(40000, 51820, wg, 60, "wireguard")
    # OpenVPN P_CONTROL_HARD_RESET_CLIENT_V2 (opcode 7, key id 0), session id, HMAC-less, packet id array
    ovpn = bytes([7 << 3]) + bytes(range(1, 9)) + b"\x00" + struct.pack(">I", 0) + bytes(8)
    assert verdict("udp", 40000, 1194, [(ovpn, CLIENT)])["app"] == "openvpn"
    assert verdict("tcp", 40000, 1194, [(struct.pack(">H", len(ovpn)) + ovpn, CLIENT)])["app"] == "openvpn"
    from scapy.layers.isakmp import ISAKMP
    ike = raw(ISAKMP(init_cookie=b"\x11" * 8, exch_type=2))
    r = verdict("udp", 500, 500, [(ike, CLIENT)])
    assert (r["app"], r["version"]) == ("ipsec", "IKEv1")
    nat_t = bytes(4) + ike    # UDP 4500: non-ESP marker before IKE
    assert verdict("udp", 4500, 4500, [(nat_t, CLIENT)])["app"] == "ipsec"
    assert_no_match("udp", 40000, 51820, GARBAGE + [bytes([1, 0, 0, 1]) + bytes(144), bytes([1, 0, 0, 0]) + bytes(100)])


def test_dtls_client_hello():
    """DTLS 1.2 ClientHello (RFC 6347 4.2.2): record header with epoch and sequence, handshake header with
    message sequence and fragment fields, then the hello with its (empty) cookie."""
    name = b"turn.example.net"
    exts = tls_ext(0, struct.pack(">HBH", len(name) + 3, 0, len(name)) + name)
    body = b"\xfe\xfd" + bytes(32) + b"\x00" + b"\x00" + struct.pack(">H", 2) + b"\xc0\x2b" + b"\x01\x00" + \
        struct.pack(">H", len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + b"\x00\x00" + bytes(3) + len(body).to_bytes(3, "big") + body
    rec = b"\x16\xfe\xff" + b"\x00\x00" + bytes(6) + struct.pack(">H", len(hs)) + hs
    r = verdict("udp", 40000, 3478, [(rec, CLIENT)])
    assert (r["app"], r["server_name"]) == ("dtls", "turn.example.net")
    assert_udp_cut(40000, 5004, rec, 30, "dtls")
    assert_no_match("udp", 40000, 5004, GARBAGE + [b"\x16\xfe\xfd" + bytes(10) + b"\x00\x05" + bytes(5)])


# ---- the tables ------------------------------------------------------------------------------------------

def test_every_dissector_module_has_a_test_here():
    """Guards this file: each dissector module named in the registry appears in a test above."""
    import inspect
    import sys
    src = inspect.getsource(sys.modules[__name__])
    modules = {m for t in dpi_dissectors().values() for m, _ in t}
    words = {"tls": "client_hello", "http": "http_request", "http2": "h2_request", "dns": "DNSQR",
             "quic": "quic_long_header", "ssh": "SSH-2.0", "smb": "SMB2_Header", "nvme_tcp": "nvme_icreq",
             "iscsi": "iscsi_login", "onc_rpc": "RPC_Call", "postgresql": "196608", "mysql": "mysql_greeting",
             "bgp": "BGPOpen", "mqtt": "MQTTConnect", "kerberos": "KRB_AS_REQ", "ldap": "LDAP_BindRequest",
             "sip": "INVITE sip", "redis": "$3\\r\\nSET", "kafka": "kafka_request", "fluentd": "kube.var.log",
             "tds": "PRELOGIN", "mongodb": "OP_MSG", "rfb": "RFB 003.008", "rdp": "mstshash", "amqp": "AMQP",
             "ceph": "ceph v2", "zabbix": "ZBXD", "mail": "ESMTP", "ftp": "vsFTPd", "netbios": "NBNSQueryRequest",
             "memcached": "get user", "syslog": "<34>1", "socks": "1080", "openvpn": "HARD_RESET",
             "roce": "BTH(", "dtls": "DTLS 1.2", "stun": "STUN(", "dhcp": "BOOTP(", "dhcpv6": "DHCP6_Solicit",
             "ntp": "NTP(", "snmp": "SNMPget", "radius": "RadiusAttr", "ike": "ISAKMP(", "wireguard": "WireguardInitiation",
             "statsd": "dogstatsd"}
    missing = [m for m in modules if m not in words or words[m] not in src]
    assert not missing, f"dissectors without vectors here: {missing}"


# ---- behaviours found against nDPI's captures -----------------------------------------------------------

def stun_binding(cookie=True, attrs=b"") -> bytes:
    """RFC 5389 Binding Request (with the magic cookie) or RFC 3489 (16-byte transaction id)."""
    tid = struct.pack(">I", 0x2112A442) + bytes(range(12)) if cookie else bytes(range(16))
    return struct.pack(">HH", 0x0001, len(attrs)) + tid + attrs


def test_stun_over_tcp_classic_and_dtls_after_stun():
    # over TCP, bare and with RFC 4571 framing
    assert verdict("tcp", 40000, 3478, [(stun_binding(), CLIENT)])["app"] == "stun"
    framed = struct.pack(">H", 20) + stun_binding()
    assert verdict("tcp", 40000, 42000, [(framed, CLIENT)])["app"] == "stun"
    assert_split("tcp", 40000, 42000, framed, 9, "stun")
    # classic STUN with a vendor attribute (type 0x0101, 4 bytes) that tiles the message
    classic = stun_binding(False, struct.pack(">HH", 0x0101, 4) + b"abcd")
    assert verdict("udp", 40000, 8801, [(classic, CLIENT)])["app"] == "stun"
    assert verdict("udp", 40000, 8801, [(classic[:-1], CLIENT)])["app"] == ""
    # WebRTC: STUN checks, then DTLS on the same 5-tuple: the flow is dtls
    dtls_rec = b"\x16\xfe\xfd" + b"\x00\x00" + bytes(6) + struct.pack(">H", 12) + bytes(12)
    r = verdict("udp", 40000, 19305, [(stun_binding(), CLIENT), (stun_binding(), SERVER), (dtls_rec, CLIENT)])
    assert (r["app"], r["base"]) == ("dtls", "stun")


def test_dtls_mid_session_and_pre_rfc_version():
    # two application-data records (epoch 1) that tile the datagram
    rec = lambda n: b"\x17\xfe\xfd" + b"\x00\x01" + bytes(5) + b"\x07" + struct.pack(">H", n) + bytes(n)  # noqa: E731
    assert verdict("udp", 40000, 443, [(rec(40) + rec(20), SERVER)])["app"] == "dtls"
    assert verdict("udp", 40000, 443, [(rec(40)[:-1], SERVER)])["app"] != "dtls"
    epoch0 = b"\x17\xfe\xfd" + b"\x00\x00" + bytes(6) + struct.pack(">H", 4) + bytes(4)
    assert verdict("udp", 40000, 5000, [(epoch0, CLIENT)])["app"] == ""
    # OpenSSL's DTLS1_BAD_VER (0x0100), still used by Cisco AnyConnect: a handshake record
    body = bytes(12 + 20)
    old = b"\x16\x01\x00" + b"\x00\x00" + bytes(6) + struct.pack(">H", len(body)) + b"\x01" + \
        (20).to_bytes(3, "big") + b"\x00\x00" + bytes(3) + (20).to_bytes(3, "big") + bytes(20)
    assert verdict("udp", 40000, 443, [(old, CLIENT)])["app"] == "dtls"


def test_openvpn_hard_reset_shapes_off_port():
    sid = bytes(range(1, 9))
    plain = bytes([0x38]) + sid + b"\x00" + bytes(4)                                  # 14 bytes
    tls_auth = bytes([0x38]) + sid + bytes(20) + struct.pack(">II", 1, 0x65000000) + b"\x00" + bytes(4)
    tls_crypt = bytes([0x38]) + sid + struct.pack(">II", 1, 0x63cf4ff5) + bytes(32) + b"\x9a\x11\x02\x77\x31"
    for pkt in (plain, tls_auth, tls_crypt):
        assert verdict("udp", 40000, 443, [(pkt, CLIENT)])["app"] == "openvpn", len(pkt)
        assert verdict("tcp", 40000, 443, [(struct.pack(">H", len(pkt)) + pkt, CLIENT)])["app"] == "openvpn"
    assert verdict("udp", 40000, 443, [(plain, SERVER)])["app"] == "openvpn"   # initiator guessed wrong
    # the server's reset: ACK array of one (packet 0 of the client's session), message packet id 0
    server = bytes([0x40]) + bytes(range(11, 19)) + b"\x01" + bytes(4) + sid + bytes(4)
    assert verdict("udp", 40000, 443, [(server, CLIENT)])["app"] == "openvpn"
    near = [bytes([0x38]) + sid + b"\x01" + bytes(4), bytes([0x40]) + sid + b"\x00" + bytes(4),
            bytes([0x38]) + sid + struct.pack(">II", 1, 0x10000000) + bytes(32) + b"\x01\x02\x03\x04\x05"]
    assert_no_match("udp", 40000, 443, near)


def test_socks_wireguard_mqtt_need_the_other_side_off_their_ports():
    # SOCKS 5 greeting, then the server's method choice
    assert_split_dirs = lambda proto, port, first, second, label: (  # noqa: E731
        feed(proto, 40000, port, [(first, CLIENT)]).state()["label"] is None and
        feed(proto, 40000, port, [(first, CLIENT), (second, SERVER)]).state()["label"] == label)
    assert assert_split_dirs("tcp", 21477, b"\x05\x01\x00", b"\x05\x00", "socks")
    assert verdict("tcp", 40000, 21477, [(b"\x05\x01\x00", CLIENT), (b"\x06\x00", SERVER)])["app"] == ""
    # WireGuard transport data both ways (a tunnel captured mid-way)
    data = lambda idx: b"\x04\x00\x00\x00" + struct.pack("<I", idx) + bytes(8) + bytes(32)  # noqa: E731
    assert assert_split_dirs("udp", 5060, data(7), data(9), "wireguard")
    assert verdict("udp", 40000, 5060, [(data(7), CLIENT), (data(7)[:-1], SERVER)])["app"] == ""
    # MQTT keep-alive: PINGREQ, PINGRESP
    assert assert_split_dirs("tcp", 17501, b"\xc0\x00", b"\xd0\x00", "mqtt")
    assert verdict("tcp", 40000, 17501, [(b"\xd0\x00", CLIENT)])["app"] == ""


def test_rdp_udp_syslog_off_port_mongodb_reply_ssdp_answer():
    # MS-RDPEUDP SYN: snSourceAck -1, receive window 64, flags SYN | CORRELATION_ID | SYNEX
    syn = struct.pack(">IHH", 0xffffffff, 64, 0x1801) + bytes(24)
    assert verdict("udp", 54759, 3389, [(syn, CLIENT)])["app"] == "rdp"
    assert verdict("udp", 54759, 3389, [(struct.pack(">IHH", 0xfffffffe, 64, 0x1801), CLIENT)])["app"] == ""
    # syslog off its ports needs a whole header: RFC 5424 or RFC 3164
    assert verdict("tcp", 40000, 52173, [(b"<14>1 2024-03-01T10:00:00.1Z n1 app - - - x", CLIENT)])["app"] == "syslog"
    assert verdict("udp", 40000, 11000, [(b"<13>Mar  1 10:00:00 n1 app: x", CLIENT)])["app"] == "syslog"
    assert verdict("udp", 40000, 11000, [(b"<13>hello world, no header", CLIENT)])["app"] == ""
    # MongoDB OP_REPLY only from the server and in answer to a request id
    reply = struct.pack("<iiiiiqii", 36, 2, 1, 1, 0, 0, 0, 0)
    assert verdict("tcp", 40000, 27017, [(reply, SERVER)])["app"] == "mongodb"
    assert verdict("tcp", 40000, 443, [(reply, CLIENT)])["app"] == ""
    # SSDP: an M-SEARCH answer goes back to the searcher's own port
    ans = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nST: upnp:rootdevice\r\n\r\n"
    assert verdict("udp", 38616, 61328, [(ans, CLIENT)])["app"] == "ssdp"


def test_quic_client_hello_over_two_initials_from_a_real_capture():
    """quic_frags_ch_in_multiple_packets (nDPI's test data): the ClientHello's CRYPTO data starts in the
    first Initial and continues at offset 1182 in the second (tshark shows both offsets). nDPI lists the
    advertised ALPNs as h3-34;hq-34;...: the first is h3-34."""
    import os
    from pathlib import Path
    data = Path(os.environ.get("FLOWTAP_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    pcap = data / "ndpi" / "pcap" / "quic_frags_ch_in_multiple_packets.pcapng"
    if not pcap.exists():
        pytest.skip(f"{pcap} not found")
    from scapy.all import UDP, rdpcap
    client = [bytes(p[UDP].payload)[:p[UDP].len - 8] for p in rdpcap(str(pcap)) if p[UDP].sport == 58822]
    f = DpiFlow("udp", 58822, 4443)
    f.packet(client[0], CLIENT)
    st = f.state()
    assert st["label"] == "quic" and not st["done"]   # the label now; still gathering the ClientHello
    f = DpiFlow("udp", 58822, 4443)
    for c in client:
        f.packet(c, CLIENT)
    assert f.state()["done"] and f.state()["inspected"] == 2   # the whole ClientHello was read
    r = f.result()
    assert (r["app"], r["version"], r["alpn"]) == ("quic", "v1", "h3-34")
