"""Live capture: the BPF probe (probe/bpf/flowtap.bpf.c, compiled by BCC) feeding the replay engine.

    probe = Probe(BpfConfig())                     # compile + load; needs root (CAP_BPF + CAP_PERFMON)
    with attach(probe, ["eth0"], mode="tc"):       # clsact ingress+egress; detached on exit, whatever happens
        ring = probe.ring_reader()
        n, used, more = ring.drain(pkts, data, snippet_len, probe.wall_offset_ns)
    run_capture(["eth0"], "tc", "flows.arrows", ...)   # the whole loop, as `flowtap capture`

Time. The kernel stamps each record with bpf_ktime_get_ns() (CLOCK_MONOTONIC). User space measures
CLOCK_REALTIME - CLOCK_MONOTONIC once, when the probe is loaded (the pair read closest together out of 9),
and the ring drain (ext/ft_ring.h) adds it to every record: the only place where kernel time becomes wall
time. Idle expiry uses the same offset (engine.expire(monotonic now + offset)), so live time never mixes
clocks. A step of the wall clock during a capture does not move packet times (NTP slewing affects both
clocks alike); the offset is stored in the output's metadata (flowtap.live.wall_offset_ns).
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import json
import os
import select
import signal
import socket
import struct
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

HERE = Path(__file__).resolve().parent
BPF_DIR = HERE / "bpf"
BPF_SOURCE = BPF_DIR / "flowtap.bpf.c"


def _ext_dir() -> Path:
    """The directory holding ft_parse.h / ft_record.h: ext/ of the checkout (editable install), else the copy
    a wheel carries (probe/_shipped/ext, setup.py), else $FLOWTAP_EXT_DIR."""
    for cand in (HERE.parent / "ext", HERE / "_shipped" / "ext",
                 Path(os.environ.get("FLOWTAP_EXT_DIR", "/nonexistent"))):
        if (cand / "ft_parse.h").is_file():
            return cand
    raise FileNotFoundError("ext/ft_parse.h not found beside probe/ (set FLOWTAP_EXT_DIR)")


# Mirrors enum ft_live_counter of probe/bpf/ft_live.h, after the FT_R__COUNT parse reasons (checked by
# tests/test_live_layout.py against the header).
LIVE_COUNTER_NAMES = ("packets", "wire_bytes", "not_metered", "flow_packets", "flow_map_full", "ring_records",
                      "ring_full", "ring_full_packets", "gso_packets", "snippets", "tail_call_failed",
                      "fast_parsed")

# ft_live.h struct ft_live_key / ft_live_flow, as numpy dtypes (checked against sizeof by the layout test)
KEY_DTYPE = np.dtype([("addr_a", "V16"), ("addr_b", "V16"), ("port_a", "<u2"), ("port_b", "<u2"),
                      ("ip_version", "u1"), ("proto", "u1"), ("vlan_id", "<u2"), ("tunnel_id", "<u4"),
                      ("_pad", "<u4")])
FLOW_DTYPE = np.dtype([("packets", "<u8", 2), ("bytes", "<u8", 2), ("first_ns", "<u8"), ("last_ns", "<u8"),
                       ("payload_pkts", "<u4"), ("owner_cpu", "<u4"), ("own_packets", "<u8", 2),
                       ("own_bytes", "<u8", 2)])

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2

TC_PARENT = {"ingress": "ffff:fff2", "egress": "ffff:fff3"}  # clsact's minor handles
FLOWTAP_TC_HANDLE = 0xF10A  # filter handle flowtap uses; with its prio it names flowtap's filter exactly


POLL_S = 0.01  # longest wait of the capture loop for records below the ring's wake-up threshold


class LiveError(Exception):
    """Live capture cannot start or continue (message says why and, when known, the fix)."""


@dataclass
class BpfConfig:
    """Settings of the BPF programs; each becomes one -D flag (cflags()); dump-bpf prints them."""
    snap_len: int = 128               # payload bytes per record while the flow is unclassified (0: none)
    flow_map_entries: int = 262_144   # exact per-flow counters kept in the kernel (flow_stats)
    classified_entries: int = 65_536  # flows user space marked classified
    ring_bytes: int = 16 << 20        # BPF ring buffer: ~60k records of 264 bytes
    parse_max_tunnel: int = 2         # encapsulations unwrapped, as FT_PARSE_MAX_TUNNEL in ft_parse.h
    snippet_budget: int = 16          # payload packets per flow with a snippet at most (run_capture: DPI budget)
    want_records: bool = True         # False: count in maps only (benchmark baseline)

    def validate(self) -> None:
        if not 0 <= self.snap_len <= 1024 or self.snap_len % 8:
            raise ValueError(f"snap-len must be a multiple of 8 in 0..1024, not {self.snap_len}")
        for name in ("flow_map_entries", "classified_entries"):
            v = getattr(self, name)
            if not 1 <= v <= 1 << 26:
                raise ValueError(f"{name.replace('_', '-')} must be in 1..{1 << 26}, not {v}")
        rb = self.ring_bytes
        if rb < 1 << 16 or rb > 1 << 30 or rb & (rb - 1):
            raise ValueError(f"ring size must be a power of two between 64 KiB and 1 GiB, not {rb}")
        if not 0 <= self.snippet_budget <= 1 << 30:
            raise ValueError(f"snippet budget must be in 0..{1 << 30}, not {self.snippet_budget}")
        if not 0 <= self.parse_max_tunnel <= 2:
            raise ValueError(f"parse-max-tunnel must be 0..2 (FT_MAX_TUNNEL), not {self.parse_max_tunnel}")

    def cflags(self, bpf_dir: Path = BPF_DIR) -> list[str]:
        """The exact compiler flags: include paths, then one -D per setting."""
        return [
            f"-I{_ext_dir()}",
            f"-I{bpf_dir}",
            "-D__bpf__=1",  # BCC parses with the host's target; ft_record.h / ft_parse.h select BPF code on it
            "-Wno-unused-function",
            f"-DFT_SNAP_LEN={self.snap_len}",
            f"-DFT_FLOW_MAP_ENTRIES={self.flow_map_entries}",
            f"-DFT_CLASSIFIED_ENTRIES={self.classified_entries}",
            f"-DFT_RING_BYTES={self.ring_bytes}",
            f"-DFT_PARSE_MAX_TUNNEL={self.parse_max_tunnel}",
            f"-DFT_SNIPPET_BUDGET={self.snippet_budget}",
            f"-DFT_WANT_RECORDS={int(self.want_records)}",
        ]


def dump_bpf(config: BpfConfig) -> str:
    """The exact C source and flags BCC compiles (flowtap dump-bpf)."""
    flags = " ".join(config.cflags())
    return f"// flowtap BPF program; BCC cflags: {flags}\n" + BPF_SOURCE.read_text()


def wall_offset_ns(samples: int = 9) -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC in ns, from the monotonic reading bracketed most tightly by two
    realtime readings (the bracket width bounds the error; typically < 1 us)."""
    best = None
    for _ in range(samples):
        r0 = time.clock_gettime_ns(time.CLOCK_REALTIME)
        m = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        r1 = time.clock_gettime_ns(time.CLOCK_REALTIME)
        if best is None or r1 - r0 < best[0]:
            best = (r1 - r0, (r0 + r1) // 2 - m)
    return best[1]


# ---- raw bpf(2) for what BCC 0.26 does not offer ---------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_NR_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
BPF_PROG_TEST_RUN = 10
BPF_OBJ_GET_INFO_BY_FD = 15


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    r = _libc.syscall(_NR_BPF, cmd, attr, len(attr))
    if r < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"bpf({cmd}): {os.strerror(e)}")
    return r


