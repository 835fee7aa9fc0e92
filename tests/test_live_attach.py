"""Attaching and detaching never disturbs what others attached to the same hooks (root only).

The "other" programs are put there by a separate process, as a CNI would: a BPF filter and a u32 filter on
clsact, an XDP program; their state before flowtap runs must be the state after it exits."""
from __future__ import annotations

import json
import subprocess

import pytest

from test_live_common import PY, REPO, Capture, VethPair, in_ns, live_skip_reason

pytestmark = [pytest.mark.root, pytest.mark.skipif(live_skip_reason() is not None, reason=live_skip_reason() or "")]

FOREIGN_TC = r'''
import sys
from bcc import BPF
from pyroute2 import IPRoute
b = BPF(text=b"int other(struct __sk_buff *skb) { return -1; }")
fn = b.load_func(b"other", BPF.SCHED_CLS)
ipr = IPRoute()
idx = ipr.link_lookup(ifname=sys.argv[1])[0]
ipr.tc("add-filter", "bpf", idx, ":1", fd=fn.fd, name="other", parent="ffff:fff3", classid=1,
       direct_action=True, prio=7)
'''

FOREIGN_XDP = r'''
import sys
from bcc import BPF
b = BPF(text=b"int other_xdp(struct xdp_md *ctx) { return XDP_PASS; }")
BPF.attach_xdp(sys.argv[1], b.load_func(b"other_xdp", BPF.XDP), 1 << 1)
'''


def _filters(ns, ifname):
    out = {}
    for d in ("ingress", "egress"):
        r = in_ns(ns, "tc", "-j", "filter", "show", "dev", ifname, d)
        out[d] = json.loads(r.stdout or "[]")
    return out


def _qdiscs(ns, ifname):
    return [q["kind"] for q in json.loads(in_ns(ns, "tc", "-j", "qdisc", "show", "dev", ifname).stdout)]


def _xdp(ns, ifname):
    return json.loads(in_ns(ns, "ip", "-j", "-d", "link", "show", "dev", ifname).stdout)[0].get("xdp")


def test_tc_attach_keeps_other_filters_and_their_qdisc(tmp_path):
    with VethPair() as p:
        in_ns(p.ns_a, "tc", "qdisc", "add", "dev", p.if_a, "clsact")
        in_ns(p.ns_a, "tc", "filter", "add", "dev", p.if_a, "ingress", "prio", "1", "u32", "match", "u32", "0", "0")
        in_ns(p.ns_a, PY, "-c", FOREIGN_TC, p.if_a)
        before = _filters(p.ns_a, p.if_a)
        assert len(before["ingress"]) >= 1 and any(f.get("kind") == "bpf" for f in before["egress"])
        with Capture(p.ns_a, [p.if_a], tmp_path / "o.arrows") as cap:
            during = _filters(p.ns_a, p.if_a)
            cap.stop()
        after = _filters(p.ns_a, p.if_a)
        assert after == before
        assert "clsact" in _qdiscs(p.ns_a, p.if_a)
    # while attached: the others still there, flowtap's filters added beside them; ingress prio 1 was taken
    # (flowtap goes after it and says so), egress gets 6, before the other program's 7
    ours = {d: [f for f in during[d] if "ft_tc_" in json.dumps(f)] for d in during}
    assert {f["pref"] for f in ours["ingress"]} == {2}
    assert {f["pref"] for f in ours["egress"]} == {6}
    assert all(f in during[d] for d in before for f in before[d])
    assert "priority 1 taken" in cap.stderr


def test_tc_attach_removes_the_qdisc_it_created(tmp_path):
    with VethPair() as p:
        assert "clsact" not in _qdiscs(p.ns_a, p.if_a)
        with Capture(p.ns_a, [p.if_a], tmp_path / "o.arrows") as cap:
            assert "clsact" in _qdiscs(p.ns_a, p.if_a)
            cap.stop()
        assert "clsact" not in _qdiscs(p.ns_a, p.if_a)
        assert _filters(p.ns_a, p.if_a) == {"ingress": [], "egress": []}


def test_xdp_refuses_an_interface_with_another_program_and_detaches_its_own(tmp_path):
    with VethPair() as p:
        # flowtap's own XDP program: attached while capturing, gone after
        with Capture(p.ns_b, [p.if_b], tmp_path / "x.arrows", mode="xdp") as cap:
            assert _xdp(p.ns_b, p.if_b)["prog"]["name"].startswith("ft_xdp")
            cap.stop()
        assert _xdp(p.ns_b, p.if_b) is None
        # someone else's: flowtap refuses (exit 5) and leaves it in place
        in_ns(p.ns_b, PY, "-c", FOREIGN_XDP, p.if_b)
        before = _xdp(p.ns_b, p.if_b)
        assert before["prog"]["name"] == "other_xdp"
        r = subprocess.run(["ip", "netns", "exec", p.ns_b, PY, "-m", "probe.cli", "capture", "-i", p.if_b,
                            "--mode", "xdp", "--duration", "1", "-o", str(tmp_path / "y.arrows")], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 5, r.stderr
        assert "already attached" in r.stderr and "never replaces" in r.stderr
        assert _xdp(p.ns_b, p.if_b) == before
