"""The kernel/user boundary of live capture: probe/bpf/ft_live.h against its Python mirrors (no root)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEADER = (REPO / "probe" / "bpf" / "ft_live.h").read_text()


def _enum_names(text: str, enum: str) -> list[str]:
    body = re.search(r"enum %s \{(.*?)\};" % enum, text, re.S).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    return [part.split("=")[0].strip() for part in body.split(",") if part.strip()]


def test_counter_names_mirror_the_header():
    from probe.live import LIVE_COUNTER_NAMES
    names = _enum_names(HEADER, "ft_live_counter")
    assert names[-1] == "FT_LC__END"
    assert [n[len("FT_LC_"):].lower() for n in names[:-1]] == list(LIVE_COUNTER_NAMES)


def test_struct_sizes_match_the_numpy_mirrors():
    ring = pytest.importorskip("probe._ring", reason="probe._ring not built (sh setup.sh)")
    from dpi._reader import PKT_SIZE, REASON_NAMES
    from probe.live import FLOW_DTYPE, KEY_DTYPE, LIVE_COUNTER_NAMES
    assert ring.KEY_SIZE == KEY_DTYPE.itemsize == 48
    assert ring.FLOW_SIZE == FLOW_DTYPE.itemsize == 88
    assert ring.SAMPLE_HDR == 16
    assert ring.SAMPLE_SIZE == 16 + PKT_SIZE + 128  # default FT_SNAP_LEN
    assert ring.COUNTERS == len(REASON_NAMES) + len(LIVE_COUNTER_NAMES)


def test_compact_record_sections_are_where_ft_live_h_says():
    """The kernel sends a prefix of struct ft_pkt (FT_LIVE_REC_*): each length must be the offset where the
    next section starts, as PKT_DTYPE (built from ft_record.h) has it, and every field of a section past the
    base length must belong to the section the kernel checks before choosing a shorter prefix."""
    from dpi._reader import PKT_DTYPE
    lens = {m.group(1): int(m.group(2)) for m in re.finditer(r"#define FT_LIVE_REC_(\w+) (\d+)", HEADER)}
    off = {name: PKT_DTYPE.fields[name][1] for name in PKT_DTYPE.names}
    assert lens == {"BASE": off["tcp_sack"], "SACK": off["tunnel_type"], "TUNNEL": off["roce_opcode"],
                    "FULL": off["roce_reth_va"] + 8} == {"BASE": 128, "SACK": 160, "TUNNEL": 200, "FULL": 240}
    past_base = sorted((o, n) for n, o in off.items() if o >= lens["BASE"])
    assert [n for o, n in past_base if o < lens["SACK"]] == ["tcp_sack"]
    assert {n for o, n in past_base if lens["SACK"] <= o < lens["TUNNEL"]} == {
        "tunnel_type", "tunnel_depth", "outer_ip_version", "tunnel_id", "outer_src_addr",
        "outer_dst_addr"}
    assert all(n.startswith("roce_") for o, n in past_base if lens["TUNNEL"] <= o < lens["FULL"])
    assert not [n for o, n in past_base if o >= lens["FULL"]]  # only _reserved (not in PKT_DTYPE) follows


def test_bpf_config_flags_and_validation():
    from probe.live import BpfConfig, dump_bpf
    c = BpfConfig(snap_len=64, ring_bytes=1 << 20, flow_map_entries=1000)
    flags = c.cflags()
    for f in ("-DFT_SNAP_LEN=64", "-DFT_RING_BYTES=1048576", "-DFT_FLOW_MAP_ENTRIES=1000",
              "-DFT_PARSE_MAX_TUNNEL=2", "-D__bpf__=1"):
        assert f in flags
    text = dump_bpf(c)
    assert text.splitlines()[0].endswith(" ".join(flags))
    assert "int ft_tc_ingress(struct __sk_buff *skb)" in text
    for bad in (dict(snap_len=7), dict(ring_bytes=3 << 20), dict(parse_max_tunnel=3), dict(flow_map_entries=0)):
        with pytest.raises(ValueError):
            BpfConfig(**bad).validate()