def prog_id(fd: int) -> int:
    """The kernel's id of the BPF program behind fd (struct bpf_prog_info: type u32, id u32, ...)."""
    info = ctypes.create_string_buffer(256)
    attr = ctypes.create_string_buffer(struct.pack("IIQ", fd, len(info), ctypes.addressof(info)), 16)
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    return struct.unpack_from("II", info.raw)[1]


def test_run(prog_fd: int, frame: bytes, repeat: int = 1) -> tuple[int, int]:
    """BPF_PROG_TEST_RUN: runs the program on frame `repeat` times; returns (return value, mean ns per run)."""
    data = ctypes.create_string_buffer(bytes(frame), max(len(frame), 1))
    # prog_fd retval data_size_in data_size_out data_in data_out repeat duration ctx_size_in ctx_size_out
    # ctx_in ctx_out flags cpu batch_size
    attr = ctypes.create_string_buffer(struct.pack("IIIIQQIIIIQQIII", prog_fd, 0, len(frame), 0,
                                                   ctypes.addressof(data), 0, repeat, 0, 0, 0, 0, 0, 0, 0, 0),
                                       80)
    _bpf(BPF_PROG_TEST_RUN, attr)
    retval, = struct.unpack_from("I", attr.raw, 4)
    duration, = struct.unpack_from("I", attr.raw, 36)
    return retval, duration


