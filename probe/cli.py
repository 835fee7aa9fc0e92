"""The flowtap command line: replay captures, inspect flow files.

Exit codes (all commands): 0 success; 2 usage error; 3 an input could not be read or is not a valid capture
(everything read before the problem is still written); 4 the output could not be written; 6 the output's
file system is full (ENOSPC, EDQUOT, EFBIG: the complete batches are kept in the temporary file, see
docs/output.md); 130 interrupted (the output is still written and sealed).
"""
from __future__ import annotations

import json
import os
import sys
import time

import click

# numpy's OpenBLAS starts a thread per core that spins while idle; flowtap does no linear algebra, and on a
# small host those threads took 9 % of a replay's CPU (perf) from the core the engine needs.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_OUTPUT = 4
EXIT_INTERRUPTED = 130
EXIT_OUTPUT_FULL = 6   # issue 7; 5 is capture's EXIT_LIVE


# Set by entry() (the flowtap command): a finished replay then ends the process without the interpreter's
# finalization (module teardown and the collection of everything the run made: 30-50 ms of a 0.6 s replay
# of the benchmark capture). In-process callers (tests, click's CliRunner) keep sys.exit.
_FAST_EXIT = False


def _finish(status: int) -> None:
    """End a command whose work is complete: its output sealed and closed, its summary printed."""
    if _FAST_EXIT:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (BrokenPipeError, ValueError):   # the reader of a pipe went away; nothing left to say
            pass
        os._exit(status)
    sys.exit(status)


def _output_exit(e) -> int:
    """Exit code of an OutputError: a full file system is told apart from other output errors."""
    return EXIT_OUTPUT_FULL if getattr(e, "disk_full", False) else EXIT_OUTPUT


def _max_output_size(ctx, param, value):
    """click callback: --max-output-size 100M -> bytes (issue 7)."""
    if value is None:
        return None
    from dpi.writer import parse_size
    try:
        return parse_size(value)
    except ValueError as e:
        raise click.BadParameter(str(e))


def output_options(f):
    """--max-output-size and --parquet-journal, shared by replay and capture (issue 7, docs/output.md)."""
    f = click.option("--parquet-journal/--no-parquet-journal", default=True, show_default=True,
                     help="Parquet: write the batches to the temporary file as an Arrow IPC stream and convert "
                          "when sealing, so that a killed run stays recoverable (docs/output.md).")(f)
    f = click.option("--max-output-size", "max_output_size", default=None, metavar="SIZE",
                     callback=_max_output_size,
                     help="Stop writing once the output holds SIZE bytes (500K, 100M, 2G; KiB/MiB/GiB too): "
                          "the file is sealed, the run goes on and counts the records not written.")(f)
    return f


def _err(msg: str) -> None:
    click.echo(f"flowtap: {msg}", err=True)


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def _size(n: float) -> str:
    """Bytes in the largest decimal unit that keeps at least one digit before the point."""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:,.1f} {unit}"
    return f"{int(n)} B"


def _rate(packets: int, seconds: float) -> str:
    if seconds <= 0:
        return "-"
    r = packets / seconds
    return f"{r / 1e6:.2f} Mpps" if r >= 1e5 else f"{r:,.0f} pps"


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class _ProgressLine:
    """One self-overwriting progress line on stderr, at most 5 updates a second (wall clock only paces
    the display; it never reaches the data)."""

    def __init__(self):
        self.last = 0.0
        self.shown = False

    def __call__(self, p) -> None:
        now = time.monotonic()
        if now - self.last < 0.2:
            return
        self.last = now
        pct = 100.0 * p.bytes_done / p.bytes_total if p.bytes_total else 0.0
        rate = p.packets / p.elapsed_s / 1e6 if p.elapsed_s > 0 else 0.0
        name = os.path.basename(p.path)
        line = (f"[{p.file_index + 1}/{p.file_count}] {name}: {_mb(p.bytes_done)} / {_mb(p.bytes_total)} "
                f"({pct:4.1f}%)  {p.packets:,} pkts  {rate:.2f} Mpps  {p.active_flows:,} active flows")
        sys.stderr.write("\r\x1b[K" + line)
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="flowtap", prog_name="flowtap")
def main():
    """flowtap: per-flow TCP and RoCEv2 visibility, written as Apache Arrow flow records.

    \b
    Examples:
      flowtap replay trace.pcap -o flows.parquet
      flowtap inspect flows.parquet
      sudo flowtap capture -i eth0 -o flows.arrows
      flowtap doctor
    """


