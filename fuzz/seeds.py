"""Seed corpora for every fuzz target, from the nDPI captures (../shared/data/ndpi/pcap, or
$FLOWTAP_SHARED_DATA/ndpi/pcap), written to fuzz/corpus/seeds/<target>/ (git-ignored).

  parser  up to 3 frames per distinct parse outcome (link type, IP version, protocol, tunnel, VLAN/MPLS
          depth, reason, TCP options, flags), at most 800
  reader  the small captures whole (up to 16 KiB) and the first 4 KiB of larger ones, pcap and pcapng
  reader-compressed  the same heads (up to 4 KiB), each behind a random control byte and cut point
  dpi-*   the first two payloads of each direction of each flow that the dissector does not exclude
          (it detects them or waits for more), at most 40 per dissector
  e2e     the first 24 frames of small captures, in the e2e layout

Runs with the normal build (no instrumentation needed):  python fuzz/seeds.py
"""
from __future__ import annotations

import hashlib
import os
import random
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "fuzz"))

import targets  # noqa: E402
from dpi.capture import CaptureError, CaptureReader  # noqa: E402

NDPI = Path(os.environ.get("FLOWTAP_SHARED_DATA", ROOT / ".." / "shared" / "data")) / "ndpi" / "pcap"
OUT = ROOT / "fuzz" / "corpus" / "seeds"

PARSER_MAX = 800
PER_KEY = 3  # frames kept per parse outcome (the first ones of different files)
DPI_PER_DISSECTOR = 40
FLOWS_PER_FILE = 40
E2E_MAX = 120


def put(target: str, data: bytes) -> None:
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def main() -> int:
    if not NDPI.is_dir():
        print(f"nDPI captures not found under {NDPI}", file=sys.stderr)
        return 2
    rng = random.Random(7)
    files = sorted(p for p in NDPI.iterdir() if p.suffix in (".pcap", ".pcapng", ".cap"))
    parser_keys = set()
    dpi_seeds = {f"dpi-{p}-{n}": set() for p, n in targets.dpi_names()}
    tables = {6: [n for p, n in targets.dpi_names() if p == "tcp"],
              17: [n for p, n in targets.dpi_names() if p == "udp"]}
    n_reader = n_e2e = 0
    for path in files:
        raw = path.read_bytes()
        # reader: whole small files, the head of larger ones; a random split point in front
        put("reader", struct.pack(">H", rng.randrange(65536)) + raw[:16384 if len(raw) <= 16384 else 4096])
        n_reader += 1
        put("reader-compressed", bytes([rng.randrange(256)]) + struct.pack(">H", rng.randrange(65536)) + raw[:4096])
        frames = []
        flows = {}
        try:
            with CaptureReader(str(path)) as rd:
                for recs, data in rd:
                    for r in recs:
                        off, cap = int(r["frame_off"]), int(r["cap_len"])
                        frame = bytes(data[off:off + cap])
                        lt = int(r["linktype"])
                        if len(frames) < 24:
                            frames.append((lt, frame))
                        key = (lt, int(r["ip_version"]), int(r["proto"]), int(r["tunnel_type"]),
                               int(r["vlan_depth"]), int(r["mpls_depth"]), int(r["reason"]),
                               int(r["tcp_opt_present"]), int(r["flags"]), len(frames) % PER_KEY)
                        if key not in parser_keys and len(parser_keys) < PARSER_MAX and lt in targets.LINKTYPES:
                            parser_keys.add(key)
                            put("parser", bytes([targets.LINKTYPES.index(lt)]) + frame)
                        proto = int(r["proto"])
                        if proto not in (6, 17) or not int(r["payload_cap"]):
                            continue
                        a = (bytes(r["src_addr"]), int(r["sport"]))
                        b = (bytes(r["dst_addr"]), int(r["dport"]))
                        fk = (proto,) + tuple(sorted([a, b]))
                        if fk not in flows:
                            if len(flows) >= FLOWS_PER_FILE:
                                continue
                            flows[fk] = {"client": a, "n": [0, 0]}
                        fl = flows[fk]
                        d = 0 if a == fl["client"] else 1
                        if fl["n"][d] >= 2:
                            continue
                        fl["n"][d] += 1
                        po = off + int(r["payload_off"])
                        payload = bytes(data[po:po + int(r["payload_cap"])])
                        ports = (fl["client"][1], b[1] if d == 0 else a[1])
                        for name in tables[proto]:
                            seeds = dpi_seeds[f"dpi-{'tcp' if proto == 6 else 'udp'}-{name}"]
                            if len(seeds) >= DPI_PER_DISSECTOR:
                                continue
                            pr = "tcp" if proto == 6 else "udp"
                            answers, _, _ = targets.dpi_dissect(pr, name, [(payload, d)], ports[0], ports[1])
                            if answers and answers[0] != 0:
                                seeds.add(bytes([d << 3]) + payload)
        except CaptureError:
            pass
        if frames and n_e2e < E2E_MAX and len(raw) <= 65536:
            lt = frames[0][0]
            if lt in targets.LINKTYPES:
                body = b"".join(struct.pack(">H", len(f)) + f for l, f in frames if l == lt and len(f) < 2048)
                put("e2e", bytes([targets.LINKTYPES.index(lt)]) + body)
                n_e2e += 1
    for target, seeds in dpi_seeds.items():
        (OUT / target).mkdir(parents=True, exist_ok=True)
        for s in seeds:
            put(target, s)
    print(f"seeds: parser {len(parser_keys)}, reader {n_reader} (and as many reader-compressed), e2e {n_e2e}, dpi "
          + ", ".join(f"{t[4:]} {len(s)}" for t, s in dpi_seeds.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