# ---- the loaded probe ------------------------------------------------------------------------------------
def _import_bcc():
    try:
        import bcc  # noqa: F401
        from bcc import BPF
    except ImportError as e:
        raise LiveError(f"BCC's Python package is not importable ({e}); run `sh probe/bpf_setup.sh` "
                        "(installs python3-bpfcc and links it into .venv), see `flowtap doctor`") from None
    return BPF


class Probe:
    """The compiled and loaded programs and their maps. One Probe serves any number of interfaces."""

    ENTRY = {"tc": ("ft_tc_ingress", "ft_tc_egress"), "xdp": ("ft_xdp",)}

    def __init__(self, config: BpfConfig | None = None, bpf_dir: Path | None = None):
        """bpf_dir: another copy of probe/bpf/ (the benchmark loads an older revision beside this one)."""
        self.config = config or BpfConfig()
        self.config.validate()
        BPF = _import_bcc()
        self._BPF = BPF
        bpf_dir = Path(bpf_dir) if bpf_dir else BPF_DIR
        src = (bpf_dir / BPF_SOURCE.name).read_text()
        try:
            self.bpf = BPF(text=src.encode(), cflags=self.config.cflags(bpf_dir))
        except Exception as e:
            raise LiveError(f"BCC could not compile {BPF_SOURCE}: {e} (see the compiler output above; "
                            "`flowtap doctor` checks the kernel headers)") from None
        self.fns = {}
        try:
            for name in ("ft_tc_ingress", "ft_tc_egress", "ft_tc_l3", "ft_tc_l4", "ft_tc_account"):
                self.fns[name] = self.bpf.load_func(name.encode(), BPF.SCHED_CLS)
            for name in ("ft_xdp", "ft_xdp_l3", "ft_xdp_l4", "ft_xdp_account", "ft_xdp_pass"):
                self.fns[name] = self.bpf.load_func(name.encode(), BPF.XDP)
        except Exception as e:
            hint = " (needs root: CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN)" if os.geteuid() != 0 else ""
            raise LiveError(f"the kernel refused BPF program {name}: {e}{hint}") from None
        # tail-call slots, as FT_SLOT_* in flowtap.bpf.c
        for table, prefix in (("tc_next", "ft_tc_"), ("xdp_next", "ft_xdp_")):
            t = self.bpf.get_table(table)
            for slot, stage in enumerate(("l3", "l4", "account")):
                t[ctypes.c_int(slot)] = ctypes.c_int(self.fns[prefix + stage].fd)
        self.ring_fd = self.bpf.get_table(b"pkt_events").map_fd
        self.wall_offset_ns = wall_offset_ns()

    def fd(self, name: str) -> int:
        return self.fns[name].fd

    def ring_reader(self):
        from probe._ring import RingReader
        return RingReader(self.ring_fd, self.config.ring_bytes)

    def counters(self) -> dict:
        """Kernel counters summed over CPUs: {"parse_reasons": {name: n}, "packets": n, ...}."""
        from dpi._reader import REASON_NAMES
        t = self.bpf.get_table(b"probe_counters")  # one per-CPU slot: struct ft_live_counters
        vals = [0] * (len(REASON_NAMES) + len(LIVE_COUNTER_NAMES))
        for per_cpu in t[ctypes.c_int(0)]:
            for i, v in enumerate(per_cpu.n[:len(vals)]):
                vals[i] += int(v)
        out = {"parse_reasons": {n: v for n, v in zip(REASON_NAMES, vals) if v}}
        out.update(zip(LIVE_COUNTER_NAMES, vals[len(REASON_NAMES):]))
        return out

    def kernel_flows(self) -> np.ndarray:
        """flow_stats as a structured array: key fields, then packets/bytes per direction (a->b, b->a): the
        flow's totals (the owner CPU's own_packets/own_bytes added; those fields keep their share)."""
        t = self.bpf.get_table(b"flow_stats")
        rows = []
        for k, v in t.items():
            rows.append(bytes(k) + bytes(v))
        dt = np.dtype([("key", KEY_DTYPE), ("flow", FLOW_DTYPE)])
        out = np.frombuffer(b"".join(rows), dtype=dt).copy() if rows else np.zeros(0, dt)
        out["flow"]["packets"] += out["flow"]["own_packets"]
        out["flow"]["bytes"] += out["flow"]["own_bytes"]
        return out

    def expire_kernel_flows(self, older_than_mono_ns: int) -> tuple[int, int, int]:
        """Deletes flow_stats entries last seen before the given monotonic time, so the map holds active flows
        only. Returns (flows, packets, bytes) removed (their totals were already counted)."""
        t = self.bpf.get_table(b"flow_stats")
        dead = []
        pk = by = 0
        for k, v in t.items():
            if v.last_ns < older_than_mono_ns:
                dead.append(k)
                pk += v.packets[0] + v.packets[1] + v.own_packets[0] + v.own_packets[1]
                by += v.bytes[0] + v.bytes[1] + v.own_bytes[0] + v.own_bytes[1]
        for k in dead:
            with contextlib.suppress(KeyError):
                del t[k]
        # an idle flow's mark goes with it: the same 5-tuple later is a new flow, whose payload DPI needs
        self.unmark_classified(dead)
        return len(dead), pk, by

    def mark_classified(self, keys) -> int:
        """Marks flows classified, so that the kernel sends no more payload snippets for them. keys: KEY_DTYPE
        rows, or bytes of 48-byte keys (the engine's struct ft_key with qpn 0 has the same layout: FlowTable
        .take_dpi_done()); repeats are merged. One BPF_MAP_UPDATE_BATCH call; `classified` is an LRU map, so
        a full map evicts the least recently marked flow (which then sends snippets again and is marked
        again) instead of refusing. Returns how many distinct keys were written."""
        raw = np.frombuffer(keys, dtype=KEY_DTYPE) if isinstance(keys, (bytes, bytearray)) else \
            np.ascontiguousarray(keys, dtype=KEY_DTYPE)
        if not len(raw):
            return 0
        uniq = np.unique(raw.view(np.dtype((np.void, KEY_DTYPE.itemsize))))
        n = min(len(uniq), self.config.classified_entries)
        t = self.bpf.get_table(b"classified")
        ks = (t.Key * n).from_buffer_copy(uniq[:n].tobytes())
        vs = (t.Leaf * n)(*([1] * n))
        t.items_update_batch(ks, vs)
        return n

    def unmark_classified(self, keys: list) -> None:
        """Removes flows from `classified` (keys as BCC keys of flow_stats: same type)."""
        t = self.bpf.get_table(b"classified")
        for k in keys:
            with contextlib.suppress(KeyError):
                del t[t.Key.from_buffer_copy(bytes(k))]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.bpf.cleanup()


