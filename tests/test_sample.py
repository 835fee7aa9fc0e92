"""The bundled sample replays to exactly the flows its generator built (samples/sample.truth.json: counted
from the generated packets by probe/samplegen.py, not by flowtap)."""
import json
from pathlib import Path

import pyarrow as pa

from dpi.engine import EngineConfig
from dpi.replay import replay

ROOT = Path(__file__).resolve().parents[1]


def test_sample_flows_match_generator_truth(tmp_path):
    truth = json.loads((ROOT / "samples" / "sample.truth.json").read_text())
    out = tmp_path / "s.arrow"
    res = replay([str(ROOT / "samples" / "sample.pcap")], str(out), EngineConfig(observer_host="t"))
    assert not res.errors
    got = pa.ipc.open_file(out).read_all()
    rows = {(r["src_ip"], r["src_port"], r["dst_ip"], r["dst_port"], r["protocol"]): r
            for r in got.select(["src_ip", "src_port", "dst_ip", "dst_port", "protocol", "src_packets",
                                 "dst_packets", "src_bytes", "dst_bytes", "vlan_id", "tunnel_type",
                                 "tunnel_id", "ip_version"]).to_pylist()}
    assert len(rows) == len(truth["flows"]) == got.num_rows
    for f in truth["flows"]:
        key = (f["src_ip"], f["src_port"] or 0, f["dst_ip"], f["dst_port"] or 0, f["protocol"])
        r = rows[key]
        assert (r["src_packets"], r["dst_packets"], r["src_bytes"], r["dst_bytes"]) == \
            (f["src_packets"], f["dst_packets"], f["src_bytes"], f["dst_bytes"]), f["name"]
        assert r["vlan_id"] == f["vlan_id"] and r["ip_version"] == f["ip_version"], f["name"]
        assert (r["tunnel_type"] or "") == f["tunnel_type"], f["name"]
        if f["tunnel_type"]:
            assert r["tunnel_id"] == f["tunnel_id"], f["name"]
    assert res.packets == truth["capture"]["packets"]