REPLAY_EPILOG = """
\b
Examples:
  flowtap replay trace.pcap -o flows.parquet
  flowtap replay a.pcapng b.pcap.gz c.pcap.zst -o flows.arrow      # several files, one output
  flowtap replay big.pcap -o flows.arrows --idle-timeout 30 --max-flows 200000
  flowtap replay trace.pcap -o flows.parquet --rules ./my-rules --dpi-budget 24
  flowtap replay trace.pcap -o - | python -c 'import pyarrow as pa,sys; print(pa.ipc.open_stream(sys.stdin.buffer).read_all().num_rows)'

\b
Output format from the extension: .parquet (Parquet, zstd), .arrow (Arrow IPC file), .arrows (Arrow
IPC stream; "-" writes a stream to stdout). The file appears under its name only once complete.
Exit codes: 0 ok, 2 usage, 3 unreadable or malformed input (what was read is still written),
4 output error, 6 output file system full, 130 interrupted (output still sealed).
"""


@main.command(epilog=REPLAY_EPILOG)
@click.argument("captures", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, help="Flow-record file to write (.parquet, .arrow, .arrows, -).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "ipc_file", "ipc_stream"]),
              help="Output format, when the extension does not say.")
@click.option("--idle-timeout", default=120.0, show_default=True, type=float, metavar="S",
              help="A flow with no packet for S seconds (packet time) ends.")
@click.option("--active-timeout", default=1800.0, show_default=True, type=float, metavar="S",
              help="A long flow yields a record every S seconds (same flow_id, delta counters).")
@click.option("--max-flows", default=1_000_000, show_default=True, type=int, metavar="N",
              help="Flow-table capacity; when full, a flow is exported early (flow_end_reason 5) and "
                   "counted: one-packet flows (floods, scans) first, then the least recently seen "
                   "(docs/limits.md).")
@click.option("--observer", default="", metavar="NAME", help="observer_host value (default: host name).")
@click.option("--progress/--no-progress", default=None,
              help="Progress on stderr (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON instead of text.")
@click.option("--tcp-meter/--no-tcp-meter", default=True, show_default=True,
              help="TCP loss and latency meters (docs/tcp.md). Off, the replay is faster, the file has no "
                   "TCP meter columns (column group tcp, docs/schema.md) and its flowtap.settings say "
                   "tcp_meter false.")
@click.option("--roce-columns/--no-roce-columns", default=True, show_default=True,
              help="The RoCE meter's 91 columns (column group roce, docs/roce.md). Off, they are left out of "
                   "the file, for hosts that see no RoCE; RoCE flows are still one record per queue pair.")
# ---- DPI (issue 5) ----
@click.option("--rules", "rules", multiple=True, type=click.Path(exists=True), metavar="DIR",
              help="Extra rule files or directories of *.toml (repeatable); they override the shipped rules.")
@click.option("--dpi-budget", default=16, show_default=True, type=click.IntRange(0, 255), metavar="N",
              help="Payload packets per flow (both directions) shown to the dissectors; 0 turns "
                   "application classification off (no payload inspection, no rules; app_proto is null and "
                   "the other DPI columns, column group dpi, are left out).")
@click.option("--dpi-reasm-flows", default=4096, show_default=True, type=click.IntRange(0, 1 << 24),
              metavar="N",
              help="Flows whose first payload bytes (up to 4096 per direction) are reassembled at once, 8 kB "
                   "each; beyond, DPI sees a flow packet by packet. 0: no reassembly.")
