"""RDMA NIC port counter sampler (probe/nic_counters.py) and `flowtap nic-counters`.

These machines have no RDMA NIC, so the tests build a directory tree with the kernel's layout and names
(Linux 6.x, mlx5 and rxe drivers) under a temporary sysfs root and change its files between samples: the
expected deltas are the arithmetic of the values written.
"""
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from probe.nic_counters import PORT_COUNTERS_SCHEMA, PortCounterSampler, run

ROOT = Path(__file__).resolve().parents[1]

# /sys/class/infiniband/<dev>/ports/<port>/counters: the IB port counters every driver exposes
IB_COUNTERS = ["excessive_buffer_overrun_errors", "link_downed", "link_error_recovery",
               "local_link_integrity_errors", "port_rcv_constraint_errors", "port_rcv_data", "port_rcv_errors",
               "port_rcv_packets", "port_rcv_remote_physical_errors", "port_rcv_switch_relay_errors",
               "port_xmit_constraint_errors", "port_xmit_data", "port_xmit_discards", "port_xmit_packets",
               "port_xmit_wait", "symbol_error", "VL15_dropped"]
# mlx5 hw_counters (drivers/infiniband/hw/mlx5/counters.c), plus lifespan, which is a setting
MLX5_HW = ["duplicate_request", "implied_nak_seq_err", "local_ack_timeout_err", "np_cnp_sent",
           "np_ecn_marked_roce_packets", "out_of_buffer", "out_of_sequence", "packet_seq_err",
           "req_cqe_error", "req_remote_access_errors", "req_remote_invalid_request", "rnr_nak_retry_err",
           "rp_cnp_handled", "rp_cnp_ignored", "rx_read_requests", "rx_write_requests"]
# rxe (SoftRoCE) hw_counters (drivers/infiniband/sw/rxe/rxe_hw_counters.c)
RXE_HW = ["sent_pkts", "rcvd_pkts", "duplicate_request", "out_of_seq_request", "rcvd_rnr_err", "send_rnr_err",
          "rcvd_seq_err", "ack_deferred", "retry_exceeded_err", "retry_rnr_exceeded_err", "completer_retry_err",
          "send_err", "link_downed", "rdma_sends", "rdma_recvs"]
NETDEV_STATS = ["rx_bytes", "rx_packets", "rx_dropped", "rx_errors", "tx_bytes", "tx_packets", "tx_dropped"]


def _write(d: Path, names, value=0):
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / n).write_text(f"{value}\n")


def fake_sys(root: Path):
    """mlx5_0 (two ports, netdevs from gid_attrs) and rxe0 (one port, netdev from `parent`)."""
    ib = root / "class" / "infiniband"
    for port, nd in ((1, "ens1f0np0"), (2, "ens1f1np1")):
        p = ib / "mlx5_0" / "ports" / str(port)
        _write(p / "counters", IB_COUNTERS)
        _write(p / "hw_counters", MLX5_HW)
        (p / "hw_counters" / "lifespan").write_text("10\n")
        (p / "gid_attrs" / "ndevs").mkdir(parents=True)
        (p / "gid_attrs" / "ndevs" / "0").write_text(f"{nd}\n")
        (p / "gid_attrs" / "ndevs" / "1").write_text(f"{nd}\n")
        _write(root / "class" / "net" / nd / "statistics", NETDEV_STATS)
    p = ib / "rxe0" / "ports" / "1"
    _write(p / "hw_counters", RXE_HW)
    (ib / "rxe0" / "parent").write_text("veth0\n")
    _write(root / "class" / "net" / "veth0" / "statistics", NETDEV_STATS)
    return ib


def _set(path: Path, value: int):
    path.write_text(f"{value}\n")


def _rows(batch):
    return {(r["device"], r["port"], r["source"], r["counter"]): r for r in batch.to_pylist()}


class Clock:
    def __init__(self):
        self.t = 1_700_000_000_000_000_000

    def __call__(self):
        self.t += 1_000_000_000
        return self.t


def test_baseline_deltas_resets_and_netdevs(tmp_path):
    ib = fake_sys(tmp_path)
    s = PortCounterSampler(tmp_path, clock_ns=Clock())
    first = s.sample()
    assert first.schema.equals(PORT_COUNTERS_SCHEMA, check_metadata=False)
    rows = _rows(first)
    per_mlx5_port = len(IB_COUNTERS) + len(MLX5_HW) + len(NETDEV_STATS)
    assert len(rows) == first.num_rows == 2 * per_mlx5_port + len(RXE_HW) + len(NETDEV_STATS)
    assert not any(c == "lifespan" for (_, _, _, c) in rows)
    assert all(r["delta"] is None and r["interval_ns"] is None and not r["reset"] for r in rows.values())
    assert rows[("mlx5_0", 2, "hw_counters", "np_cnp_sent")]["netdev"] == "ens1f1np1"
    assert rows[("rxe0", 1, "hw_counters", "rcvd_seq_err")]["netdev"] == "veth0"

    p1 = ib / "mlx5_0" / "ports" / "1"
    _set(p1 / "hw_counters" / "out_of_sequence", 17)
    _set(p1 / "hw_counters" / "packet_seq_err", 3)
    _set(p1 / "hw_counters" / "np_cnp_sent", 1000)
    _set(p1 / "counters" / "port_xmit_data", 2 ** 40)
    _set(tmp_path / "class" / "net" / "ens1f0np0" / "statistics" / "rx_packets", 123456)
    second = _rows(s.sample())
    assert second[("mlx5_0", 1, "hw_counters", "out_of_sequence")]["delta"] == 17
    assert second[("mlx5_0", 1, "hw_counters", "packet_seq_err")]["delta"] == 3
    assert second[("mlx5_0", 1, "hw_counters", "np_cnp_sent")]["delta"] == 1000
    assert second[("mlx5_0", 1, "counters", "port_xmit_data")]["delta"] == 2 ** 40
    assert second[("mlx5_0", 1, "netdev", "rx_packets")]["delta"] == 123456
    assert second[("mlx5_0", 2, "hw_counters", "np_cnp_sent")]["delta"] == 0
    assert all(r["interval_ns"] == 1_000_000_000 for r in second.values())

    # reset: the driver was reloaded and the counter restarted from 0, then counted 5
    _set(p1 / "hw_counters" / "np_cnp_sent", 5)
    _set(p1 / "hw_counters" / "out_of_sequence", 20)
    third = _rows(s.sample())
    r = third[("mlx5_0", 1, "hw_counters", "np_cnp_sent")]
    assert (r["value"], r["delta"], r["reset"]) == (5, 5, True)
    r = third[("mlx5_0", 1, "hw_counters", "out_of_sequence")]
    assert (r["value"], r["delta"], r["reset"]) == (20, 3, False)
    assert s.counters["counter_resets"] == 1


