"""Rule files: the TOML format, its errors (file and line), precedence, and matching in the C registry.

Matching is exercised through dpi._flowtable.DpiFlow with the compiled rules, so the tables the flow table
uses are the ones under test; the command line is exercised through click's runner and a scapy capture.
"""
from __future__ import annotations

import random
import re
import struct
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from dpi._flowtable import DPI_RULE_BASE, DpiFlow
from dpi.rules import SHIPPED_DIR, load_rules, parse_file

CLIENT, SERVER = 0, 1
CONF = {0: None, 1: "payload", 2: "name", 3: "address", 4: "port", 5: "guess"}


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip())
    return p


def ruleset(tmp_path, text, shipped=False, name="r.toml"):
    write(tmp_path, name, text)
    rs = load_rules([tmp_path], shipped=shipped)
    assert not rs.errors, [str(e) for e in rs.errors]
    return rs


def classify(rs, proto, cport, sport, pkts=(), caddr="10.0.0.1", saddr="10.0.0.2"):
    """Runs packets through one flow with the rules; returns (app, rule id or dissector, confidence)."""
    import ipaddress
    f = DpiFlow(proto, cport, sport, compiled_rules=rs.compile(),
                client_addr=ipaddress.ip_address(caddr).packed, server_addr=ipaddress.ip_address(saddr).packed)
    seq = {CLIENT: 1, SERVER: 1}
    for payload, d in pkts:
        f.packet(payload, d, seq[d])
        seq[d] += len(payload)
    r = f.result()
    rid = r["rule_id"]
    rule = rs.rules[rid - DPI_RULE_BASE].id if rid >= DPI_RULE_BASE else ("dissector" if rid else None)
    return r["app"] or None, rule, CONF[r["conf"]]


def client_hello(sni: str, alpn: str = "h2") -> bytes:
    name = sni.encode()
    ext = struct.pack(">HHHBH", 0, len(name) + 5, len(name) + 3, 0, len(name)) + name
    a = alpn.encode()
    ext += struct.pack(">HHHB", 16, len(a) + 3, len(a) + 1, len(a)) + a
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00" + struct.pack(">H", len(ext)) + ext
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack(">H", len(hs)) + hs


# ---- the shipped rules -----------------------------------------------------------------------------------

def test_shipped_rules_are_valid_and_conflict_free():
    rs = load_rules()
    assert not rs.errors, [str(e) for e in rs.errors]
    assert not rs.conflicts, rs.conflicts
    assert len(rs.files) >= 5 and all(Path(f).parent == SHIPPED_DIR for f in rs.files)
    apps = {r.app for r in rs.rules}
    for want in ("kube-apiserver", "kubelet", "etcd", "torch-distributed", "slurm", "ray", "prometheus",
                 "node-exporter", "fluentd", "datadog", "nfs", "ceph", "lustre"):
        assert want in apps, want