@output_options  # issue 7
def replay(captures, output, fmt, idle_timeout, active_timeout, max_flows, observer, progress, as_json,
           tcp_meter, roce_columns, rules, dpi_budget, dpi_reasm_flows, max_output_size, parquet_journal):
    """Replay pcap/pcapng captures (plain, .gz or .zst) into flow records."""
    from dpi.engine import EngineConfig, RulesError
    from dpi.replay import InputError, replay as run_replay
    from dpi.writer import OutputError

    config = EngineConfig(idle_timeout_s=idle_timeout, active_timeout_s=active_timeout,
                          max_flows=max_flows, observer_host=observer, dpi_budget=dpi_budget,
                          rules=list(rules), dpi_reasm_flows=dpi_reasm_flows, tcp_meter=tcp_meter,
                          roce_columns=roce_columns)
    try:
        config.validate()
    except ValueError as e:
        raise click.UsageError(str(e))
    # SIGTERM (systemd stop, kill) ends a replay like Ctrl-C: stop reading, write and seal the output; both
    # wait while a batch is on its way to the file (dpi.replay.interrupt_handler, issue 7)
    import signal
    from dpi.replay import interrupt_handler
    signal.signal(signal.SIGINT, interrupt_handler)
    signal.signal(signal.SIGTERM, interrupt_handler)
    show = sys.stderr.isatty() if progress is None else progress
    bar = _ProgressLine() if show else None
    interrupted = False
    try:
        res = run_replay(list(captures), output, config, fmt=fmt, progress=bar,
                         max_output_bytes=max_output_size, parquet_journal=parquet_journal)
    except RulesError as e:  # DPI (issue 5): a bad rule file stops the run before any output
        for msg in e.errors:
            _err(msg)
        sys.exit(EXIT_USAGE)
    except InputError as e:
        _err(str(e))
        sys.exit(EXIT_INPUT)
    except OutputError as e:
        if bar:
            bar.done()
        _err(str(e))
        sys.exit(_output_exit(e))
    except KeyboardInterrupt:
        if bar:
            bar.done()
        _err(f"interrupted; flows collected so far were written to {output}")
        sys.exit(EXIT_INTERRUPTED)
    if bar:
        bar.done()
    for e in res.errors:
        _err(e)
    out = sys.stderr if output == "-" else sys.stdout
    if as_json:
        click.echo(json.dumps({
            "output": res.output, "packets": res.packets, "bytes_ip": res.bytes_ip, "flows": res.flows,
            "records": res.records, "elapsed_s": round(res.elapsed_s, 3), "errors": res.errors,
            "counters": res.counters, "output_limit_reached": res.counters.get("output", {}).get("limit_reached", False),
            "top_flows": [{"bytes": b, "packets": p, "flow": f} for b, p, f in res.top_flows],
            "top_hosts": [{"bytes": b, "host": h} for b, h in res.top_hosts],
        }, indent=2), file=out)
    else:
        click.echo(format_summary(res), file=out)
    _finish(EXIT_INPUT if res.errors else 0)


# reader counters worth a line in the summary when non-zero (the others are in the file's metadata)
READER_ANOMALIES = ("truncated", "over_snaplen", "caplen_over_wire", "bad_options", "ts_clamped",
                    "obsolete_packets")


def format_limits(lim: dict) -> list[str]:
    """Summary lines: each limit (dpi.engine.limits) and how often it was reached."""
    lines = [f"limits: max flows {lim['max_flows']:,}: evicted {lim['flows_evicted']:,} "
             f"(established {lim['flows_evicted_established']:,})"]
    if lim["dpi_budget_packets"]:
        lines.append(f"        DPI budget {lim['dpi_budget_packets']} packets/flow: spent without a verdict "
                     f"{lim['dpi_budget_exhausted_flows']:,} flows")
        lines.append(f"        DPI reassembly {lim['dpi_reasm_bytes']:,} B/direction in "
                     f"{lim['dpi_reasm_flows']:,} flows at once: prefix full {lim['dpi_reasm_truncated']:,}, "
                     f"packets with no buffer free "
                     f"{lim['dpi_reasm_no_buffer_packets']:,}")
    else:
        lines.append("        DPI off (--dpi-budget 0)")
    return lines


