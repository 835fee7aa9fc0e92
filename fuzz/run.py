"""Run fuzz targets one after the other, each for a time budget, and print executions, coverage and findings.

    python fuzz/run.py [--seconds 60] [--dpi-seconds S] [--only PATTERN] [--results FILE]
    python fuzz/run.py --table        the results so far (all runs summed per target) as a Markdown table

Each target runs as its own process (fuzz/fuzz.py) under atheris with asan_with_fuzzer.so preloaded, on
fuzz/corpus/work/<target> (what it learned, kept between runs) and fuzz/corpus/seeds/<target> (fuzz/seeds.py).
A crash, an uncaught exception, a timeout (10 s per input) or an out-of-memory stops that target and leaves
the input in fuzz/findings/<target>/; turn it into a case under tests/fuzz_cases/ (see docs/fuzzing.md).
Exit status 1 when any target had a finding.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "fuzz"


def targets_list() -> list[str]:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(FUZZ))
    import targets
    return targets.all_targets()


def run_one(target: str, seconds: int, env: dict) -> dict:
    work = FUZZ / "corpus" / "work" / target
    seeds = FUZZ / "corpus" / "seeds" / target
    findings = FUZZ / "findings" / target
    for d in (work, seeds, findings):
        d.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(findings))
    cmd = [sys.executable, str(FUZZ / "fuzz.py"), target, f"-max_total_time={seconds}", "-print_final_stats=1",
           "-timeout=10", "-rss_limit_mb=3072", f"-artifact_prefix={findings}/", str(work), str(seeds)]
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, errors="replace")
    wall = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    log = p.stderr + p.stdout
    (FUZZ / "build").mkdir(exist_ok=True)
    (FUZZ / "build" / f"log-{target}.txt").write_text(log[-200000:])
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", log)
    inited = re.search(r"INITED cov: (\d+)", log)
    new = sorted(set(os.listdir(findings)) - before)
    return {"target": target, "executions": int(execs[-1]) if execs else None, "seconds": round(wall, 1),
            "cpu_seconds": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 1),
            "seed_edges": int(inited.group(1)) if inited else None,
            "edges": int(cov[-1][0]) if cov else None, "features": int(cov[-1][1]) if cov else None,
            "corpus": len(os.listdir(work)), "findings": [str(findings / f) for f in new],
            "exit": p.returncode}


def table(results: str) -> None:
    """Markdown table of results.jsonl: executions, wall and CPU seconds summed over the runs of a target;
    edges at the start and end of its last run (start only where the log kept it); findings of all runs."""
    rows: dict[str, list[dict]] = {}
    with open(results) as f:
        for line in f:
            r = json.loads(line)
            rows.setdefault(r["target"], []).append(r)
    print("| target | executions | seconds (wall) | CPU seconds | edges (last run: start -> end) | findings |")
    print("|---|---:|---:|---:|---:|---|")
    tot = [0, 0.0, 0.0]
    for t, rs in rows.items():
        ex = sum(r["executions"] or 0 for r in rs)
        wall = sum(r["seconds"] for r in rs)
        cpu = sum(r["cpu_seconds"] for r in rs)
        tot[0] += ex
        tot[1] += wall
        tot[2] += cpu
        seeds = next((r["seed_edges"] for r in reversed(rs) if r.get("seed_edges")), None)
        edges = f"{seeds} -> {rs[-1]['edges']}" if seeds else f"{rs[-1]['edges']}"
        found = [os.path.basename(x) for r in rs for x in r["findings"]]
        print(f"| {t} | {ex:,} | {wall:.0f} | {cpu:.0f} | {edges} | {', '.join(found) or 'none'} |")
    print(f"| **total ({len(rows)} targets)** | **{tot[0]:,}** | {tot[1]:.0f} | {tot[2]:.0f} | | |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 60)),
                    help="budget per target (FUZZ_SECONDS, default 60)")
    ap.add_argument("--dpi-seconds", type=int, default=None, help="budget per DPI dissector (default: --seconds)")
    ap.add_argument("--only", default="*", help="glob over target names, e.g. 'dpi-udp-*'")
    ap.add_argument("--results", default=str(FUZZ / "build" / "results.jsonl"), help="JSON lines appended here")
    ap.add_argument("--table", action="store_true", help="print the results so far as a Markdown table")
    a = ap.parse_args()
    if a.table:
        table(a.results)
        return 0
    import atheris
    env = dict(os.environ)
    env["LD_PRELOAD"] = os.path.join(atheris.path(), "asan_with_fuzzer.so")
    # CPython's own allocations are not freed at exit: leak reports would be noise
    env["ASAN_OPTIONS"] = "detect_leaks=0:allocator_may_return_null=1:" + env.get("ASAN_OPTIONS", "")
    total_execs, any_finding = 0, False
    names = [t for t in targets_list() if fnmatch.fnmatch(t, a.only)]
    print(f"{'target':28} {'executions':>11} {'seconds':>8} {'edges':>6} {'corpus':>6}  findings", flush=True)
    for t in names:
        secs = a.dpi_seconds if (a.dpi_seconds and t.startswith("dpi-")) else a.seconds
        r = run_one(t, secs, env)
        with open(a.results, "a") as f:
            f.write(json.dumps(r) + "\n")
        total_execs += r["executions"] or 0
        any_finding |= bool(r["findings"]) or r["exit"] != 0
        status = ", ".join(r["findings"]) or ("none" if r["exit"] == 0 else f"exit {r['exit']} (see fuzz/build/log-{t}.txt)")
        print(f"{t:28} {r['executions'] or 0:>11} {r['seconds']:>8} {r['edges'] or 0:>6} {r['corpus']:>6}  {status}",
              flush=True)
    print(f"total: {len(names)} targets, {total_execs} executions, "
          f"{'FINDINGS' if any_finding else 'no findings'}")
    return 1 if any_finding else 0


if __name__ == "__main__":
    sys.exit(main())
