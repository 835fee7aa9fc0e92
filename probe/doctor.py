"""flowtap doctor: can this machine run live capture? Each check says what it found and, when it is a
problem, the command that fixes it. Read-only: it changes nothing."""
from __future__ import annotations

import gzip
import os
import platform
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39


@dataclass
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""


def _kconfig() -> dict[str, str]:
    rel = platform.release()
    for path in ("/proc/config.gz", f"/boot/config-{rel}"):
        try:
            raw = gzip.open(path, "rt").read() if path.endswith(".gz") else open(path).read()
        except OSError:
            continue
        cfg = {}
        for line in raw.splitlines():
            if line.startswith("CONFIG_") and "=" in line:
                k, v = line.split("=", 1)
                cfg[k] = v
        return cfg
    return {}


def _caps() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def checks() -> list[Check]:
    out: list[Check] = []
    rel = platform.release()
    major, minor = (int(x) for x in rel.split(".")[:2])
    out.append(Check("kernel", (major, minor) >= (5, 18), f"{rel}",
                     "" if (major, minor) >= (5, 18) else
                     "the probe needs Linux >= 5.18 (BPF ring buffer 5.8, bpf_xdp_load_bytes 5.18): upgrade the kernel"))
    cfg = _kconfig()
    if cfg:
        need = ["CONFIG_BPF_SYSCALL", "CONFIG_BPF_JIT", "CONFIG_NET_CLS_BPF", "CONFIG_NET_SCH_INGRESS"]
        missing = [k for k in need if cfg.get(k) not in ("y", "m")]
        out.append(Check("kernel config", not missing,
                         "has " + ", ".join(need) if not missing else "missing " + ", ".join(missing),
                         "" if not missing else "rebuild the kernel with these options (tc mode needs the last two)"))
    else:
        out.append(Check("kernel config", True, "not readable (/proc/config.gz, /boot/config-*): not checked"))
    btf = Path("/sys/kernel/btf/vmlinux").exists()
    out.append(Check("BTF", True, "/sys/kernel/btf/vmlinux present" if btf else
                     "no /sys/kernel/btf/vmlinux (not needed: the probe uses UAPI headers only)"))
    mod = Path(f"/lib/modules/{rel}")
    hdr = None
    for cand in (mod / "build", mod / "source"):
        if (cand / "include/uapi/linux/bpf.h").exists() or (cand / "include/linux/bpf.h").exists():
            hdr = cand
            break
    out.append(Check("kernel headers", hdr is not None,
                     f"{hdr} -> {os.path.realpath(hdr)}" if hdr else f"nothing usable in {mod}/build or /source",
                     "" if hdr else "sh probe/bpf_setup.sh   (installs linux-headers-$(dpkg --print-architecture) "
                     "and links them there; any recent headers do, the programs use the UAPI only)"))
    try:
        import bcc
        ver = getattr(bcc, "__version__", "?")
        out.append(Check("bcc", True, f"{ver} ({Path(bcc.__file__).parent})"))
    except Exception as e:
        out.append(Check("bcc", False, f"not importable: {e}",
                         "sh probe/bpf_setup.sh   (apt-get install python3-bpfcc, then links it into .venv)"))
    try:
        import pyroute2
        out.append(Check("pyroute2", True, pyroute2.__version__))
    except Exception:
        out.append(Check("pyroute2", False, "not installed", ".venv/bin/pip install pyroute2"))
    try:
        import probe._ring  # noqa: F401
        out.append(Check("ring drain module", True, "probe._ring built"))
    except Exception as e:
        out.append(Check("ring drain module", False, f"{e}", "sh setup.sh   (builds ext/_ring.pyx)"))
    caps = _caps()
    has = lambda c: bool(caps >> c & 1)  # noqa: E731
    load_ok = has(CAP_SYS_ADMIN) or (has(CAP_BPF) and has(CAP_PERFMON))
    attach_ok = has(CAP_NET_ADMIN)
    out.append(Check("capabilities", load_ok and attach_ok,
                     ", ".join(n for n, c in (("CAP_SYS_ADMIN", CAP_SYS_ADMIN), ("CAP_BPF", CAP_BPF),
                                              ("CAP_PERFMON", CAP_PERFMON), ("CAP_NET_ADMIN", CAP_NET_ADMIN))
                               if has(c)) or "none",
                     "" if load_ok and attach_ok else
                     "run as root, or: sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep $(readlink -f .venv/bin/python)"))
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    unlimited = soft == resource.RLIM_INFINITY
    # since 5.11 BPF memory is charged to the memory cgroup, not RLIMIT_MEMLOCK; BCC raises it anyway
    memcg = (major, minor) >= (5, 11)
    out.append(Check("memlock", unlimited or memcg or soft >= 64 << 20,
                     ("unlimited" if unlimited else f"{soft >> 10} KiB") +
                     (" (kernel >= 5.11 charges BPF maps to the memory cgroup instead)" if memcg else ""),
                     "" if unlimited or memcg or soft >= 64 << 20 else "ulimit -l unlimited"))
    for tool, why, fix in (("tc", "inspecting clsact filters", "apt-get install iproute2"),
                           ("ip", "netns / XDP state", "apt-get install iproute2")):
        p = shutil.which(tool)
        out.append(Check(tool, p is not None, p or "missing", "" if p else fix))
    fs = Path("/sys/fs/bpf")
    out.append(Check("bpffs", True, "mounted" if fs.is_dir() and os.path.ismount(fs) else
                     "not mounted (not needed: flowtap pins nothing)"))
    return out


def run() -> tuple[str, bool]:
    """The report as text, and whether every check passed."""
    res = checks()
    lines = []
    for c in res:
        lines.append(f"{'ok ' if c.ok else 'BAD'}  {c.name:<18} {c.found}")
        if not c.ok and c.fix:
            lines.append(f"     {'':<18} fix: {c.fix}")
    bad = [c for c in res if not c.ok]
    lines.append("all checks passed: `flowtap capture -i IFACE -o flows.arrows` should work" if not bad else
                 f"{len(bad)} problem(s); fix them in the order shown")
    return "\n".join(lines), not bad


def kernel_summary() -> str:
    try:
        return subprocess.run(["uname", "-a"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return platform.platform()