# ---- attaching ------------------------------------------------------------------------------------------
@dataclass
class Attachment:
    """What flowtap attached to one interface, so that exactly that is detached."""
    ifname: str
    ifindex: int
    mode: str
    hooks: list = field(default_factory=list)     # tc: [(direction, prio)]
    created_clsact: bool = False
    xdp_flags: int = 0
    xdp_prog_id: int = 0
    notes: list = field(default_factory=list)

    def describe(self) -> str:
        if self.mode == "tc":
            hooks = "+".join(d for d, _ in self.hooks)
            prios = ",".join(str(p) for _, p in self.hooks)
            return f"{self.ifname} (tc {hooks}, prio {prios})"
        kind = "native" if self.xdp_flags & XDP_FLAGS_DRV_MODE else "generic"
        return f"{self.ifname} (xdp {kind})"


def _ipr():
    try:
        from pyroute2 import IPRoute
    except ImportError:
        raise LiveError("pyroute2 is not installed (pip install pyroute2; setup.sh installs it)") from None
    return IPRoute()


def tc_filters(ifname: str) -> dict[str, list[dict]]:
    """The interface's clsact filters per direction, as `tc -j filter show` reports them (other tools' too)."""
    out = {}
    for d in ("ingress", "egress"):
        r = subprocess.run(["tc", "-j", "filter", "show", "dev", ifname, d], capture_output=True, text=True)
        out[d] = json.loads(r.stdout) if r.returncode == 0 and r.stdout.strip() else []
    return out


