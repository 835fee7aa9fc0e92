"""DPI end to end: a scapy-built capture through replay into Parquet, the DPI columns and counters.

Expected values are the ones put into the packets (names, query type, response code) and the shipped
rules' documented decisions.
"""
from __future__ import annotations

import json
import struct

import pytest

scapy = pytest.importorskip("scapy.all")
from scapy.all import DNS, DNSQR, IP, TCP, UDP, Ether, Raw, wrpcap  # noqa: E402
from scapy.contrib.roce import BTH  # noqa: E402

import pyarrow.parquet as pq  # noqa: E402

from dpi import schema  # noqa: E402
from dpi.engine import EngineConfig  # noqa: E402
from dpi.replay import replay  # noqa: E402

T0 = 1_700_000_000


def client_hello(sni: bytes) -> bytes:
    ext = struct.pack(">HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack(">H", len(ext)) + ext
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


def tcp_flow(src, dst, sport, dport, payloads, t):
    """Handshake, then client payload segments; returns packets."""
    pk = [Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=1000),
          Ether() / IP(src=dst, dst=src) / TCP(sport=dport, dport=sport, flags="SA", seq=5000, ack=1001)]
    seq = 1001
    for p in payloads:
        pk.append(Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags="PA", seq=seq, ack=5001) / Raw(p))
        seq += len(p)
    for i, p in enumerate(pk):
        p.time = t + i * 0.001
    return pk


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    d = tmp_path_factory.mktemp("dpi")
    pk = []
    pk += tcp_flow("10.0.0.1", "10.0.0.2", 40001, 443, [client_hello(b"Api.Example.COM")], T0)
    q = DNS(id=0x77, rd=1, qd=DNSQR(qname="ray-head.ml.svc.cluster.local.", qtype="A"))
    r = DNS(id=0x77, qr=1, rd=1, ra=1, rcode=3, qd=DNSQR(qname="ray-head.ml.svc.cluster.local.", qtype="A"))
    pk += [Ether() / IP(src="10.0.0.1", dst="10.0.0.53") / UDP(sport=40002, dport=53) / q,
           Ether() / IP(src="10.0.0.53", dst="10.0.0.1") / UDP(sport=53, dport=40002) / r]
    pk[-2].time, pk[-1].time = T0 + 1, T0 + 1.001
    scrape = b"GET /metrics HTTP/1.1\r\nHost: gpu17:9400\r\nUser-Agent: Prometheus/2.48.1\r\n\r\n"
    pk += tcp_flow("10.0.0.1", "10.0.0.3", 40003, 9400, [scrape], T0 + 2)
    roce = Ether() / IP(src="10.0.1.1", dst="10.0.1.2") / UDP(sport=49152, dport=4791) / \
        Raw(bytes(BTH(opcode=0x0a, dqpn=0x11, psn=7))[:12] + bytes(16) + bytes(256))
    roce.time = T0 + 3
    pk.append(roce)
    syn = Ether() / IP(src="10.0.0.1", dst="10.0.0.4") / TCP(sport=40005, dport=2379, flags="S", seq=1)
    syn.time = T0 + 4
    pk.append(syn)
    # 20 one-byte segments that keep the SSH dissector waiting: the budget stops DPI at 16 packets
    pk += tcp_flow("10.0.0.1", "10.0.0.5", 40006, 40022, [b"S", b"S", b"H", b"-"] + [b"2"] * 16, T0 + 5)
    path = d / "dpi.pcap"
    wrpcap(str(path), pk)
    return path


def run(capture, tmp_path, **cfg):
    out = tmp_path / "f.parquet"
    res = replay([str(capture)], str(out), EngineConfig(observer_host="t", **cfg))
    t = pq.read_table(out).sort_by("flow_id")
    return {r["dst_port"]: r for r in t.to_pylist()}, res, pq.read_metadata(out).metadata


def test_dpi_columns_end_to_end(capture, tmp_path):
    rows, res, meta = run(capture, tmp_path)
    tls = rows[443]
    assert (tls["app_proto"], tls["app_category"], tls["app_rule"], tls["app_confidence"], tls["server_name"],
            tls["app_payload_proto"], tls["dpi_packets"]) == \
        ("tls", "web", "dissector:tls", "payload", "api.example.com", "tls", 1)
    dns = rows[53]
    assert (dns["app_proto"], dns["server_name"], dns["dns_qtype"], dns["dns_rcode"], dns["dpi_packets"]) == \
        ("dns", "ray-head.ml.svc.cluster.local", 1, 3, 2)
    prom = rows[9400]
    assert (prom["app_proto"], prom["app_category"], prom["http_method"], prom["http_path"],
            prom["http_user_agent"], prom["server_name"], prom["app_payload_proto"]) == \
        ("prometheus", "monitoring", "GET", "/metrics", "Prometheus/2.48.1", "gpu17", "http")
    assert (rows[4791]["app_proto"], rows[4791]["app_category"]) == ("rocev2", "rdma")
    etcd = rows[2379]
    assert (etcd["app_proto"], etcd["app_rule"], etcd["app_confidence"], etcd["dpi_packets"],
            etcd["app_payload_proto"]) == ("etcd", "rule:etcd-ports", "port", 0, None)
    slow = rows[40022]
    assert slow["app_proto"] is None and slow["dpi_packets"] == 16 and slow["app_confidence"] is None
    c = json.loads(meta[b"flowtap.counters"])["dpi"]
    assert c["budget_packets"] == 16 and c["flows_budget_spent"] == 1
    assert c["packets_inspected"] == 1 + 2 + 1 + 1 + 16
    assert c["flows_inspected"] == 5 and c["reassembly_started"] == 1
    assert json.loads(meta[b"flowtap.settings"])["dpi_budget"] == 16


def test_budget_and_off(capture, tmp_path):
    rows, _, _ = run(capture, tmp_path, dpi_budget=4)
    assert rows[40022]["dpi_packets"] == 4 and rows[443]["app_proto"] == "tls"
    rows, _, meta = run(capture, tmp_path, dpi_budget=0)
    dpi_group = [c.name for c in schema.COLUMNS if c.group == "dpi"]
    assert len(dpi_group) == 13 and "server_name" in dpi_group and "dpi_packets" in dpi_group
    for r in rows.values():   # DPI off: app_proto (a core column) null, the DPI group's columns absent
        assert r["app_proto"] is None and not set(dpi_group) & set(r)
    assert json.loads(meta[b"flowtap.column_groups"]) == ["core", "roce", "tcp"]
    assert json.loads(meta[b"flowtap.counters"])["dpi"] == {}