def format_summary(res) -> str:
    c = res.counters
    lines = [
        f"replayed {c.get('files', 0)} file(s): {res.packets:,} packets, {res.flows:,} flows, "
        f"{res.records:,} records, {_size(res.bytes_ip)} of IP traffic -> {res.output}",
        f"  {res.elapsed_s:.2f} s, {_rate(res.packets, res.elapsed_s)}",
    ]
    nm = c.get("not_metered_by_reason", {})
    if nm:
        parts = ", ".join(f"{k} {v:,}" for k, v in sorted(nm.items(), key=lambda kv: -kv[1]))
        lines.append(f"  packets not metered: {c.get('packets_not_metered', 0):,} ({parts})")
    reasons = {k: v for k, v in c.get("parse_reasons", {}).items() if k != "ok"}
    metered_with_note = {k: v for k, v in reasons.items() if v != nm.get(k, 0)}
    if metered_with_note:
        parts = ", ".join(f"{k} {v - nm.get(k, 0):,}" for k, v in metered_with_note.items())
        lines.append(f"  metered with a parse note: {parts}")
    ends = c.get("records_by_end_reason", {})
    if ends:
        lines.append("  records by end reason: " + ", ".join(f"{k} {v:,}" for k, v in ends.items()))
    lim = c.get("limits")
    if lim:
        lines += ["  " + x for x in format_limits(lim)]
    oc = c.get("output") or {}   # issue 7
    if oc.get("limit_reached"):
        lines.append(f"  output size limit reached (--max-output-size {oc['max_bytes']:,} bytes): "
                     f"{oc['records_not_written']:,} records not written, {oc['records_written']:,} written "
                     f"({oc['bytes_written']:,} bytes)")
    rc = c.get("roce", {})   # RoCE meter (issue 4)
    if rc.get("pairs_proven_by_cm") or rc.get("pairs_inferred_from_psn"):
        lines.append(f"  RoCE connections paired: {rc.get('pairs_proven_by_cm', 0):,} by RDMA CM, "
                     f"{rc.get('pairs_inferred_from_psn', 0):,} from PSNs")
    full = {k: v for k, v in rc.items() if v and k in ("alias_table_full", "waiting_table_full",
                                                       "cm_req_overwritten")}
    if full:
        lines.append("  RoCE pairing tables full: " + ", ".join(f"{k} {v:,}" for k, v in full.items()))
    rd = c.get("reader", {})
    extra = {k: v for k, v in rd.items() if v and k in READER_ANOMALIES}
    if extra:
        lines.append("  reader: " + ", ".join(f"{k} {v:,}" for k, v in sorted(extra.items())))
    if res.top_flows:
        lines.append("  top flows by bytes:")
        for b, p, f in res.top_flows:
            lines.append(f"    {_size(b):>10}  {p:>9,} pkts  {f}")
    if res.top_hosts:
        lines.append("  top talkers (bytes sent + received):")
        for b, h in res.top_hosts:
            lines.append(f"    {_size(b):>10}  {h}")
        if res.hosts_capped:
            lines.append("    (more distinct hosts than the summary keeps: hosts seen after the first "
                         f"{_top_hosts_cap():,} were not ranked)")
    if res.errors:
        lines.append(f"  {len(res.errors)} input error(s), see stderr; everything read before them was written")
    return "\n".join(lines)


def _top_hosts_cap() -> int:
    from dpi.replay import TOP_HOSTS_CAP
    return TOP_HOSTS_CAP


INSPECT_EPILOG = """
\b
Examples:
  flowtap inspect flows.parquet
  flowtap inspect flows.arrow --top 20
  flowtap inspect flows.arrows --json
  flowtap inspect --recover .flows.parquet.partial-4242 -o flows.parquet   # after a killed run

\b
An Arrow IPC stream or file is reported "complete" (end-of-stream marker / footer present) or "truncated at
byte N after K batches". --recover writes every complete batch of PATH (a temporary file left by a killed
run or a full disk, or a stream cut short) to a sealed file; the run counters are the snapshot of the last
complete batch. Exit codes: 0 ok, 3 not a readable flow file (or nothing to recover), 4 output error,
6 output file system full.
"""


@main.command(epilog=INSPECT_EPILOG)
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--top", default=10, show_default=True, help="Number of top flows (by bytes) to list.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--recover", "recover", is_flag=True,
              help="Salvage the complete batches of PATH into the file given with -o.")
@click.option("-o", "--output", default=None, help="With --recover: the file to write (.parquet, .arrow, .arrows).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "ipc_file", "ipc_stream"]),
              help="With --recover: output format, when the extension does not say.")