def _attach_tc(probe: Probe, ifname: str, att: Attachment) -> None:
    from pyroute2.netlink.exceptions import NetlinkError
    ipr = _ipr()
    try:
        try:
            ipr.tc("add", "clsact", att.ifindex)
            att.created_clsact = True
        except NetlinkError as e:
            if e.code != errno.EEXIST:
                raise LiveError(f"{ifname}: cannot add the clsact qdisc: {e}") from None
        existing = tc_filters(ifname)
        for direction, fn in (("ingress", "ft_tc_ingress"), ("egress", "ft_tc_egress")):
            used = sorted({f.get("pref") for f in existing[direction] if f.get("pref")})
            # Lowest free priority number below every existing filter, so flowtap runs first and sees what a
            # later filter may redirect or drop; when priority 1 is taken, go after the others, and say so.
            prio = (used[0] - 1) if used and used[0] > 1 else (max(used) + 1 if used else 1)
            if used and prio > used[0]:
                att.notes.append(f"{ifname} {direction}: priority 1 taken, flowtap runs after existing "
                                 f"filters (prio {','.join(map(str, used))}), which may hide packets from it")
            try:
                ipr.tc("add-filter", "bpf", att.ifindex, FLOWTAP_TC_HANDLE, fd=probe.fd(fn), name=fn,
                       parent=TC_PARENT[direction], classid=1, direct_action=True, prio=prio)
            except NetlinkError as e:
                raise LiveError(f"{ifname}: cannot add the {direction} filter: {e}") from None
            att.hooks.append((direction, prio))
    finally:
        ipr.close()


def _detach_tc(att: Attachment) -> list[str]:
    from pyroute2.netlink.exceptions import NetlinkError
    errors = []
    ipr = _ipr()
    try:
        for direction, prio in list(att.hooks):
            try:
                ipr.tc("del-filter", "bpf", att.ifindex, FLOWTAP_TC_HANDLE, parent=TC_PARENT[direction],
                       prio=prio)
            except NetlinkError as e:
                if e.code not in (errno.ENOENT, errno.ENODEV, errno.EINVAL):
                    errors.append(f"{att.ifname}: removing the {direction} filter prio {prio}: {e}")
            att.hooks.remove((direction, prio))
        if att.created_clsact:
            left = tc_filters(att.ifname)
            if not left["ingress"] and not left["egress"]:  # someone else may have added filters meanwhile
                with contextlib.suppress(NetlinkError):
                    ipr.tc("del", "clsact", att.ifindex)
            att.created_clsact = False
    finally:
        ipr.close()
    return errors


