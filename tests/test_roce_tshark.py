"""Per-packet RoCEv2 fields as flowtap's reader and parser record them (opcode, destination QP, PSN, AckReq,
AETH syndrome and MSN, ECN) agree with tshark's InfiniBand dissector, packet by packet, on every capture the
RoCE meter tests build (tests/roce_pcap.py), on a bench/make_roce.py capture and on the real SoftRoCE packet
in ../shared/data/roce. The RDMA CM REQ/REP the tests build decode in tshark to the QPNs, communication ids
and transport the meter test expects to see paired (so the MAD layout is Wireshark's, not only ours).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether

from dpi.capture import CaptureReader

sys.path.insert(0, str(Path(__file__).resolve().parent))
import roce_pcap as rp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
F_ROCE, ROCE_AETH = 0x20, 0x02
BTH_ACKREQ = 0x04

pytestmark = pytest.mark.tshark

FIELDS = ["frame.number", "infiniband.bth.opcode", "infiniband.bth.destqp", "infiniband.bth.psn",
          "infiniband.bth.a", "infiniband.aeth.syndrome", "infiniband.aeth.msn", "ip.dsfield.ecn",
          "ipv6.tclass"]
CM_FIELDS = ["infiniband.mad.attributeid", "infiniband.cm.req", "infiniband.cm.req.localqpn",
             "infiniband.cm.req.transpsvctype", "infiniband.cm.req.startpsn", "infiniband.cm.rep",
             "infiniband.cm.rep.remotecommid", "infiniband.cm.rep.localqpn", "infiniband.cm.rep.startpsn"]


def _tshark(path, fields):
    if shutil.which("tshark") is None:
        pytest.skip("tshark not installed")
    cmd = ["tshark", "-n", "-r", str(path), "-d", "udp.port==4791,infiniband", "-T", "fields",
           "-E", "separator=|", "-E", "occurrence=f"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines()]


def _records(path):
    recs = []
    with CaptureReader(str(path)) as reader:
        for pkts, _ in reader:
            recs += [p.copy() for p in pkts]
    return recs


def _compare(path):
    """Returns the number of RoCE packets compared."""
    rows = _tshark(path, FIELDS)
    recs = _records(path)
    assert len(rows) == len(recs)
    n = 0
    for rec, row in zip(recs, rows):
        is_roce = bool(rec["flags"] & F_ROCE)
        assert is_roce == bool(row["infiniband.bth.opcode"]), row["frame.number"]
        if not is_roce:
            continue
        n += 1
        assert rec["roce_opcode"] == int(row["infiniband.bth.opcode"], 0)
        assert rec["roce_dqpn"] == int(row["infiniband.bth.destqp"], 0)
        assert rec["roce_psn"] == int(row["infiniband.bth.psn"], 0)
        assert bool(rec["roce_bth_flags"] & BTH_ACKREQ) == (row["infiniband.bth.a"] in ("1", "True"))
        if row["infiniband.aeth.syndrome"]:
            assert rec["roce_ext"] & ROCE_AETH
            assert rec["roce_aeth_syndrome"] == int(row["infiniband.aeth.syndrome"], 0)
            assert rec["roce_aeth_msn"] == int(row["infiniband.aeth.msn"], 0)
        else:
            assert not rec["roce_ext"] & ROCE_AETH
        ecn = int(row["ip.dsfield.ecn"], 0) if row["ip.dsfield.ecn"] else int(row["ipv6.tclass"], 0) & 3
        assert rec["tos"] & 3 == ecn
    return n


@pytest.mark.parametrize("name", list(rp.SCENARIOS))
def test_scenario_packets_match_tshark(name, tmp_path):
    cap, _ = rp.SCENARIOS[name]()
    path = tmp_path / f"{name}.pcap"
    cap.write(path)
    roce_frames = sum(1 for _, b in cap.frames if UDP in Ether(b) and Ether(b)[UDP].dport == rp.ROCE_PORT)
    assert _compare(path) == roce_frames


def test_make_roce_capture_matches_tshark(tmp_path):
    path = tmp_path / "gen.pcap"
    subprocess.run([sys.executable, str(ROOT / "bench" / "make_roce.py"), str(path), "--packets", "3000",
                    "--seed", "9", "--snaplen", "128"], check=True, capture_output=True)
    assert _compare(path) >= 3000


def test_softroce_read_request_matches_tshark():
    env = os.environ.get("FLOWTAP_SHARED_DATA")
    path = (Path(env) if env else ROOT / ".." / "shared" / "data") / "roce" / "softroce_read_request.pcap"
    if not path.exists():
        pytest.skip(f"{path} not found (../shared/data is not checked out here)")
    assert _compare(path) == 1


def test_cm_messages_decode_in_tshark_as_built(tmp_path):
    """The CM REQ and REP of tests/roce_pcap.cm_connection carry, per tshark, the QPNs, communication ids,
    transport and starting PSNs that test_roce_meter expects the CM pairing to report."""
    cap, _ = rp.cm_connection()
    path = tmp_path / "cm.pcap"
    cap.write(path)
    rows = [r for r in _tshark(path, CM_FIELDS) if r["infiniband.mad.attributeid"]]
    k = rp.CM_CASE
    req = [r for r in rows if int(r["infiniband.mad.attributeid"], 0) == 0x0010]
    rep = [r for r in rows if int(r["infiniband.mad.attributeid"], 0) == 0x0013]
    assert len(req) == 1 and len(rep) == 1
    assert int(req[0]["infiniband.cm.req"], 0) == k["req_comm_id"]
    assert int(req[0]["infiniband.cm.req.localqpn"], 0) == k["active_qpn"]
    assert int(req[0]["infiniband.cm.req.transpsvctype"], 0) == 0   # RC
    assert int(req[0]["infiniband.cm.req.startpsn"], 0) == k["active_psn"]
    assert int(rep[0]["infiniband.cm.rep"], 0) == k["rep_comm_id"]
    assert int(rep[0]["infiniband.cm.rep.remotecommid"], 0) == k["req_comm_id"]
    assert int(rep[0]["infiniband.cm.rep.localqpn"], 0) == k["passive_qpn"]
    assert int(rep[0]["infiniband.cm.rep.startpsn"], 0) == k["passive_psn"]