def test_port_that_vanishes_and_comes_back(tmp_path):
    ib = fake_sys(tmp_path)
    s = PortCounterSampler(tmp_path, clock_ns=Clock())
    s.sample()
    moved = tmp_path / "gone"
    (ib / "mlx5_0" / "ports" / "2").rename(moved)
    rows = _rows(s.sample())
    assert not any(k[:2] == ("mlx5_0", 2) for k in rows)
    assert s.counters["ports_vanished"] == 1 and s.log == ["port mlx5_0/2 vanished"]
    _set(moved / "hw_counters" / "rp_cnp_handled", 9)
    moved.rename(ib / "mlx5_0" / "ports" / "2")
    rows = _rows(s.sample())
    back = rows[("mlx5_0", 2, "hw_counters", "rp_cnp_handled")]
    assert (back["value"], back["delta"], back["interval_ns"]) == (9, None, None)   # a new baseline
    assert rows[("mlx5_0", 1, "hw_counters", "rp_cnp_handled")]["delta"] == 0
    assert s.counters["ports_appeared"] == 1


def test_whole_device_removed_and_unreadable_values(tmp_path):
    ib = fake_sys(tmp_path)
    s = PortCounterSampler(tmp_path, devices=["rxe0"], clock_ns=Clock())
    assert {(p.device, p.port) for p in s.ports()} == {("rxe0", 1)}
    s.sample()
    _set(ib / "rxe0" / "ports" / "1" / "hw_counters" / "rcvd_seq_err", 4)
    (ib / "rxe0" / "ports" / "1" / "hw_counters" / "send_err").write_text("N/A\n")
    rows = _rows(s.sample())
    assert rows[("rxe0", 1, "hw_counters", "rcvd_seq_err")]["delta"] == 4
    assert ("rxe0", 1, "hw_counters", "send_err") not in rows and s.counters["unreadable_files"] == 1
    import shutil
    shutil.rmtree(ib / "rxe0")
    assert s.sample().num_rows == 0 and s.counters["ports_vanished"] == 1


def test_run_writes_the_table(tmp_path):
    fake_sys(tmp_path / "sys")
    out = tmp_path / "ports.arrow"
    changes = {1: ("out_of_sequence", 7), 2: ("out_of_sequence", 10)}

    def bump(i, _batch):
        if i + 1 in changes:
            name, v = changes[i + 1]
            _set(tmp_path / "sys" / "class" / "infiniband" / "mlx5_0" / "ports" / "1" / "hw_counters" / name, v)

    res = run(str(out), interval_s=0, count=3, sysfs_root=str(tmp_path / "sys"), on_sample=bump)
    assert res["samples"] == 3
    t = pa.ipc.open_file(out).read_all()
    assert t.schema.metadata[b"flowtap.table"] == b"port_counters"
    rows = [r for r in t.select(["device", "port", "counter", "delta"]).to_pylist()
            if (r["device"], r["port"], r["counter"]) == ("mlx5_0", 1, "out_of_sequence")]
    assert [r["delta"] for r in rows] == [None, 7, 3]
    assert t.num_rows == 3 * (2 * (len(IB_COUNTERS) + len(MLX5_HW) + len(NETDEV_STATS)) + len(RXE_HW) +
                              len(NETDEV_STATS))


def test_cli(tmp_path):
    fake_sys(tmp_path / "sys")
    out = tmp_path / "p.parquet"
    cmd = [sys.executable, "-m", "probe.cli", "nic-counters", "--sysfs-root", str(tmp_path / "sys"),
           "--interval", "0", "--count", "2", "-o", str(out), "--device", "mlx5_0"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "sampling 2 RDMA port(s) [mlx5_0/1 (ens1f0np0), mlx5_0/2 (ens1f1np1)]" in r.stderr
    import pyarrow.parquet as pq
    t = pq.read_table(out)
    assert set(t.column("device").to_pylist()) == {"mlx5_0"}
    assert t.num_rows == 2 * 2 * (len(IB_COUNTERS) + len(MLX5_HW) + len(NETDEV_STATS))
    # no RDMA device: a clear message, exit 3, no file
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run(cmd[:5] + [str(empty), "--count", "1", "-o", str(tmp_path / "none.parquet")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 3 and "no RDMA device under" in r.stderr
    assert not (tmp_path / "none.parquet").exists()