def xdp_prog_ids(ifname: str) -> dict:
    """XDP programs on the interface by mode ({"generic": id, "native": id, ...}), from `ip -j link`."""
    r = subprocess.run(["ip", "-j", "-d", "link", "show", "dev", ifname], capture_output=True, text=True)
    if r.returncode != 0:
        return {}
    info = json.loads(r.stdout)[0].get("xdp") or {}
    ids = {}
    if "prog" in info:
        ids[{1: "native", 2: "generic", 3: "offload"}.get(info.get("mode"), "?")] = info["prog"]["id"]
    for a in info.get("attached", []):
        if "prog" in a:
            ids[{1: "native", 2: "generic", 3: "offload"}.get(a.get("mode"), "?")] = a["prog"]["id"]
    return ids


def _attach_xdp(probe: Probe, ifname: str, att: Attachment, xdp_mode: str) -> None:
    present = xdp_prog_ids(ifname)
    if present:
        raise LiveError(f"{ifname}: an XDP program is already attached ({present}); flowtap never replaces "
                        "programs it did not attach: use --mode tc, or detach it yourself")
    fn = probe.fns["ft_xdp"]
    modes = {"auto": (XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE), "native": (XDP_FLAGS_DRV_MODE,),
             "generic": (XDP_FLAGS_SKB_MODE,)}[xdp_mode]
    last = None
    for m in modes:
        try:
            # UPDATE_IF_NOEXIST: the kernel refuses if a program appeared since the check above
            probe._BPF.attach_xdp(ifname, fn, XDP_FLAGS_UPDATE_IF_NOEXIST | m)
            att.xdp_flags = m
            att.xdp_prog_id = prog_id(fn.fd)
            return
        except Exception as e:
            last = e
    raise LiveError(f"{ifname}: XDP attach failed: {last}")


def _detach_xdp(probe: Probe, att: Attachment) -> list[str]:
    if not att.xdp_flags:
        return []
    ids = xdp_prog_ids(att.ifname)
    mode = "native" if att.xdp_flags & XDP_FLAGS_DRV_MODE else "generic"
    flags, att.xdp_flags = att.xdp_flags, 0
    if ids.get(mode) != att.xdp_prog_id:
        return [f"{att.ifname}: the XDP program there is no longer flowtap's ({ids}); left alone"]
    try:
        probe._BPF.remove_xdp(att.ifname, flags)
    except Exception as e:
        return [f"{att.ifname}: XDP detach failed: {e}"]
    return []


@contextlib.contextmanager
def attach(probe: Probe, ifnames: list[str], mode: str = "tc", xdp_mode: str = "auto",
           on_error: Callable[[str], None] | None = None) -> Iterator[list[Attachment]]:
    """Attaches the probe to every interface; on leaving the block (normally, by an exception or Ctrl-C)
    detaches exactly what it attached. Detach problems go to on_error (default: raised as LiveError)."""
    if mode not in ("tc", "xdp"):
        raise LiveError(f"unknown mode {mode!r} (tc or xdp)")
    atts: list[Attachment] = []
    try:
        for name in ifnames:
            try:
                idx = socket.if_nametoindex(name)
            except OSError:
                raise LiveError(f"{name}: no such interface (in this network namespace)") from None
            att = Attachment(name, idx, mode)
            atts.append(att)
            if mode == "tc":
                _attach_tc(probe, name, att)
            else:
                _attach_xdp(probe, name, att, xdp_mode)
        yield atts
    finally:
        errors = []
        # Ctrl-C while detaching must not leave programs behind: hold SIGINT until done
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
        try:
            for att in reversed(atts):
                errors += _detach_tc(att) if att.mode == "tc" else _detach_xdp(probe, att)
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        if errors:
            if on_error:
                for e in errors:
                    on_error(e)
            else:
                raise LiveError("; ".join(errors))


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