def inspect(path, top, as_json, recover, output, fmt):
    """Show a flow file's schema, metadata, row count, run counters, top flows, and whether it is complete;
    or, with --recover, salvage what a killed run left."""
    from dpi.inspect import InspectError, inspect_file

    if recover:
        from dpi.inspect import recover as do_recover
        from dpi.writer import OutputError
        if not output:
            raise click.UsageError("--recover needs -o FILE")
        try:
            r = do_recover(path, output, fmt)
        except InspectError as e:
            _err(str(e))
            sys.exit(EXIT_INPUT)
        except OutputError as e:
            _err(str(e))
            sys.exit(_output_exit(e))
        if as_json:
            click.echo(json.dumps(r, indent=2, default=str))
        else:
            click.echo(f"recovered {r['rows']:,} records in {r['batches']} batches from {path} "
                       f"({r['bytes_used']:,} of {r['source_bytes']:,} bytes; {r['bytes_dropped']:,} bytes of an "
                       f"incomplete batch dropped; source {'complete' if r['source_complete'] else 'truncated'}) "
                       f"-> {output}")
        return
    if output:
        raise click.UsageError("-o is only for --recover")
    try:
        info = inspect_file(path, top)
    except InspectError as e:
        _err(str(e))
        sys.exit(EXIT_INPUT)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    from dpi.inspect import format_info
    click.echo(format_info(info))


CAPTURE_EPILOG = """
\b
Examples:
  sudo flowtap capture -i eth0 -o flows.arrows                    # tc ingress+egress, until Ctrl-C
  sudo flowtap capture -i eth0 -i eth1 --duration 60 -o flows.parquet
  sudo flowtap capture -i span0 --mode xdp -o mirror.arrows        # mirror port: XDP ingress
  flowtap doctor                                                   # what is missing, and the fix

\b
tc mode adds flowtap's filters to the clsact qdisc (created when absent, removed on exit only when flowtap
created it and nothing else is left); xdp mode refuses an interface that already has an XDP program.
Everything flowtap attached is detached on exit, on Ctrl-C, on SIGTERM and on error. Idle flows are
written every --flush-interval seconds; every batch carries the coverage counters (flowtap.counters: live).
Exit codes: 0 ok (also after Ctrl-C/SIGTERM: the output is complete), 2 usage, 4 output error, 5 the probe
could not be loaded or attached (see `flowtap doctor`), 6 output file system full.
"""
EXIT_LIVE = 5


@main.command(epilog=CAPTURE_EPILOG)
@click.option("-i", "--interface", "ifaces", multiple=True, required=True, metavar="IFACE",
              help="Interface to capture on (repeat for several).")
@click.option("--mode", type=click.Choice(["tc", "xdp"]), default="tc", show_default=True,
              help="tc: clsact ingress+egress (hosts); xdp: ingress only (mirror ports).")
@click.option("--xdp-mode", type=click.Choice(["auto", "native", "generic"]), default="auto", show_default=True,
              help="XDP attach mode; auto tries native (driver) first, then generic.")
@click.option("--duration", type=float, default=None, metavar="S", help="Stop after S seconds.")
@click.option("-o", "--output", required=True, help="Flow-record file (.parquet, .arrow, .arrows, -).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "ipc_file", "ipc_stream"]),
              help="Output format, when the extension does not say.")
@click.option("--idle-timeout", default=120.0, show_default=True, type=float, metavar="S")
@click.option("--active-timeout", default=1800.0, show_default=True, type=float, metavar="S")
@click.option("--max-flows", default=1_000_000, show_default=True, type=int, metavar="N")
@click.option("--flush-interval", default=10.0, show_default=True, type=float, metavar="S",
              help="Write idle-expired flows and a coverage snapshot every S seconds.")
@click.option("--snap-len", default=128, show_default=True, type=int, metavar="B",
              help="Payload bytes sent with each packet of a flow DPI has not classified (0: none).")
@click.option("--ring-mb", default=16, show_default=True, type=int, metavar="MB",
              help="BPF ring buffer size (a power of two).")
@click.option("--kernel-flows", default=262_144, show_default=True, type=int, metavar="N",
              help="Capacity of the kernel's exact per-flow counters (flow_stats).")
@click.option("--observer", default="", metavar="NAME", help="observer_host value (default: host name).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--dpi-budget", default=16, show_default=True, type=click.IntRange(0, 255), metavar="N",
              help="Payload packets per flow shown to the dissectors (each at most --snap-len bytes); "
                   "0: off (no DPI columns but app_proto).")
@click.option("--dpi-reasm-flows", default=4096, show_default=True, type=click.IntRange(0, 1 << 24),
              metavar="N",
              help="Flows whose first payload bytes are reassembled at once (8 kB each); 0: none.")
