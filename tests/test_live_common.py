"""Helpers of the live-capture tests (no tests here): root/BCC checks, network namespaces with a veth pair,
traffic generators run inside the namespaces, and `flowtap capture` run as a subprocess in a namespace.

Every helper cleans up what it made (namespaces, processes) in a finally block."""
from __future__ import annotations

import contextlib
import functools
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
_seq = itertools.count()


def live_skip_reason() -> str | None:
    """Why the live tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "live capture tests need root (network namespaces, BPF)"
    try:
        import bcc  # noqa: F401
    except Exception as e:
        return f"BCC not importable ({e}): run `sh probe/bpf_setup.sh`"
    try:
        import probe._ring  # noqa: F401
        import pyroute2  # noqa: F401
    except Exception as e:
        return f"live capture modules missing ({e}): run `sh setup.sh --live`"
    for tool in ("ip", "tc", "ethtool"):
        if not shutil.which(tool):
            return f"{tool} not installed (sh probe/bpf_setup.sh installs it)"
    return _netns_exec_reason()


@functools.lru_cache(maxsize=1)
def _netns_exec_reason() -> str | None:
    """`ip netns exec` remounts /sys in a new mount namespace and needs / to be a mount point: inside a
    plain chroot (the README's minimal-Debian check) it fails, and the veth tests cannot run there."""
    ns = f"ftprobe{os.getpid()}"
    try:
        r = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
        if r.returncode != 0:
            return f"cannot create a network namespace here: {r.stderr.strip()}"
        r = subprocess.run(["ip", "netns", "exec", ns, "true"], capture_output=True, text=True)
        if r.returncode != 0:
            return f"`ip netns exec` does not work here (a chroot without / as a mount point?): {r.stderr.strip()}"
        return None
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def require_live():
    reason = live_skip_reason()
    if reason:
        pytest.skip(reason)


def sh(*args, check=True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True, **kw)


def in_ns(ns: str, *args, **kw) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *args, **kw)


class VethPair:
    """Namespaces A and B joined by a veth pair a<->b: A 10.77.N.1/24 + fd77:N::1, B .2 / ::2. Offloads are
    off on both ends, so every packet is one wire-size segment (TSO/GSO/GRO would merge them, and the packet
    counts the kernel's TCP_INFO reports would no longer be the packets a probe sees)."""

    def __init__(self):
        n = next(_seq)
        tag = f"{os.getpid() % 10000}{n}"
        self.ns_a, self.ns_b = f"ftA{tag}", f"ftB{tag}"
        self.if_a, self.if_b = f"fta{tag}", f"ftb{tag}"
        sub = (os.getpid() + n) % 200 + 20
        self.ip_a, self.ip_b = f"10.77.{sub}.1", f"10.77.{sub}.2"
        self.ip6_a, self.ip6_b = f"fd77:{sub}::1", f"fd77:{sub}::2"

    def __enter__(self):
        try:
            sh("ip", "netns", "add", self.ns_a)
            sh("ip", "netns", "add", self.ns_b)
            sh("ip", "link", "add", self.if_a, "netns", self.ns_a, "type", "veth", "peer", "name", self.if_b,
               "netns", self.ns_b)
            for ns, ifn, ip, ip6 in ((self.ns_a, self.if_a, self.ip_a, self.ip6_a),
                                     (self.ns_b, self.if_b, self.ip_b, self.ip6_b)):
                in_ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", ifn)
                in_ns(ns, "ip", "addr", "add", f"{ip6}/64", "dev", ifn, "nodad")
                in_ns(ns, "ip", "link", "set", ifn, "up")
                in_ns(ns, "ip", "link", "set", "lo", "up")
                in_ns(ns, "ethtool", "-K", ifn, "tso", "off", "gso", "off", "gro", "off", check=False)
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for ns in (self.ns_a, self.ns_b):
            sh("ip", "netns", "del", ns, check=False)  # takes the veth pair with it