def test_shipped_gpu_cluster_rules_decide_as_documented():
    rs = load_rules()
    # TLS to 2379 is etcd (the rule names the tls verdict), at port confidence
    assert classify(rs, "tcp", 50000, 2379, [(client_hello("etcd-1.example"), CLIENT)]) == \
        ("etcd", "etcd-ports", "port")
    # the API server by its in-cluster name, on any port
    assert classify(rs, "tcp", 50000, 443, [(client_hello("kubernetes.default.svc"), CLIENT)]) == \
        ("kube-apiserver", "kube-apiserver-name", "name")
    # a port-only rule never overrides a payload verdict it does not name: HTTP on 29500 stays http
    assert classify(rs, "tcp", 50000, 29500, [(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", CLIENT)])[0] == "http"
    # ... but names a flow that carried no payload (port), or payload nothing recognised (guess)
    assert classify(rs, "tcp", 50000, 29500) == ("torch-distributed", "torch-distributed-store", "port")
    assert classify(rs, "tcp", 50000, 29500, [(bytes(range(40)), CLIENT)]) == \
        ("torch-distributed", "torch-distributed-store", "guess")
    # Redis (RESP) on 6379 stays redis; gRPC there is Ray's GCS
    assert classify(rs, "tcp", 50000, 6379, [(b"*1\r\n$4\r\nPING\r\n", CLIENT)])[0] == "redis"
    assert classify(rs, "tcp", 50000, 6379, [(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", CLIENT)])[0] == "ray"
    # a scrape of node_exporter is a Prometheus scrape (the payload says so)
    scrape = b"GET /metrics HTTP/1.1\r\nHost: n1:9100\r\nUser-Agent: Prometheus/2.48.1\r\n\r\n"
    assert classify(rs, "tcp", 50000, 9100, [(scrape, CLIENT)])[:2] == ("prometheus", "dissector")
    assert classify(rs, "tcp", 50000, 443, [(client_hello("http-intake.logs.datadoghq.eu"), CLIENT)])[0] == "datadog"


# ---- errors name file and line ---------------------------------------------------------------------------

def test_toml_syntax_error_names_file_and_line(tmp_path):
    write(tmp_path, "bad.toml", """
        [[rule]]
        id = "a"
        app = "x"
        category = "web"
        ports = [80
        """)
    rs = load_rules([tmp_path], shipped=False)
    assert len(rs.errors) == 1 and not rs.rules
    e = rs.errors[0]
    assert e.path.endswith("bad.toml") and e.line in (5, 6) and "TOML syntax" in e.message
    assert re.match(r".*bad\.toml:\d+: TOML syntax", str(e))


@pytest.mark.parametrize("body,line,msg", [
    ('[[rule]]\nid = "a"\napp = "x"\ncategory = "web"\nports = [70000]\n', 1, "bad port range"),
    ('# c\n\n[[rule]]\nid = "a"\napp = "x"\ncategory = "nope"\nports = [80]\n', 3, "unknown category"),
    ('[[rule]]\nid = "a"\napp = "X Y"\ncategory = "web"\nports = [80]\n', 1, "bad app label"),
    ('[[rule]]\nid = "a"\napp = "x"\ncategory = "web"\ncidr = ["10.0.0.1/8"]\n', 1, "bad cidr"),
    ('[[rule]]\nid = "a"\napp = "x"\ncategory = "web"\ndetected = ["tlss"]\n', 1, "detected names labels"),
    ('[[rule]]\nid = "a"\napp = "x"\ncategory = "web"\n', 1, "at least one condition"),
    ('[[rule]]\nid = "a"\napp = "x"\ncategory = "web"\nport = [80]\n', 1, "unknown key"),
    ('[[rule]]\nid = "a"\napp = "x"\ncategory = "web"\nports = [80]\nside = "left"\n', 1, "side must be"),
    ('[[rule]]\nid = "ok"\napp = "x"\ncategory = "web"\nports = [80]\n\n[[rule]]\nid = "b"\napp = "x"\n'
     'category = "web"\n\n[[rule.payload]]\nhex = "zz 01"\n', 12, "bad hex byte"),
    ('[[rule]]\nid = "b"\napp = "x"\ncategory = "web"\n[[rule.payload]]\ntext = "' + "a" * 65 + '"\n', 5,
     "1..64 bytes"),
    ('[[rule]]\nid = "b"\napp = "x"\ncategory = "web"\n[[rule.payload]]\nhex = "?? ??"\n', 5, "not ??"),
    ('[[rule]]\nid = "b"\napp = "x"\ncategory = "web"\n[[rule.payload]]\ntext = "a"\nwithin = 9000\n', 5,
     "exceeds"),
])
def test_semantic_errors_name_the_rule_line(tmp_path, body, line, msg):
    p = tmp_path / "r.toml"
    p.write_text(body)
    rules, errors = parse_file(p, user=True)
    assert rules == [] and len(errors) >= 1, errors
    assert errors[0].line == line and msg in errors[0].message, str(errors[0])
    assert str(errors[0]).startswith(f"{p}:{line}: ")


def test_a_bad_rule_keeps_the_whole_file_out_and_every_error_is_listed(tmp_path):
    write(tmp_path, "two.toml", """
        [[rule]]
        id = "good"
        app = "x"
        category = "web"
        ports = [80]

        [[rule]]
        id = "bad1"
        app = "x"
        category = "web"
        ports = ["80-70"]

        [[rule]]
        id = "bad2"
        app = "x"
        category = "nope"
        ports = [81]
        """)
    rs = load_rules([tmp_path], shipped=False)
    assert [e.line for e in rs.errors] == [7, 13] and rs.rules == []


def test_duplicate_ids_and_user_overrides(tmp_path):
    write(tmp_path, "dup.toml", """
        [[rule]]
        id = "same"
        app = "x"
        category = "web"
        ports = [80]

        [[rule]]
        id = "same"
        app = "y"
        category = "web"
        ports = [81]
        """)
    rs = load_rules([tmp_path], shipped=False)
    assert len(rs.errors) == 1 and rs.errors[0].line == 7 and "duplicate rule id 'same'" in rs.errors[0].message
    (tmp_path / "dup.toml").unlink()
    write(tmp_path, "mine.toml", """
        [[rule]]
        id = "etcd-ports"
        app = "my-etcd"
        category = "database"
        priority = 50
        ports = [2379]
        """)
    rs = load_rules([tmp_path])
    assert not rs.errors and len(rs.overrides) == 1 and "replaces the shipped rule" in rs.overrides[0]
    assert "etcd-ports" in [r.id for r in rs.rules if r.user]
    assert not any(r.id == "etcd-ports" and not r.user for r in rs.rules)
    assert classify(rs, "tcp", 50000, 2379) == ("my-etcd", "etcd-ports", "port")


def test_conflicts_are_reported_and_resolved_deterministically(tmp_path):
    rs = load_rules([write(tmp_path, "c.toml", """
        [[rule]]
        id = "first"
        app = "aaa"
        category = "web"
        ports = [7000]

        [[rule]]
        id = "second"
        app = "bbb"
        category = "web"
        ports = ["6990-7010"]

        [[rule]]
        id = "elsewhere"
        app = "ccc"
        category = "web"
        ports = [8000]
        """)], shipped=False)
    assert len(rs.conflicts) == 1 and "'first' (aaa)" in rs.conflicts[0] and "'second' (bbb)" in rs.conflicts[0]
    assert classify(rs, "tcp", 50000, 7000)[0] == "aaa"    # earlier in the file wins the tie
    assert classify(rs, "tcp", 50000, 7005)[0] == "bbb"


def test_precedence_priority_then_user_then_specificity(tmp_path):
    shipped_like = tmp_path / "a"
    shipped_like.mkdir()
    rs = load_rules([write(shipped_like, "p.toml", """
        [[rule]]
        id = "low"
        app = "low"
        category = "web"
        priority = 1
        ports = [7100]

        [[rule]]
        id = "high"
        app = "high"
        category = "web"
        priority = 2
        ports = [7100]

        [[rule]]
        id = "specific"
        app = "specific"
        category = "web"
        priority = 1
        protocol = "tcp"
        ports = [7200]

        [[rule]]
        id = "broad"
        app = "broad"
        category = "web"
        priority = 1
        ports = [7200]
        """)], shipped=False)
    assert classify(rs, "tcp", 50000, 7100)[0] == "high"
    assert classify(rs, "tcp", 50000, 7200)[0] == "specific"
    assert classify(rs, "udp", 50000, 7200)[0] == "broad"


# ---- conditions ------------------------------------------------------------------------------------------

def test_ports_side_and_cidr(tmp_path):
    rs = ruleset(tmp_path, """
        [[rule]]
        id = "srv"
        app = "srvapp"
        category = "other"
        ports = ["7300-7310"]

        [[rule]]
        id = "either"
        app = "eitherapp"
        category = "other"
        ports = [7400]
        side = "either"

        [[rule]]
        id = "net"
        app = "netapp"
        category = "storage"
        cidr = ["192.0.2.0/24", "2001:db8::/32"]
        """)
    assert classify(rs, "tcp", 50000, 7305)[0] == "srvapp"
    assert classify(rs, "tcp", 7305, 50000)[0] is None            # the initiator's port is not the server's
    assert classify(rs, "tcp", 7400, 50000)[0] == "eitherapp"
    assert classify(rs, "udp", 50000, 9, saddr="192.0.2.77") == ("netapp", "net", "address")
    assert classify(rs, "udp", 50000, 9, saddr="192.0.3.1")[0] is None
    assert classify(rs, "udp", 50000, 9, caddr="2001:db8::1", saddr="2001:db8:1::2")[0] == "netapp"
    # an address rule names flows whatever their payload (it is specific enough to beat a verdict)
    assert classify(rs, "tcp", 50000, 443, [(client_hello("a.example"), CLIENT)], saddr="192.0.2.5")[0] == "netapp"


def test_server_names_exact_suffix_glob_and_alpn(tmp_path):
    rs = ruleset(tmp_path, """
        [[rule]]
        id = "exact"
        app = "exactapp"
        category = "web"
        server_name = ["api.example.com"]

        [[rule]]
        id = "suffix"
        app = "suffixapp"
        category = "web"
        server_name = ["*.svc.cluster.local"]

        [[rule]]
        id = "glob"
        app = "globapp"
        category = "web"
        server_name = ["gpu-node-??.lab.*"]

        [[rule]]
        id = "alpn"
        app = "grpcish"
        category = "rpc"
        alpn = ["grpc-exp"]
        """)
    hello = lambda n, a="h2": [(client_hello(n, a), CLIENT)]  # noqa: E731
    assert classify(rs, "tcp", 50000, 443, hello("API.example.com")) == ("exactapp", "exact", "name")
    assert classify(rs, "tcp", 50000, 443, hello("www.api.example.com"))[0] == "tls"
    assert classify(rs, "tcp", 50000, 443, hello("etcd.kube-system.svc.cluster.local"))[0] == "suffixapp"
    assert classify(rs, "tcp", 50000, 443, hello("svc.cluster.local"))[0] == "tls"
    assert classify(rs, "tcp", 50000, 443, hello("gpu-node-07.lab.example"))[0] == "globapp"
    assert classify(rs, "tcp", 50000, 443, hello("gpu-node-107.lab.example"))[0] == "tls"
    assert classify(rs, "tcp", 50000, 443, hello("x.example", "grpc-exp")) == ("grpcish", "alpn", "name")


def py_pattern_match(pattern: bytes, care: bytes, data: bytes, offset: int, within: int) -> bool:
    """Independent reference: a regular expression with '.' for the wildcard bytes."""
    rx = re.compile(b"".join(re.escape(bytes([b])) if c else b"." for b, c in zip(pattern, care)), re.S)
    end = min(len(data), offset + within + len(pattern) - 1)
    return rx.search(data, offset, end) is not None


def test_payload_patterns_fixed_offset_anywhere_and_wildcards(tmp_path):
    rs = ruleset(tmp_path, """
        [[rule]]
        id = "nccl-like"
        app = "magic"
        category = "ml"
        protocol = "tcp"

        [[rule.payload]]
        direction = "client"
        offset = 4
        hex = "de ad ?? ef"

        [[rule]]
        id = "anywhere"
        app = "needle"
        category = "other"

        [[rule.payload]]
        text = "torch.distributed"
        within = 200
        """)
    magic = b"\x00\x01\x02\x03\xde\xad\x77\xef" + bytes(20)
    assert classify(rs, "tcp", 50000, 6000, [(magic, CLIENT)]) == ("magic", "nccl-like", "payload")
    assert classify(rs, "tcp", 50000, 6000, [(magic, SERVER)])[0] is None          # client direction only
    assert classify(rs, "tcp", 50000, 6000, [(b"\x00" + magic, CLIENT)])[0] is None  # wrong offset
    assert classify(rs, "udp", 50000, 6000, [(magic, CLIENT)])[0] is None            # tcp only
    blob = bytes(150) + b"torch.distributed" + bytes(20)
    assert classify(rs, "udp", 50000, 6000, [(blob, CLIENT)]) == ("needle", "anywhere", "payload")
    assert classify(rs, "udp", 50000, 6000, [(bytes(250) + b"torch.distributed", CLIENT)])[0] is None


def test_shift_and_matches_a_regular_expression_on_random_data(tmp_path):
    """The anywhere matcher (Shift-And, one step per byte) against Python's re on random inputs."""
    rng = random.Random(5)
    for trial in range(40):
        n = rng.randint(1, 12)
        pattern = bytes(rng.choice(b"ab") for _ in range(n))
        care = bytes(0 if rng.random() < 0.25 else 1 for _ in range(n))
        if not any(care):
            care = b"\x01" + care[1:]
        toks = " ".join("??" if not c else f"{b:02x}" for b, c in zip(pattern, care))
        offset, within = rng.randint(0, 20), rng.randint(1, 300)
        d = tmp_path / f"t{trial}"
        d.mkdir()
        rs = ruleset(d, f"""
            [[rule]]
            id = "p"
            app = "pat"
            category = "other"
            [[rule.payload]]
            hex = "{toks}"
            offset = {offset}
            within = {within}
            """)
        for k in range(5):
            data = bytes(rng.choice(b"abc") for _ in range(rng.randint(1, 400)))
            want = py_pattern_match(pattern, care, data, offset, within)
            got = classify(rs, "udp", 50000, 7777, [(data, CLIENT)])[0] == "pat"
            assert got == want, (toks, offset, within, data)


def test_detected_none_and_guess(tmp_path):
    rs = ruleset(tmp_path, """
        [[rule]]
        id = "only-empty"
        app = "quiet"
        category = "other"
        ports = [7500]
        detected = ["none"]
        """)
    assert classify(rs, "tcp", 50000, 7500) == ("quiet", "only-empty", "port")
    assert classify(rs, "tcp", 50000, 7500, [(b"\x01\x02\x03\x04" * 10, CLIENT)]) == ("quiet", "only-empty", "guess")
    assert classify(rs, "tcp", 50000, 7500, [(b"SSH-2.0-x\r\n", SERVER)])[0] == "ssh"


# ---- the command line and the engine -------------------------------------------------------------------

def make_capture(path: Path):
    from scapy.all import IP, TCP, Ether, wrpcap
    pk = []
    hello = client_hello("model-store.internal")
    a, b = "10.1.0.5", "10.1.0.9"
    pk.append(Ether() / IP(src=a, dst=b) / TCP(sport=41000, dport=8443, flags="S", seq=100))
    pk.append(Ether() / IP(src=b, dst=a) / TCP(sport=8443, dport=41000, flags="SA", seq=500, ack=101))
    pk.append(Ether() / IP(src=a, dst=b) / TCP(sport=41000, dport=8443, flags="PA", seq=101, ack=501) / hello)
    pk.append(Ether() / IP(src=a, dst=b) / TCP(sport=41001, dport=29500, flags="S", seq=1))
    for i, p in enumerate(pk):
        p.time = 1700000000 + i * 0.001
    wrpcap(str(path), pk)


def test_rules_check_command(tmp_path):
    from probe.cli import main
    r = CliRunner().invoke(main, ["rules", "check"])
    assert r.exit_code == 0 and "0 error(s)" in r.output and "0 conflict(s)" in r.output
    write(tmp_path, "bad.toml", '[[rule]]\nid = "x"\napp = "y"\ncategory = "web"\nports = ["a-b"]\n')
    r = CliRunner().invoke(main, ["rules", "check", str(tmp_path)])
    assert r.exit_code == 1
    assert f"error: {tmp_path / 'bad.toml'}:1: bad port 'a-b'" in r.output


def test_rules_test_and_replay_with_extra_rules(tmp_path):
    pytest.importorskip("scapy.all")
    from probe.cli import main
    cap = tmp_path / "c.pcap"
    make_capture(cap)
    rules = tmp_path / "rules"
    rules.mkdir()
    write(rules, "models.toml", """
        [[rule]]
        id = "model-store"
        app = "model-store"
        category = "ml"
        priority = 200
        server_name = ["model-store.internal"]
        """)
    r = CliRunner().invoke(main, ["rules", "test", str(cap), "--rules", str(rules)])
    assert r.exit_code == 0, r.output
    lines = [x.split() for x in r.output.splitlines() if "->" in x]
    # flow id, src, ->, dst, protocol, app_proto, confidence, app_rule, server_name
    assert lines[0][4:9] == ["tcp", "model-store", "name", "rule:model-store", "model-store.internal"]
    assert lines[1][4:8] == ["tcp", "torch-distributed", "port", "rule:torch-distributed-store"]
    out = tmp_path / "f.parquet"
    r = CliRunner().invoke(main, ["replay", str(cap), "-o", str(out), "--rules", str(rules)])
    assert r.exit_code == 0, r.output
    import pyarrow.parquet as pq
    t = pq.read_table(out).sort_by("flow_id")
    assert t.column("app_proto").to_pylist() == ["model-store", "torch-distributed"]
    assert t.column("app_category").to_pylist() == ["ml", "ml"]
    assert t.column("app_payload_proto").to_pylist() == ["tls", None]
    assert t.column("server_name").to_pylist() == ["model-store.internal", None]


def test_replay_refuses_a_malformed_rule_file(tmp_path):
    pytest.importorskip("scapy.all")
    from probe.cli import main
    cap = tmp_path / "c.pcap"
    make_capture(cap)
    rules = tmp_path / "rules"
    rules.mkdir()
    write(rules, "broken.toml", '[[rule]]\nid = "x"\napp = "y"\ncategory = "web"\n\n[[rule]]\nid = 3\n')
    out = tmp_path / "f.parquet"
    r = CliRunner().invoke(main, ["replay", str(cap), "-o", str(out), "--rules", str(rules)])
    assert r.exit_code == 2
    assert f"{rules / 'broken.toml'}:1: a rule needs at least one condition" in r.output
    assert f"{rules / 'broken.toml'}:6: id must be a string" in r.output
    assert not out.exists()


def test_rules_readme_lists_the_dissector_labels():
    """rules/README.md names the labels usable in `detected`: the same list as the C table."""
    from dpi._flowtable import dpi_labels
    text = (SHIPPED_DIR / "README.md").read_text()
    block = text.split("## Labels the dissectors give", 1)[1]
    listed = set(max(re.findall(r"`([^`]+)`", block), key=len).split())
    assert listed == set(dpi_labels()[1:])