@output_options  # issue 7
def capture(ifaces, mode, xdp_mode, duration, output, fmt, idle_timeout, active_timeout, max_flows,
            flush_interval, snap_len, ring_mb, kernel_flows, observer, as_json, dpi_budget, dpi_reasm_flows,
            max_output_size, parquet_journal):
    """Capture live traffic with eBPF (BCC) into flow records, metered like `replay`."""
    from dpi.engine import EngineConfig
    from dpi.writer import OutputError
    from probe.live import BpfConfig, LiveError, run_capture

    econf = EngineConfig(idle_timeout_s=idle_timeout, active_timeout_s=active_timeout, max_flows=max_flows,
                         observer_host=observer, dpi_budget=dpi_budget, dpi_reasm_flows=dpi_reasm_flows)
    bconf = BpfConfig(snap_len=snap_len, ring_bytes=ring_mb << 20, flow_map_entries=kernel_flows)
    try:
        econf.validate()
        bconf.validate()
    except ValueError as e:
        raise click.UsageError(str(e))
    if flush_interval <= 0 or (duration is not None and duration <= 0):
        raise click.UsageError("--flush-interval and --duration must be positive")
    try:
        res = run_capture(list(ifaces), mode, output, econf, bconf, duration_s=duration,
                          flush_interval_s=flush_interval, fmt=fmt, xdp_mode=xdp_mode,
                          on_start=lambda line: click.echo(line, err=True),
                          on_note=lambda line: _err(line), max_output_bytes=max_output_size,
                          parquet_journal=parquet_journal)
    except LiveError as e:
        _err(str(e))
        sys.exit(EXIT_LIVE)
    except OutputError as e:
        _err(str(e))
        sys.exit(_output_exit(e))
    for e in res.errors:
        _err(e)
    live = res.counters.get("live", {})
    out = sys.stderr if output == "-" else sys.stdout
    if as_json:
        click.echo(json.dumps({"output": res.output, "attached": res.attached, "elapsed_s": round(res.elapsed_s, 3),
                               "stopped_by": res.stopped_by, "counters": res.counters}, indent=2), file=out)
    else:
        seen = live.get("meters_packets_seen", 0)
        kern = live.get("kernel_packets", 0)
        pct = 100.0 * seen / kern if kern else 100.0
        lines = [
            f"captured {res.elapsed_s:.1f} s on {', '.join(res.attached)} (stopped by {res.stopped_by}): "
            f"{res.flows:,} flows, {res.records:,} records -> {res.output}",
            f"  coverage: kernel counted {kern:,} packets, meters saw {seen:,} ({pct:.2f}%); "
            f"ring-full drops {live.get('ring_full_drops', 0):,}, kernel flow map full "
            f"{live.get('flow_map_full', 0):,}",
        ]
        reasons = {k: v for k, v in live.get("kernel_parse_reasons", {}).items() if k != "ok"}
        if reasons:
            lines.append("  parse exits: " + ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items())))
        if res.counters.get("limits"):
            lines += ["  " + x for x in format_limits(res.counters["limits"])]
            cut = (live.get("ring") or {}).get("snippets_cut", 0)
            lines.append(f"        snap length {snap_len} B of payload per snippet: snippets cut by it {cut:,}")
        oc = res.counters.get("output") or {}   # issue 7
        if oc.get("limit_reached"):
            lines.append(f"  output size limit reached (--max-output-size {oc['max_bytes']:,} bytes): "
                         f"{oc['records_not_written']:,} records not written")
        click.echo("\n".join(lines), file=out)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(as_json):
    """Check that this machine can run `flowtap capture`; print the fix for each problem."""
    from probe import doctor as doc

    if as_json:
        from dataclasses import asdict
        click.echo(json.dumps([asdict(c) for c in doc.checks()], indent=2))
        return
    text, ok = doc.run()
    click.echo(doc.kernel_summary())
    click.echo(text)
    sys.exit(0 if ok else 1)


@main.command("dump-bpf", hidden=True)
@click.option("--snap-len", default=128, show_default=True, type=int)
@click.option("--ring-mb", default=16, show_default=True, type=int)
@click.option("--kernel-flows", default=262_144, show_default=True, type=int)
def dump_bpf(snap_len, ring_mb, kernel_flows):
    """Print the exact BPF C source and the BCC flags `capture` would use."""
    from probe.live import BpfConfig, dump_bpf as dump

    conf = BpfConfig(snap_len=snap_len, ring_bytes=ring_mb << 20, flow_map_entries=kernel_flows)
    try:
        conf.validate()
    except ValueError as e:
        raise click.UsageError(str(e))
    click.echo(dump(conf))


