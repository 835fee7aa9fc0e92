"""The DPI registry and every dissector under AddressSanitizer and UBSan (tests/dpi_fuzz.c): random payloads,
and real first payloads of the nDPI captures truncated and bit-flipped. A read outside a payload, undefined
behaviour or a leak fails the test."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NDPI = Path(os.environ.get("FLOWTAP_SHARED_DATA", ROOT / ".." / "shared" / "data")) / "ndpi" / "pcap"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        pytest.skip("no C compiler")
    exe = tmp_path_factory.mktemp("fuzz") / "dpi_fuzz"
    r = subprocess.run([cc, "-O1", "-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                        "-I", str(ROOT / "ext"), "-std=gnu11", str(ROOT / "tests" / "dpi_fuzz.c"), "-o", str(exe)],
                       capture_output=True, text=True)
    if r.returncode != 0 and "sanitize" in r.stderr:
        pytest.skip(f"the compiler cannot build with sanitizers: {r.stderr[:200]}")
    assert r.returncode == 0, r.stderr
    return exe


def run(args):
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.startswith("ok"), (r.stdout, r.stderr[-3000:])
    return r.stdout


@pytest.mark.parametrize("seed", [1, 2])
def test_random_payloads(harness, seed):
    run([str(harness), "random", "150000", str(seed)])


def test_real_payloads_truncated_and_flipped(harness, tmp_path):
    if not NDPI.is_dir():
        pytest.skip(f"nDPI captures not found under {NDPI}")
    from dpi.capture import CaptureError, CaptureReader
    corpus = tmp_path / "corpus.bin"
    seen = {}
    with open(corpus, "wb") as out:
        for pcap in sorted(NDPI.iterdir()):
            try:
                with CaptureReader(str(pcap)) as rd:
                    for recs, data in rd:
                        for r in recs:
                            if r["proto"] not in (6, 17) or not r["payload_cap"] or not (r["flags"] & 2):
                                continue
                            k = (bytes(r["src_addr"]), bytes(r["dst_addr"]), int(r["sport"]), int(r["dport"]))
                            if seen.get(k, 0) >= 2:
                                continue
                            seen[k] = seen.get(k, 0) + 1
                            off = int(r["frame_off"]) + int(r["payload_off"])
                            pl = bytes(data[off:off + int(r["payload_cap"])])
                            out.write(struct.pack("<BHHH", int(r["proto"]), int(r["sport"]), int(r["dport"]),
                                                  len(pl)) + pl)
            except CaptureError:
                continue
    run([str(harness), "corpus", str(corpus), "3", "7"])