# ---- the capture loop -----------------------------------------------------------------------------------
@dataclass
class CaptureResult:
    output: str
    attached: list[str]
    elapsed_s: float = 0.0
    packets_kernel: int = 0
    records_drained: int = 0
    flows: int = 0
    records: int = 0
    stopped_by: str = ""
    counters: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class _Stop:
    def __init__(self):
        self.reason = ""

    def __call__(self, signum, frame):
        self.reason = signal.Signals(signum).name


def run_capture(ifnames: list[str], mode: str, output: str, engine_config=None, bpf_config: BpfConfig | None = None,
                duration_s: float | None = None, flush_interval_s: float = 10.0, fmt: str | None = None,
                xdp_mode: str = "auto", batch_records: int = 16384,
                on_start: Callable[[str], None] | None = None,
                on_note: Callable[[str], None] | None = None, max_output_bytes: int | None = None,
                parquet_journal: bool = True) -> CaptureResult:
    """Capture on the interfaces until duration_s, SIGINT or SIGTERM, writing flow records to output.

    Every batch written carries the run counters, including the coverage (`live`): packets the kernel
    counted, records it wrote to the ring, records lost to a full ring, records the meters saw; so loss in the
    probe is told apart from loss on the wire. Idle flows are expired and written every flush_interval_s."""
    from dpi import __version__
    from dpi._reader import PKT_DTYPE, RECORD_VERSION
    from dpi.engine import Engine, EngineConfig
    from dpi.writer import FlowWriter

    engine_config = engine_config or EngineConfig()
    engine_config.validate()
    bpf_config = bpf_config or BpfConfig()
    # DPI reads at most dpi_budget payload packets per flow: the kernel sends no snippets beyond them
    bpf_config = dataclasses.replace(bpf_config, snippet_budget=engine_config.dpi_budget)
    bpf_config.validate()
    note = on_note or (lambda s: None)
    probe = Probe(bpf_config)
    res = CaptureResult(output=output, attached=[])
    stop = _Stop()
    old_handlers = {}
    if _main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            old_handlers[sig] = signal.signal(sig, stop)
    writer = None
    engine = None
    emit = counters = None
    t0 = time.monotonic()
    try:
        meta = {
            "flowtap.version": __version__,
            "flowtap.record_version": str(RECORD_VERSION),
            "flowtap.capture_source": json.dumps({"live": ifnames, "mode": mode}),
            "flowtap.settings": json.dumps({**engine_config.settings(), "bpf": asdict(bpf_config)}),
            "flowtap.live.wall_offset_ns": str(probe.wall_offset_ns),
        }
        engine = Engine(engine_config, meta)
        engine.schema = engine.schema.with_metadata({**engine.schema.metadata,
                                                     b"flowtap.observer_host": engine.observer.encode()})
        writer = FlowWriter(output, engine.schema, fmt, journal=parquet_journal, max_bytes=max_output_bytes)
        ring = None
        pkts = np.zeros(batch_records, dtype=PKT_DTYPE)
        snip = np.zeros(batch_records, dtype=np.uint16)
        data = np.zeros(max(batch_records * max(bpf_config.snap_len, 1), 1), dtype=np.uint8)
        drained = 0
        kflows_expired = [0, 0, 0]
        # Snippets only while DPI needs them: the engine notes flows whose DPI is done but that still got
        # payload, and after each drained batch the loop marks them in the kernel (at most mark_max per batch;
        # a flow not marked sends another snippet and is noted again).
        marks = {"calls": 0, "flows": 0}
        mark_max = min(4096, bpf_config.classified_entries)
        if bpf_config.snap_len:
            engine.table.track_dpi_done(mark_max)

        def counters() -> dict:
            c = dict(engine.counters())
            c["output"] = writer.status()   # issue 7: the output-size limit and what it kept out
            k = probe.counters()
            c["live"] = {
                "interfaces": ifnames, "mode": mode,
                "kernel_packets": k["packets"], "kernel_wire_bytes": k["wire_bytes"],
                "ring_records": k["ring_records"], "ring_full_drops": k["ring_full"],
                "ring_full_packets": k["ring_full_packets"], "gso_super_packets": k["gso_packets"],
                "records_drained": drained, "records_in_flight": k["ring_records"] - drained,
                "meters_packets_seen": c["packets_seen"],
                "flow_map_full": k["flow_map_full"], "kernel_flow_packets": k["flow_packets"],
                "not_metered": k["not_metered"], "snippets": k["snippets"],
                "classified_marks": marks["flows"], "classified_mark_calls": marks["calls"],
                "classified_marks_deferred": engine.table.dpi_done_dropped,
                "tail_call_failed": k["tail_call_failed"], "kernel_parse_reasons": k["parse_reasons"],
                "kernel_flows_expired": dict(zip(("flows", "packets", "bytes"), kflows_expired)),
                "ring": ring.counters() if ring is not None else {},
            }
            return c

        def emit(b) -> None:
            writer.write(b, counters())

        def drain_all() -> int:
            nonlocal drained
            got = 0
            while True:
                n, _used, more = ring.drain(pkts, data, snip, probe.wall_offset_ns)
                if n:
                    drained += n
                    got += n
                    for b in engine.add(pkts[:n], data):  # data: the snippets, for DPI
                        emit(b)
                    done = engine.table.take_dpi_done()
                    if done:
                        marks["flows"] += probe.mark_classified(done)
                        marks["calls"] += 1
                if not more:
                    return got

        ring = probe.ring_reader()
        ep = select.epoll()
        ep.register(probe.ring_fd, select.EPOLLIN)
        with attach(probe, ifnames, mode, xdp_mode, on_error=res.errors.append) as atts:
            res.attached = [a.describe() for a in atts]
            if on_start:
                on_start(f"Capturing on {', '.join(res.attached)}, writing {output}; "
                         + ("Ctrl-C to stop" if not duration_s else f"for {duration_s:g} s (Ctrl-C stops early)"))
            for a in atts:
                for n_ in a.notes:
                    note(n_)
            deadline = t0 + duration_s if duration_s else None
            next_flush = time.monotonic() + flush_interval_s
            while not stop.reason:
                if drain_all() == 0:
                    # the kernel wakes the ring's reader only past FT_RING_WAKE_BYTES: the timeout reads the rest
                    ep.poll(POLL_S)
                now = time.monotonic()
                if deadline and now >= deadline:
                    stop.reason = "duration"
                if now >= next_flush:
                    next_flush = now + flush_interval_s
                    now_mono = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                    for b in engine.expire(now_mono + probe.wall_offset_ns):
                        emit(b)
                    # the kernel's exact counters of flows idle longer than the engine keeps them go too
                    f, p, by = probe.expire_kernel_flows(now_mono - int(engine_config.idle_timeout_s * 1e9))
                    kflows_expired[0] += f
                    kflows_expired[1] += p
                    kflows_expired[2] += by
                    # what expired is written now, not once batch_rows have gathered (issue 7): a killed capture
                    # then loses at most one interval of ended flows; the batch carries a coverage snapshot
                    # even when nothing expired
                    emit(engine._batch() if engine.table.pending else _empty(engine.schema))
        # detached: nothing new arrives; what is in the ring still counts
        drain_all()
        ep.close()
        res.stopped_by = stop.reason or "error"
    finally:
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
        try:
            if emit is not None:
                for b in engine.flush():
                    emit(b)
                final = counters()
                writer.close(final)
                res.counters = final
        finally:
            probe.close()
    res.elapsed_s = time.monotonic() - t0
    live = res.counters.get("live", {})
    res.packets_kernel = live.get("kernel_packets", 0)
    res.records_drained = live.get("records_drained", 0)
    res.flows = res.counters.get("flows_created", 0)
    res.records = res.counters.get("records_exported", 0)
    return res


def _empty(schema):
    import pyarrow as pa
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
