"""Replay benchmark: flowtap against NFStream and the tcpdump read floor, on one page-cached capture.

Every tool runs as a child process in its own session (so its process group holds everything it forks),
in the same invocation, over the same file, after the file has been read once into the page cache.
For each run the harness records (MB are MiB):

  wall s        perf_counter from just before the fork to the return of wait4 (interpreter start-up included,
                as a user pays it)
  Mpps          packets in the capture (counted once here, from the record headers) / wall s
  peak RSS MB   tree: the largest sum of VmRSS (/proc/PID/status) over the child's process group, sampled every
                --sample-ms (50 ms). Shared copy-on-write pages of forked children count once per process, so
                this over-states a forking tool slightly; a run shorter than one sample period may under-state it.
  largest MB    ru_maxrss from wait4: the peak of the largest single process in the tree (reaped children
                included), exact but blind to the sum, and never below the harness's own peak RSS, because
                exec carries the parent's high-water mark into the child (the report prints that floor)
  procs         the most processes seen in the group at one sample (NFStream forks metering processes)
  CPU s         user + system time of the child and its reaped children (wait4 rusage)
  CPU wait %    share of the wall time in which some task on the machine waited for a CPU (PSI): contention
  flows         flowtap: rows of its output file; NFStream: the count nfstream_run.py prints; tcpdump: none

Examples:
  bench_replay.py /work/benchdata/big.pcap
  bench_replay.py big.pcap --repeat 3 --only flowtap,nfstream
  bench_replay.py big.pcap --flowtap /work/main/.venv/bin/flowtap --json results.json
  bench_replay.py big.pcap --extra "ndpi=ndpiReader -i {file} -q" --extra "copy=cp {file} {out}"
  bench_replay.py big.pcap --extra "flowtap=tcpdump -r {file} -w /dev/null"   # stand-in for a missing flowtap

In --extra commands {file} is the capture, {out} a fresh output path in the output directory (name.parquet)
and {bench} this folder. An --extra whose name is a built-in (flowtap, nfstream, tcpdump) replaces it.
A tool that is missing or fails is reported in the table and does not stop the others.
Progress goes to stderr; the Markdown report goes to stdout.
"""
import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
BUILTIN_ORDER = ("flowtap", "nfstream", "tcpdump")
# Same count readers that open these formats; the row count lives in the file footer, so this is cheap.
TABLE_SUFFIXES = (".parquet", ".arrow", ".arrows", ".feather", ".ipc")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# Capture facts


def count_packets(path):
    """Return the number of complete packet records in a pcap or pcapng file.

    Walks record headers only (pcap: 16-byte record header, incl_len little or big endian as the magic says;
    pcapng: block type and total length, counting Enhanced, Simple and obsolete Packet blocks). A record cut
    short by the end of the file is not counted (libpcap stops there with an error; capinfos counts it).
    Reads in 1 MiB chunks rather than mmap: mapped file pages would raise this process's RSS high-water
    mark, and the kernel carries that mark into every child exec'd from here (see run_once).
    """
    size = os.path.getsize(path)
    if size < 24:
        raise ValueError(f"{path}: {size} bytes is too short for a capture")
    with open(path, "rb", buffering=0) as f:
        magic = f.read(4)
        if magic == b"\x0a\x0d\x0d\x0a":
            return _walk_records(f, size, 0, 12, _pcapng_stepper())
        if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
            incl_len_at = struct.Struct("<I").unpack_from
        elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
            incl_len_at = struct.Struct(">I").unpack_from
        else:
            raise ValueError(f"{path}: not a pcap or pcapng file (magic {magic.hex()})")
        return _walk_records(f, size, 24, 16, lambda buf, rel: (16 + incl_len_at(buf, rel + 8)[0], True))