# ---- RDMA NIC port counters (issue 4): probe/nic_counters.py ----
NIC_COUNTERS_EPILOG = """
\b
Examples:
  flowtap nic-counters --interval 1 --count 60 -o ports.parquet
  flowtap nic-counters --interval 10 -o ports.arrows --device mlx5_0     # until Ctrl-C
  flowtap nic-counters --sysfs-root /tmp/fake-sys --count 2 --interval 0 -o ports.arrow

\b
One row per port, counter and sample: timestamp, device, port, netdev, source (counters, hw_counters,
netdev), the kernel's counter name (out_of_sequence, packet_seq_err, np_cnp_sent, rp_cnp_handled, ...),
value, delta since the previous sample (null in the first sample of a port) and reset (the value went
down). Output format from the extension, as for replay. Exit codes: 0 ok, 2 usage, 3 no RDMA device,
4 output error, 130 interrupted (output still sealed).
"""


@main.command("nic-counters", epilog=NIC_COUNTERS_EPILOG)
@click.option("-o", "--output", required=True, help="Table to write (.parquet, .arrow, .arrows, -).")
@click.option("--interval", default=1.0, show_default=True, type=float, metavar="S",
              help="Seconds between samples.")
@click.option("--count", default=0, show_default=True, type=int, metavar="N",
              help="Samples to take, the first being the baseline; 0 runs until Ctrl-C.")
@click.option("--sysfs-root", default="/sys", show_default=True, metavar="DIR",
              help="Where sysfs is mounted (a copy of its layout works too).")
@click.option("--device", "devices", multiple=True, metavar="DEV", help="Only this RDMA device (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "ipc_file", "ipc_stream"]),
              help="Output format, when the extension does not say.")
def nic_counters(output, interval, count, sysfs_root, devices, fmt):
    """Sample RDMA NIC port counters (/sys/class/infiniband/*/ports/*/{counters,hw_counters} and the netdev
    behind each port) into the port_counters table."""
    from dpi.writer import OutputError
    from probe.nic_counters import NoRdmaDevices, PortCounterSampler, run

    if interval < 0 or count < 0:
        raise click.UsageError("--interval and --count must not be negative")
    ports = PortCounterSampler(sysfs_root, list(devices) or None).ports()
    if ports:
        names = ", ".join(f"{p.device}/{p.port}" + (f" ({p.netdev})" if p.netdev else "") for p in ports)
        _err(f"sampling {len(ports)} RDMA port(s) [{names}] every {interval:g} s, "
             f"{f'{count} samples' if count else 'until Ctrl-C'} -> {output}")
    try:
        res = run(output, interval, count, sysfs_root, list(devices) or None, fmt)
    except NoRdmaDevices as e:
        _err(str(e))
        sys.exit(EXIT_INPUT)
    except OutputError as e:
        _err(str(e))
        sys.exit(EXIT_OUTPUT)
    except KeyboardInterrupt:
        _err(f"interrupted; samples taken so far were written to {output}")
        sys.exit(EXIT_INTERRUPTED)
    for line in res["log"]:
        _err(line)
    _err(f"{res['samples']} samples, {res['rows']:,} rows, {res['counter_resets']} counter resets, "
         f"{res['ports_vanished']} ports vanished -> {output}")
# ---- end RDMA NIC port counters ----
# ---- DPI (issue 5): rule files ----------------------------------------------------------------------------

RULES_EPILOG = """
\b
Examples:
  flowtap rules check                     # the shipped rules (rules/*.toml)
  flowtap rules check ./my-rules          # yours on top of them: errors, overrides, conflicts
  flowtap rules test trace.pcap --rules ./my-rules
  flowtap rules list

\b
The format is described in rules/README.md.
"""


@main.group(epilog=RULES_EPILOG)
def rules():
    """Check, list and try application-classification rules (TOML)."""


