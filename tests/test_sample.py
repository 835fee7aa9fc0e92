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
    flows = _pair_roce_connections(truth)
    assert len(rows) == len(flows) == got.num_rows
    for f in flows:
        key = (f["src_ip"], f["src_port"] or 0, f["dst_ip"], f["dst_port"] or 0, f["protocol"])
        r = rows[key]
        assert (r["src_packets"], r["dst_packets"], r["src_bytes"], r["dst_bytes"]) == \
            (f["src_packets"], f["dst_packets"], f["src_bytes"], f["dst_bytes"]), f["name"]
        assert r["vlan_id"] == f["vlan_id"] and r["ip_version"] == f["ip_version"], f["name"]
        assert (r["tunnel_type"] or "") == f["tunnel_type"], f["name"]
        if f["tunnel_type"]:
            assert r["tunnel_id"] == f["tunnel_id"], f["name"]
    assert res.packets == truth["capture"]["packets"]
    _check_roce(truth, got)


# ---- RoCE meter (issue 4) ---------------------------------------------------------------------------------
def _pair_roce_connections(truth):
    """The generator lists each direction of a RoCE connection as a flow and ties them in roce_connections;
    flowtap pairs the two into one record, src = requester, ports = the requester's UDP port and 4791."""
    by_name = {f["name"]: f for f in truth["flows"]}
    flows = [f for f in truth["flows"]]
    for c in truth.get("roce_connections", []):
        rq, rs = by_name[c["requester"]["flow"]], by_name[c["responder"]["flow"]]
        flows = [f for f in flows if f["name"] not in (rq["name"], rs["name"])]
        flows.append({**rq, "name": rq["name"] + "+" + rs["name"], "dst_port": 4791,
                      "dst_packets": rs["src_packets"], "dst_bytes": rs["src_bytes"]})
    return flows


def _check_roce(truth, got):
    for c in truth.get("roce_connections", []):
        names = [n for n in got.column_names if n.startswith("roce_") or n in ("src_ip", "dst_ip", "protocol")]
        row = [r for r in got.select(names).to_pylist() if r["src_ip"] == c["requester"]["ip"] and r["protocol"] == 17
               and r["dst_ip"] == c["responder"]["ip"]]
        assert len(row) == 1
        r = row[0]
        assert (r["roce_transport"], r["roce_pairing"]) == (c["transport"], "psn")
        assert (r["roce_src_qpn"], r["roce_dst_qpn"]) == (c["requester"]["qpn"], c["responder"]["qpn"])
        assert r["roce_path_mtu"] == c["pmtu"]
        assert (r["roce_src_psn_gaps"], r["roce_src_psn_missing"]) == (len(c["psn_dropped_before_probe"]),
                                                                      c["psn_missing"])
        assert r["roce_src_psn_duplicates"] == c["retransmitted_packets"]
        assert r["roce_dst_nak_psn_seq_err"] == c["nak_psn_sequence_errors"]
        assert r["roce_dst_cnp_packets"] == c["cnps"]
        assert r["roce_src_ecn_ce_packets"] == c["ecn_ce_packets"]
        writes = [m for m in c["messages"] if m["op"] == "RDMA_WRITE"]
        reads = [m for m in c["messages"] if m["op"] == "RDMA_READ"]
        assert (r["roce_src_write_messages"], r["roce_src_read_messages"]) == (len(writes), len(reads))
        assert r["roce_dst_psn_gaps"] == 0 and r["roce_src_psn_out_of_order"] == 0