def _pcapng_stepper():
    packet_block_types = (0x00000006, 0x00000003, 0x00000002)  # EPB, SPB, obsolete PB
    fmt = {"<": struct.Struct("<II").unpack_from, ">": struct.Struct(">II").unpack_from}
    state = {"endian": "<"}

    def step(buf, rel):
        if buf[rel:rel + 4] == b"\x0a\x0d\x0d\x0a":  # each section header carries its own byte order
            state["endian"] = "<" if buf[rel + 8:rel + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        btype, blen = fmt[state["endian"]](buf, rel)
        if blen < 12:
            return 0, False  # a zero or short length would never advance: the file is malformed here
        return blen, btype in packet_block_types

    return step


def _walk_records(f, size, off, need, step):
    """Count records from offset off; step(buf, rel) -> (record length, is_packet), with need header bytes."""
    chunk = 1 << 20
    buf, base, n = b"", off, 0
    while off + need <= size:
        rel = off - base
        if rel + need > len(buf):
            f.seek(off)
            buf, base, rel = f.read(chunk), off, 0
        length, is_packet = step(buf, rel)
        if length == 0 or off + length > size:
            break
        n += is_packet
        off += length
    return n


def warm_page_cache(path):
    """Read the file end to end twice; return the second pass in GB/s (a warm cache reads at memory speed)."""
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    rate = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        total = 0
        with open(path, "rb", buffering=0) as f:
            while True:
                got = f.readinto(view)
                if not got:
                    break
                total += got
        rate = total / (time.perf_counter() - t0) / 1e9
    return rate


def count_table_rows(path):
    """Rows of a Parquet or Arrow IPC file (footer metadata only), or None when it cannot be read.

    Runs in a child interpreter so that importing pyarrow does not raise this process's RSS high-water
    mark, which the kernel would carry into the next tool's ru_maxrss (see run_once).
    """
    code = (
        "import sys, pyarrow.parquet as pq, pyarrow.ipc as ipc\n"
        "p = sys.argv[1]\n"
        "if p.endswith('.parquet'):\n"
        "    n = pq.read_metadata(p).num_rows\n"
        "else:\n"
        "    try:\n"
        "        r = ipc.open_file(p); n = sum(r.get_batch(i).num_rows for i in range(r.num_record_batches))\n"
        "    except Exception:\n"
        "        n = sum(b.num_rows for b in ipc.open_stream(p))\n"
        "print(n)\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    if r.returncode != 0:  # no pyarrow in this interpreter, or a truncated file
        log(f"  cannot count rows of {path}: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        return None
    return int(r.stdout)


# ---------------------------------------------------------------------------------------------------------
# Process-tree measurement


def group_members(pgid):
    """Return the pids of live (not zombie) processes whose process group is pgid (/proc/PID/stat field 5)."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # exited between listdir and open
            continue
        # comm may hold spaces and parentheses; the fields after the last ')' are fixed
        fields = stat[stat.rindex(b")") + 2:].split()
        if int(fields[2]) == pgid and fields[0] != b"Z":  # a zombie holds no memory and is already dead
            pids.append(int(name))
    return pids


def vm_rss_kb(pid):
    """VmRSS of pid in KiB, 0 for a zombie or a process that is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeSampler(threading.Thread):
    """Samples the summed VmRSS of one process group every period_s until stop() is called."""

    def __init__(self, pgid, period_s):
        super().__init__(daemon=True)
        self.pgid, self.period_s = pgid, period_s
        self.peak_kb, self.max_procs, self.samples, self.scan_s = 0, 0, 0, 0.0
        self._halt = threading.Event()

    def sample(self):
        t0 = time.perf_counter()
        pids = group_members(self.pgid)
        total = sum(vm_rss_kb(p) for p in pids)
        self.scan_s += time.perf_counter() - t0
        self.samples += 1
        self.peak_kb = max(self.peak_kb, total)
        self.max_procs = max(self.max_procs, len(pids))

    def run(self):
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.period_s)

    def stop(self):
        self._halt.set()
        self.join()


def run_once(argv, workdir, tag, sample_s, timeout_s):
    """Run argv in a new session; return a dict of measurements (see the module docstring)."""
    stdout_path = workdir / f"{tag}.stdout"
    stderr_path = workdir / f"{tag}.stderr"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        psi0 = cpu_pressure_us()
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
        except OSError as e:
            return {"ok": False, "error": f"cannot start: {e}"}
        sampler = TreeSampler(proc.pid, sample_s)
        sampler.start()
        killer = threading.Timer(timeout_s, _kill_group, (proc.pid,))
        killer.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall_s = time.perf_counter() - t0
        psi1 = cpu_pressure_us()
        killer.cancel()
        sampler.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    leftover = group_members(proc.pid)
    if leftover:  # a child that outlived its parent would skew the next run
        log(f"  {tag}: {len(leftover)} process(es) left in the group after exit; killing them")
        _kill_group(proc.pid)
    res = {
        "ok": proc.returncode == 0,
        "rc": proc.returncode,
        "wall_s": wall_s,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "tree_rss_mb": sampler.peak_kb / 1024,
        "largest_rss_mb": ru.ru_maxrss / 1024,  # KiB on Linux
        "procs": sampler.max_procs,
        "cpu_wait_pct": None if psi0 is None or psi1 is None else 100 * (psi1 - psi0) / 1e6 / wall_s,
        "samples": sampler.samples,
        "sampler_cpu_s": sampler.scan_s,
        "stdout": str(stdout_path),
        "stderr": str(stderr_path),
    }
    if not res["ok"]:
        tail = stderr_path.read_bytes()[-600:].decode(errors="replace").strip()
        res["error"] = (f"killed after the {timeout_s:g} s timeout" if wall_s >= timeout_s
                        else f"exit {proc.returncode}") + (f": {tail.splitlines()[-1]}" if tail else "")
    return res


def cpu_pressure_us():
    """Total microseconds in which some runnable task waited for a CPU (/proc/pressure/cpu), or None.

    Its growth over a run says whether something else on the machine competed for the CPUs: a tool's own
    processes add to it too when they outnumber the CPUs, so read it beside the procs column.
    """
    try:
        with open("/proc/pressure/cpu") as f:
            return int(f.readline().rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def flows_from_stdout(path):
    """The "flows" value of a JSON object on the last non-empty stdout line, else None."""
    try:
        lines = [l for l in Path(path).read_text(errors="replace").splitlines() if l.strip()]
        obj = json.loads(lines[-1]) if lines else None
        return int(obj["flows"]) if isinstance(obj, dict) and "flows" in obj else None
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------------------
# Tools and the machine


def resolve_exe(path_or_name):
    """An executable path for a path or a bare name, or None."""
    if os.sep in path_or_name:
        p = Path(path_or_name)
        return str(p) if p.is_file() and os.access(p, os.X_OK) else None
    return shutil.which(path_or_name)


def build_tools(args, out_dir):
    """Return [(name, argv or None, out_path or None, why_missing)] in run order."""
    tools = {}
    flowtap = resolve_exe(args.flowtap)
    out = out_dir / "flowtap.parquet"
    tools["flowtap"] = ((flowtap or args.flowtap, "replay", args.capture, "-o", str(out)), out,
                        None if flowtap else f"not found: {args.flowtap}")
    nfs_py = resolve_exe(args.nfstream_python)
    tools["nfstream"] = ((nfs_py or args.nfstream_python, str(BENCH_DIR / "nfstream_run.py"), args.capture), None,
                         None if nfs_py else f"not found: {args.nfstream_python}")
    tcpdump = resolve_exe("tcpdump")
    tools["tcpdump"] = ((tcpdump or "tcpdump", "-r", args.capture, "-w", "/dev/null"), None,
                        None if tcpdump else "tcpdump not on PATH")
    for spec in args.extra:
        name, sep, template = spec.partition("=")
        name = name.strip()
        if not sep or not name or not template.strip():
            raise SystemExit(f"--extra wants NAME=COMMAND, got {spec!r}")
        out = out_dir / f"{name}.parquet"
        fill = {"file": args.capture, "out": str(out), "bench": str(BENCH_DIR)}
        argv = [tok.format(**fill) for tok in shlex.split(template)]
        exe = resolve_exe(argv[0])
        argv[0] = exe or argv[0]
        tools[name] = (tuple(argv), out if "{out}" in template else None,
                       None if exe else f"not found: {argv[0]}")
    names = list(tools)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in tools]
        if unknown:
            raise SystemExit(f"--only: unknown tool(s) {unknown}; known: {names}")
        names = wanted
    return [(n, tools[n][0], tools[n][1], tools[n][2]) for n in names]


def _first_line(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        text = (r.stdout or r.stderr).strip()
        return text.splitlines()[0] if text else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def machine_description(args):
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    nfs_py = resolve_exe(args.nfstream_python)
    nfs = None
    if nfs_py:
        nfs = _first_line([nfs_py, "-c", "import sys, nfstream; "
                           "print('NFStream %s on Python %s' % (nfstream.__version__, sys.version.split()[0]))"])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gb": mem_gb,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_exe": sys.executable,
        "nfstream": nfs,
        "tcpdump": _first_line(["tcpdump", "--version"]),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "loadavg": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# ---------------------------------------------------------------------------------------------------------
# Report


def markdown(cap, machine, rows, repeat, floor_mb):
    m = machine
    lines = [
        f"### Replay benchmark: `{Path(cap['path']).name}` ({cap['packets']:,} packets, "
        f"{cap['bytes'] / 2**20:.1f} MiB)",
        "",
        f"Machine: nproc {m['nproc']} (cpu_count {m['cpu_count']}), {m['cpu_model']}, "
        + (f"{m['mem_gb']:.1f} GiB RAM, " if m["mem_gb"] else "")
        + f"Linux {m['kernel']}, harness Python {m['python']}; {m['nfstream'] or 'NFStream not available'}; "
        f"{m['tcpdump'] or 'tcpdump ?'}. {m['date']}, load average {m['loadavg']} before the runs.",
        f"Page cache warm (second read {cap['warm_gbps']:.1f} GB/s). Best wall time of {repeat} run(s) "
        "per tool; the other columns come from that run.",
        "",
        "| tool | Mpps | wall s | peak RSS MB (tree) | flows | largest proc MB | procs | CPU s | CPU wait % "
        "| x NFStream | wall s, every run |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    nfs = next((r for r in rows if r["name"] == "nfstream" and r.get("best")), None)
    for r in rows:
        b = r.get("best")
        if not b:
            lines.append(f"| {r['name']} | - | - | - | - | - | - | - | - | {r['why']} | |")
            continue
        mpps = cap["packets"] / b["wall_s"] / 1e6
        flows = "-" if r.get("flows") is None else f"{r['flows']:,}"
        ratio = f"{b_ratio(b, nfs):.2f}" if nfs else "-"
        wait = "-" if b["cpu_wait_pct"] is None else f"{b['cpu_wait_pct']:.0f}"
        walls = " ".join(f"{x['wall_s']:.2f}" if x["ok"] else "fail" for x in r["runs"])
        lines.append(f"| {r['name']} | {mpps:.3f} | {b['wall_s']:.2f} | {b['tree_rss_mb']:.0f} | {flows} | "
                     f"{b['largest_rss_mb']:.0f} | {b['procs']} | {b['cpu_s']:.2f} | {wait} | {ratio} | {walls} |")
    lines.append("")
    ft = next((r for r in rows if r["name"] == "flowtap"), None)
    if ft and ft.get("best") and nfs:
        fb, nb = ft["best"], nfs["best"]
        lines.append(f"**flowtap / NFStream**: speed {b_ratio(fb, nfs):.2f}x, "
                     f"peak RSS (tree) {fb['tree_rss_mb'] / nb['tree_rss_mb']:.2f}x, "
                     f"CPU time {fb['cpu_s'] / nb['cpu_s']:.2f}x.")
    else:
        why = ("flowtap " + (ft["why"] if ft else "not selected")) if not (ft and ft.get("best")) \
            else "NFStream " + (next((r["why"] for r in rows if r["name"] == "nfstream"), "not selected"))
        lines.append(f"**flowtap / NFStream**: n/a ({why}).")
    lines += ["", f"Peak RSS (tree) is the largest summed VmRSS of the tool's process group, sampled every "
              f"{machine['sample_ms']:g} ms. Largest proc is wait4's ru_maxrss; it cannot read below the "
              f"harness's own peak ({floor_mb:.0f} MB), because exec carries the parent's high-water mark "
              "into the child. Mpps counts interpreter start-up in the wall time. CPU wait % is the share of the wall "
              "time in which some task waited for a CPU (PSI cpu some): well above 0 for a one-process tool means "
              "the machine was busy with something else and the run is slower than it should be.",
              "", "Commands:", ""]
    for r in rows:
        lines.append(f"- {r['name']}: `{shlex.join(str(a) for a in r['argv'])}`"
                     + ("" if r.get("best") else f" ({r['why']})"))
    return "\n".join(lines)


def b_ratio(best, nfs_row):
    return nfs_row["best"]["wall_s"] / best["wall_s"]


# ---------------------------------------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("capture", help="pcap or pcapng file (keep it outside the repository)")
    ap.add_argument("--flowtap", default=str(REPO_ROOT / ".venv" / "bin" / "flowtap"),
                    help="flowtap executable (default: %(default)s)")
    ap.add_argument("--nfstream-python", default="/work/nfs-venv/bin/python",
                    help="interpreter of a venv with nfstream installed (default: %(default)s)")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=COMMAND",
                    help="another tool to time; {file}, {out}, {bench} are substituted; repeatable")
    ap.add_argument("--only", help="comma-separated tool names to run, in that order")
    ap.add_argument("--repeat", type=int, default=1, help="runs per tool; the best wall time is kept")
    ap.add_argument("--sample-ms", type=float, default=50.0, help="RSS sampling period (default 50)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds before a run is killed")
    ap.add_argument("--out-dir", help="where outputs and logs go (default: a temporary directory, removed)")
    ap.add_argument("--json", metavar="FILE", help="also write every run's measurements as JSON")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        raise SystemExit("--repeat must be >= 1")
    args.capture = str(Path(args.capture).resolve())

    tmp = None
    if args.out_dir:
        out_dir = Path(args.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="flowtap-bench-")
        out_dir = Path(tmp.name)
    try:
        tools = build_tools(args, out_dir)
        t0 = time.perf_counter()
        packets = count_packets(args.capture)
        log(f"{args.capture}: {packets:,} packets (counted in {time.perf_counter() - t0:.2f} s)")
        cap = {"path": args.capture, "packets": packets, "bytes": os.path.getsize(args.capture)}
        machine = machine_description(args)
        rows = [{"name": n, "argv": a, "out": o, "why": why, "runs": []} for n, a, o, why in tools]
        for rep in range(args.repeat):
            # Interleaved repeats: a slow patch of the machine then hits every tool, not only one.
            for row in rows:
                if row["why"]:
                    continue
                if row["out"] and row["out"].exists():
                    row["out"].unlink()
                cap["warm_gbps"] = warm_page_cache(args.capture)
                log(f"[{rep + 1}/{args.repeat}] {row['name']}: {shlex.join(str(a) for a in row['argv'])}")
                res = run_once(row["argv"], out_dir, f"{row['name']}.{rep}", args.sample_ms / 1000,
                               args.timeout)
                if res["ok"]:
                    if row["out"] and row["out"].suffix in TABLE_SUFFIXES and row["out"].exists():
                        res["flows"] = count_table_rows(row["out"])
                    else:
                        res["flows"] = flows_from_stdout(res["stdout"])
                    log(f"  {res['wall_s']:.2f} s, {packets / res['wall_s'] / 1e6:.3f} Mpps, tree "
                        f"{res['tree_rss_mb']:.0f} MB, largest {res['largest_rss_mb']:.0f} MB, "
                        f"{res['procs']} proc(s), flows {res['flows']}")
                else:
                    log(f"  FAILED: {res['error']} (log: {res.get('stderr')})")
                row["runs"].append(res)
            for row in rows:
                ok = [r for r in row["runs"] if r["ok"]]
                if ok:
                    row["best"] = min(ok, key=lambda r: r["wall_s"])
                    row["flows"] = row["best"]["flows"]
                elif row["runs"]:
                    row["why"] = "failed: " + row["runs"][-1]["error"]
        machine["sample_ms"] = args.sample_ms
        floor_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(markdown(cap, machine, rows, args.repeat, floor_mb))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"capture": cap, "machine": machine,
                           "tools": [{k: (list(v) if k == "argv" else str(v) if k == "out" else v)
                                      for k, v in r.items()} for r in rows]}, f, indent=2)
        # A tool that is absent is reported, not an error (flowtap may not be built yet); a run that fails is.
        return 1 if any(r["runs"] and not r.get("best") for r in rows) else 0
    finally:
        if tmp:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