class Capture:
    """`flowtap capture` in namespace ns, as a subprocess; stop() sends a signal and waits for the summary."""

    def __init__(self, ns: str, ifaces: list[str], output: Path, mode: str = "tc", extra: list[str] = ()):
        self.cmd = ["ip", "netns", "exec", ns, PY, "-m", "probe.cli", "capture", "--json",
                    "--flush-interval", "1", "-o", str(output), "--mode", mode, *extra]
        for i in ifaces:
            self.cmd += ["-i", i]
        self.first_line = ""
        self.proc = None

    def __enter__(self):
        # bufsize=0: stderr is a raw pipe, so readline() takes exactly the first line. A buffered text pipe may
        # read the lines after it too, and communicate(timeout=...) reads the descriptor directly: those
        # lines would be lost (seen: the "priority 1 taken" note, printed right after the first line).
        self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0)
        # the first stderr line is printed once the programs are attached
        self.first_line = self.proc.stderr.readline().decode(errors="replace").strip()
        if not self.first_line.startswith("Capturing on"):
            out, err = self._communicate(30)
            raise AssertionError(f"capture did not start: {self.first_line}\n{err}\n{out}")
        return self

    def _communicate(self, timeout):
        out, err = self.proc.communicate(timeout=timeout)
        return out.decode(errors="replace"), err.decode(errors="replace")

    def stop(self, sig=signal.SIGINT, timeout=60):
        import json
        time.sleep(0.3)  # let the last packets' records reach the ring
        self.proc.send_signal(sig)
        out, err = self._communicate(timeout)
        self.stderr = err
        assert self.proc.returncode == 0, f"capture exited {self.proc.returncode}: {err}"
        return json.loads(out)

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                self.proc.communicate(timeout=30)


# ---- traffic, run inside a namespace ------------------------------------------------------------------
TCP_SERVER = r'''
import socket, struct, sys, json
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
got = 0
while True:
    b = c.recv(65536)
    if not b: break
    got += len(b)
reply = int(sys.argv[3])
c.sendall(b"r" * reply)
c.shutdown(socket.SHUT_WR)
while c.recv(65536): pass
info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
c.close()
print(json.dumps({"received": got, "tcp_info": info.hex()}), flush=True)
'''

TCP_CLIENT = r'''
import socket, sys, json, time
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
c = socket.socket(fam)
c.connect((sys.argv[1], int(sys.argv[2])))
n = int(sys.argv[3]); chunk = b"q" * 1000; sent = 0
while sent < n:
    k = c.send(chunk[: min(1000, n - sent)]); sent += k
    if len(sys.argv) > 4: time.sleep(float(sys.argv[4]))
c.shutdown(socket.SHUT_WR)
got = 0
while True:
    b = c.recv(65536)
    if not b: break
    got += len(b)
time.sleep(0.2)  # the last ACK leaves before TCP_INFO is read
info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
c.close()
print(json.dumps({"sent": sent, "received": got, "tcp_info": info.hex()}), flush=True)
'''


def tcp_info(hexstr: str) -> dict:
    """The fields of struct tcp_info (linux/tcp.h) the tests use."""
    import struct
    b = bytes.fromhex(hexstr)
    # u8 state ca_state retransmits probes backoff options wscale(2x4 bits) delivery_rate_app_limited...
    u32 = lambda off: struct.unpack_from("<I", b, off)[0]  # noqa: E731
    u64 = lambda off: struct.unpack_from("<Q", b, off)[0]  # noqa: E731
    return {
        "rtt_us": u32(68), "rttvar_us": u32(72), "total_retrans": u32(100),
        "bytes_acked": u64(120), "bytes_received": u64(128), "segs_out": u32(136), "segs_in": u32(140),
        "data_segs_in": u32(152), "data_segs_out": u32(156), "bytes_retrans": u64(208),
    }


def tcp_exchange(pair: VethPair, up: int, down: int, port: int = 5201, v6: bool = False,
                 pace_s: float | None = None) -> tuple[dict, dict]:
    """A connects to B, sends `up` bytes, B answers `down` bytes, both close. Returns (client, server) JSON
    with TCP_INFO of each socket at the end."""
    import json
    addr = pair.ip6_b if v6 else pair.ip_b
    srv = subprocess.Popen(["ip", "netns", "exec", pair.ns_b, PY, "-c", TCP_SERVER, addr, str(port), str(down)],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        args = [addr, port, up] + ([pace_s] if pace_s else [])
        cli = in_ns(pair.ns_a, PY, "-c", TCP_CLIENT, *args, timeout=120)
        out, _ = srv.communicate(timeout=60)
    finally:
        if srv.poll() is None:
            srv.kill()
    return json.loads(cli.stdout), json.loads(out.strip().splitlines()[-1])


def read_flows(path: Path):
    """The flow records of an IPC stream file, timestamps as int64 ns (to_pylist cannot make datetimes of
    nanoseconds without pandas)."""
    import pyarrow as pa
    with open(path, "rb") as f:
        t = pa.ipc.open_stream(f).read_all()
    for name in ("flow_start", "flow_end"):
        i = t.schema.get_field_index(name)
        t = t.set_column(i, name, t.column(name).cast(pa.int64()))
    return t