@rules.command("check", epilog=RULES_EPILOG)
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--no-shipped", is_flag=True, help="Check only PATHS, without the shipped rules.")
def rules_check(paths, no_shipped):
    """Validate rule files: report every error with file and line, overrides and conflicts.

    Exit status 0 when the rules are usable, 1 when any file has an error."""
    from dpi.rules import load_rules

    rs = load_rules(paths, shipped=not no_shipped)
    for e in rs.errors:
        click.echo(f"error: {e}")
    for o in rs.overrides:
        click.echo(f"override: {o}")
    for c in rs.conflicts:
        click.echo(f"conflict: {c}")
    ok = not rs.errors
    click.echo(f"{len(rs.files)} file(s), {len(rs.rules)} rule(s), {len(rs.errors)} error(s), "
               f"{len(rs.overrides)} override(s), {len(rs.conflicts)} conflict(s)"
               + ("" if ok else ": the rules cannot be used"))
    sys.exit(0 if ok else 1)


@rules.command("list", epilog=RULES_EPILOG)
@click.argument("paths", nargs=-1, type=click.Path())
def rules_list(paths):
    """List the rules in precedence order (first match wins), with file and line."""
    from dpi.rules import CONFIDENCE, load_rules

    rs = load_rules(paths)
    for e in rs.errors:
        _err(str(e))
    if rs.errors:
        sys.exit(1)
    for r in rs.rules:
        click.echo(f"{r.priority:>5}  {r.id:<28} {r.app:<20} {r.category:<13} {CONFIDENCE[r.confidence]:<8} "
                   f"{r.where}")


@rules.command("test", epilog=RULES_EPILOG)
@click.argument("capture", type=click.Path(exists=True, dir_okay=False))
@click.option("--rules", "extra", multiple=True, type=click.Path(exists=True), metavar="DIR",
              help="Extra rule files or directories (repeatable).")
@click.option("--dpi-budget", default=16, show_default=True, type=click.IntRange(1, 255), metavar="N")
@click.option("--all", "show_all", is_flag=True, help="Also list flows nothing recognised.")
def rules_test(capture, extra, dpi_budget, show_all):
    """Show, per flow of CAPTURE, the verdict and the rule or dissector that decided."""
    from dpi.capture import CaptureError, CaptureReader
    from dpi.engine import Engine, EngineConfig, RulesError
    from dpi.replay import PROTO_NAMES, endpoint

    try:
        eng = Engine(EngineConfig(rules=list(extra), dpi_budget=dpi_budget, observer_host="-"))
    except RulesError as e:
        for msg in e.errors:
            _err(msg)
        sys.exit(EXIT_USAGE)
    batches = []
    status = 0
    try:
        with CaptureReader(capture) as rd:
            for recs, data in rd:
                batches += list(eng.add(recs, data))
    except CaptureError as e:
        _err(str(e))
        status = EXIT_INPUT
    batches += list(eng.flush())
    cols = ["flow_id", "protocol", "src_ip", "src_port", "dst_ip", "dst_port", "app_proto", "app_confidence",
            "app_rule", "server_name", "dpi_packets"]
    shown = total = 0
    for b in batches:
        for r in b.select(cols).to_pylist():
            total += 1
            if r["app_proto"] is None and not show_all:
                continue
            shown += 1
            flow = (f"{endpoint(r['src_ip'], r['src_port'])} -> {endpoint(r['dst_ip'], r['dst_port'])} "
                    f"{PROTO_NAMES.get(r['protocol'], r['protocol'])}")
            click.echo(f"{r['flow_id']:>7}  {flow:<52} {r['app_proto'] or '-':<16} {r['app_confidence'] or '-':<8} "
                       f"{r['app_rule'] or '-':<28} {r['server_name'] or ''}")
    click.echo(f"{shown} of {total} flows shown ({total - shown} unrecognised"
               + (")" if show_all else "; --all lists them)"), err=True)
    sys.exit(status)


@main.command("make-sample", hidden=True)
@click.argument("output", type=click.Path(dir_okay=False))
@click.option("--truth", type=click.Path(dir_okay=False), help="Also write the ground-truth JSON.")
def make_sample(output, truth):
    """Regenerate the bundled sample capture (needs scapy)."""
    from probe import samplegen

    argv = [output] + (["--truth", truth] if truth else [])
    sys.exit(samplegen.main(argv))


def entry() -> None:
    """The flowtap console script (pyproject.toml): main() in a process of its own."""
    global _FAST_EXIT
    _FAST_EXIT = True
    main()


if __name__ == "__main__":
    entry()
