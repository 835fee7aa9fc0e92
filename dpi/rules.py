"""Rule files: TOML in (rules/README.md describes the format), compact C tables for the flow table out.

    rs = load_rules(["my-rules/"])          # shipped rules (rules/ of this checkout) + the user's
    rs.errors                                # [RuleError], each "FILE:LINE: message"; empty when valid
    rs.conflicts, rs.overrides               # notes for `flowtap rules check`
    table.set_rules(rs.compile())            # dpi._flowtable.FlowTable

Parsing and checking happen once, at start-up, in Python; matching happens in C (ext/ft_dpi.h), once per
flow (names, ALPN, addresses, ports) or per inspected packet (payload patterns). A malformed file is never
half-loaded: every problem is reported with its file and line, and the caller refuses to run.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

from ._flowtable import DPI_RULE_BASE, dpi_dissectors, dpi_labels

# The checkout's rules/ (editable install), else the copy a wheel carries (setup.py, build_py_with_data).
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "rules"
if not SHIPPED_DIR.is_dir():
    SHIPPED_DIR = Path(__file__).resolve().parent / "_shipped" / "rules"

# Categories a rule (and a built-in label) may carry. A closed list catches typos in user files.
CATEGORIES = {
    "web": "web and generic TLS/QUIC traffic",
    "rpc": "remote procedure calls (gRPC, ONC RPC)",
    "dns": "name resolution (DNS, mDNS, LLMNR, NetBIOS names)",
    "kubernetes": "Kubernetes control plane: API server, kubelet, etcd, controllers",
    "ml": "distributed training and inference: NCCL/torch.distributed rendezvous, Ray, Triton",
    "hpc": "HPC schedulers and runtimes: Slurm, MPI",
    "rdma": "RDMA fabric: RoCEv2 data and its connection manager",
    "storage": "storage: NFS, SMB, iSCSI, NVMe/TCP, Ceph, Lustre, object stores",
    "database": "databases and caches",
    "messaging": "message brokers and queues",
    "monitoring": "metrics: Prometheus and exporters, StatsD, Datadog, Zabbix",
    "logging": "log shipping: syslog, Fluentd/Fluent Bit, Elasticsearch/Loki ingestion",
    "network": "network services: routing, DHCP, NTP, SNMP, discovery",
    "auth": "authentication and directories: Kerberos, LDAP, RADIUS",
    "remote-access": "remote shells and desktops",
    "mail": "mail",
    "file-transfer": "file transfer",
    "voip": "real-time media and its signalling",
    "vpn": "VPN and tunnels",
    "registry": "container images, model weights and packages downloaded from registries",
    "iot": "IoT messaging",
    "other": "anything else",
}

# Category of each built-in label (dissector verdicts).
BUILTIN_CATEGORY = {
    "tls": "web", "dtls": "web", "quic": "web", "http": "web", "http2": "web", "grpc": "rpc",
    "prometheus": "monitoring", "etcd": "kubernetes", "kube-apiserver": "kubernetes", "dns": "dns",
    "mdns": "dns", "llmnr": "dns", "ssh": "remote-access", "rocev2": "rdma", "rdma-cm": "rdma",
    "nvme-tcp": "storage", "iscsi": "storage", "nfs": "storage", "portmap": "rpc", "onc-rpc": "rpc",
    "smb": "storage", "netbios": "dns", "postgresql": "database", "mysql": "database", "redis": "database",
    "kafka": "messaging", "mqtt": "iot", "memcached": "database", "fluentd": "logging",
    "dogstatsd": "monitoring", "statsd": "monitoring", "bgp": "network", "ntp": "network", "dhcp": "network",
    "dhcpv6": "network", "snmp": "network", "syslog": "logging", "ldap": "auth", "kerberos": "auth",
    "stun": "voip", "ssdp": "network", "sip": "voip", "rtsp": "voip", "radius": "auth", "ftp": "file-transfer",
    "smtp": "mail", "pop3": "mail", "imap": "mail", "tds": "database", "mongodb": "database",
    "vnc": "remote-access", "rdp": "remote-access", "socks": "vpn", "openvpn": "vpn", "wireguard": "vpn",
    "ipsec": "vpn", "zabbix": "monitoring", "amqp": "messaging", "ceph": "storage", "tftp": "file-transfer",
    "telnet": "remote-access", "elasticsearch": "logging",
}

CONFIDENCE = ["", "payload", "name", "address", "port", "guess"]  # FT_CONF_* by index
CONF_PAYLOAD, CONF_NAME, CONF_ADDRESS, CONF_PORT = 1, 2, 3, 4

# FT_RULE_* condition bits (ext/ft_dpi.h)
F_PORT, F_CIDR, F_NAME, F_ALPN, F_DETECTED, F_PAYLOAD = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
PAT_MAX = 64           # FT_PAT_MAX
VIEW_MAX = 4096        # FT_DPI_REASM_BYTES: the longest payload prefix a pattern can see
NAME_MAX = 127         # FT_DPI_NAME_LEN - 1
PRIORITY_RANGE = (-1000, 1000)

RULE_KEYS = {"id", "app", "category", "priority", "description", "protocol", "ports", "side", "cidr",
             "server_name", "alpn", "detected", "payload"}
PAYLOAD_KEYS = {"direction", "offset", "within", "hex", "text"}
LABEL_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,47}$")
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
NAME_RE = re.compile(r"^[a-z0-9.*?_-]+$")


class RuleError(Exception):
    """A problem in a rule file: str() is "FILE:LINE: message" (LINE omitted when unknown)."""

    def __init__(self, path, line: int | None, message: str):
        super().__init__(path, line, message)
        self.path, self.line, self.message = str(path), line, message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"


@dataclass
class Pattern:
    direction: int          # 0 client, 1 server, 2 any
    offset: int
    within: int             # 0: fixed offset; else search window
    data: bytes
    care: bytes             # 1 compare, 0 wildcard


@dataclass
class Rule:
    id: str
    app: str
    category: str
    priority: int
    path: str
    line: int
    user: bool
    order: int
    description: str = ""
    l4: int = 0
    ports: list = field(default_factory=list)          # [(lo, hi)]
    side: int = 0                                      # 0 server, 1 either
    cidrs: list = field(default_factory=list)          # [(version, prefix_len, packed address)]
    server_names: list = field(default_factory=list)
    alpn: list = field(default_factory=list)
    detected: list = field(default_factory=list)
    payload: list = field(default_factory=list)        # [Pattern]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def confidence(self) -> int:
        if self.payload:
            return CONF_PAYLOAD
        if self.server_names or self.alpn:
            return CONF_NAME
        if self.cidrs:
            return CONF_ADDRESS
        if self.ports:
            return CONF_PORT
        return CONF_PAYLOAD  # only `detected`: renames a payload verdict

    @property
    def specificity(self) -> int:
        return sum(bool(x) for x in (self.l4, self.ports, self.cidrs, self.server_names, self.alpn,
                                     self.detected, self.payload))

    @property
    def flags(self) -> int:
        return ((F_PORT if self.ports else 0) | (F_CIDR if self.cidrs else 0) |
                (F_NAME if self.server_names else 0) | (F_ALPN if self.alpn else 0) |
                (F_DETECTED if self.detected else 0) | (F_PAYLOAD if self.payload else 0))


# ---- parsing -----------------------------------------------------------------------------------------

def _header_lines(text: str) -> tuple[list[int], list[list[int]]]:
    """Line numbers of the [[rule]] headers, in order, and of the [[rule.payload]] headers of each rule."""
    rules: list[int] = []
    pays: list[list[int]] = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if re.match(r"^\[\[\s*rule\s*\]\]", s):
            rules.append(n)
            pays.append([])
        elif re.match(r"^\[\[\s*rule\s*\.\s*payload\s*\]\]", s) and pays:
            pays[-1].append(n)
    return rules, pays


def _ports(v, err) -> list[tuple[int, int]]:
    if not isinstance(v, list) or not v:
        raise err("ports must be a non-empty list of port numbers or \"LOW-HIGH\" ranges")
    out = []
    for x in v:
        if isinstance(x, bool):
            raise err(f"bad port {x!r}")
        if isinstance(x, int):
            lo = hi = x
        elif isinstance(x, str) and re.fullmatch(r"\s*\d+\s*-\s*\d+\s*", x):
            lo, hi = (int(y) for y in x.split("-"))
        elif isinstance(x, str) and x.strip().isdigit():
            lo = hi = int(x)
        else:
            raise err(f"bad port {x!r}: a number or a \"LOW-HIGH\" range")
        if not (1 <= lo <= hi <= 65535):
            raise err(f"bad port range {x!r}: ports are 1..65535, low <= high")
        out.append((lo, hi))
    return out


def _cidrs(v, err) -> list[tuple[int, int, bytes]]:
    if not isinstance(v, list) or not v:
        raise err("cidr must be a non-empty list of addresses or prefixes (\"10.96.0.0/12\", \"fd00::/8\")")
    out = []
    for x in v:
        if not isinstance(x, str):
            raise err(f"bad cidr {x!r}")
        try:
            net = ipaddress.ip_network(x.strip(), strict=True)
        except ValueError as e:
            raise err(f"bad cidr {x!r}: {e}") from None
        out.append((net.version, net.prefixlen, net.network_address.packed))
    return out


def _strings(v, key, err, pattern=None, lower=False, maxlen=NAME_MAX) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise err(f"{key} must be a non-empty list of non-empty strings")
    out = []
    for x in v:
        y = x.strip().lower() if lower else x
        if len(y.encode()) > maxlen:
            raise err(f"{key} value longer than {maxlen} bytes: {x!r}")
        if pattern is not None and not pattern.match(y):
            raise err(f"bad {key} value {x!r}")
        out.append(y)
    return out


def _pattern(d, err) -> Pattern:
    if not isinstance(d, dict):
        raise err("payload entries are tables: [[rule.payload]] with hex or text")
    unknown = set(d) - PAYLOAD_KEYS
    if unknown:
        raise err(f"unknown payload key(s): {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(PAYLOAD_KEYS))})")
    direction = {"client": 0, "server": 1, "any": 2}.get(d.get("direction", "any"))
    if direction is None:
        raise err("payload direction must be \"client\", \"server\" or \"any\"")
    if ("hex" in d) == ("text" in d):
        raise err("a payload pattern has exactly one of hex = \"..\" or text = \"..\"")
    if "hex" in d:
        if not isinstance(d["hex"], str):
            raise err("hex must be a string such as \"16 03 ?? 01\"")
        toks = d["hex"].replace(",", " ").split()
        if len(toks) == 1 and len(toks[0]) > 2:
            t = toks[0]
            toks = [t[i:i + 2] for i in range(0, len(t), 2)]
        data, care = bytearray(), bytearray()
        for t in toks:
            if t == "??":
                data.append(0)
                care.append(0)
            elif re.fullmatch(r"[0-9a-fA-F]{2}", t):
                data.append(int(t, 16))
                care.append(1)
            else:
                raise err(f"bad hex byte {t!r} in payload pattern (two hex digits or ??)")
    else:
        if not isinstance(d["text"], str):
            raise err("text must be a string")
        data = bytearray(d["text"].encode())
        care = bytearray(b"\x01" * len(data))
    if not 1 <= len(data) <= PAT_MAX:
        raise err(f"a payload pattern is 1..{PAT_MAX} bytes, not {len(data)}")
    if not any(care):
        raise err("a payload pattern needs at least one byte that is not ??")
    offset, within = d.get("offset", 0), d.get("within", 0)
    for k, v in (("offset", offset), ("within", within)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise err(f"payload {k} must be a non-negative integer")
    if offset + within + len(data) > VIEW_MAX:
        raise err(f"payload offset + within + pattern length exceeds the {VIEW_MAX} bytes DPI keeps")
    return Pattern(direction, offset, within, bytes(data), bytes(care))


def _rule(d, path: str, line: int, pay_lines: list[int], user: bool, order: int, builtin: set[str]) -> Rule:
    def err(msg, at=None):
        return RuleError(path, at or line, msg)

    if not isinstance(d, dict):
        raise err("each [[rule]] must be a table")
    unknown = set(d) - RULE_KEYS
    if unknown:
        raise err(f"unknown key(s): {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(RULE_KEYS))})")
    for k in ("id", "app", "category"):
        if k not in d:
            raise err(f"missing {k}")
        if not isinstance(d[k], str):
            raise err(f"{k} must be a string")
    if not ID_RE.match(d["id"]):
        raise err(f"bad id {d['id']!r}: letters, digits, '.', '_', ':', '-', at most 64")
    if not LABEL_RE.match(d["app"]):
        raise err(f"bad app label {d['app']!r}: lowercase letters, digits, '.', '_', '-'")
    if d["category"] not in CATEGORIES:
        raise err(f"unknown category {d['category']!r} (known: {', '.join(sorted(CATEGORIES))})")
    prio = d.get("priority", 0)
    if not isinstance(prio, int) or isinstance(prio, bool) or not PRIORITY_RANGE[0] <= prio <= PRIORITY_RANGE[1]:
        raise err(f"priority must be an integer in {PRIORITY_RANGE[0]}..{PRIORITY_RANGE[1]}")
    desc = d.get("description", "")
    if not isinstance(desc, str):
        raise err("description must be a string")
    r = Rule(d["id"], d["app"], d["category"], prio, path, line, user, order, desc)
    proto = d.get("protocol", "any")
    if proto not in ("tcp", "udp", "any"):
        raise err("protocol must be \"tcp\", \"udp\" or \"any\"")
    r.l4 = {"tcp": 6, "udp": 17, "any": 0}[proto]
    if "ports" in d:
        r.ports = _ports(d["ports"], err)
    side = d.get("side", "server")
    if side not in ("server", "either"):
        raise err("side must be \"server\" (the responder's port/address) or \"either\"")
    r.side = 0 if side == "server" else 1
    if "cidr" in d:
        r.cidrs = _cidrs(d["cidr"], err)
    if "server_name" in d:
        r.server_names = _strings(d["server_name"], "server_name", err, NAME_RE, lower=True)
    if "alpn" in d:
        r.alpn = _strings(d["alpn"], "alpn", err, maxlen=31)
    if "detected" in d:
        r.detected = _strings(d["detected"], "detected", err)
        bad = [x for x in r.detected if x != "none" and x not in builtin]
        if bad:
            raise err(f"detected names labels no dissector gives: {', '.join(bad)} "
                      f"(built-in labels: {', '.join(sorted(builtin))}, or \"none\")")
    if "payload" in d:
        pays = d["payload"]
        if not isinstance(pays, list) or not pays:
            raise err("payload must be one or more [[rule.payload]] tables")
        for i, pd in enumerate(pays):
            at = pay_lines[i] if i < len(pay_lines) else line
            r.payload.append(_pattern(pd, lambda m, at=at: RuleError(path, at, m)))
    if not (r.ports or r.cidrs or r.server_names or r.alpn or r.detected or r.payload):
        raise err("a rule needs at least one condition: ports, cidr, server_name, alpn, detected or payload")
    return r


def parse_file(path: Path, user: bool, order_base: int = 0) -> tuple[list[Rule], list[RuleError]]:
    """Rules of one TOML file, or the errors that prevent using it (then no rule of the file is used)."""
    builtin = set(dpi_labels()[1:])
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except OSError as e:
        return [], [RuleError(path, None, f"cannot read: {e.strerror or e}")]
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        return [], [RuleError(path, line, "not UTF-8 text")]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e))
        if m:
            return [], [RuleError(path, int(m.group(1)), f"TOML syntax: {msg} (column {m.group(2)})")]
        if "end of document" in str(e):  # an unclosed array or string: the file's last line
            return [], [RuleError(path, max(1, len(text.splitlines())), f"TOML syntax: {msg} at the end of the file")]
        return [], [RuleError(path, None, f"TOML syntax: {msg}")]
    unknown = set(doc) - {"rule"}
    errors: list[RuleError] = []
    if unknown:
        errors.append(RuleError(path, 1, f"unknown top-level key(s): {', '.join(sorted(unknown))}; rules "
                                         "are [[rule]] tables"))
    items = doc.get("rule", [])
    if not isinstance(items, list):
        errors.append(RuleError(path, 1, "rule must be an array of tables: write [[rule]]"))
        items = []
    lines, pays = _header_lines(text)
    rules = []
    for i, d in enumerate(items):
        line = lines[i] if i < len(lines) else 1
        try:
            rules.append(_rule(d, str(path), line, pays[i] if i < len(pays) else [], user, order_base + i,
                               builtin))
        except RuleError as e:
            errors.append(e)
    if not items and not errors:
        errors.append(RuleError(path, None, "no [[rule]] tables in this file"))
    return ([] if errors else rules), errors


def _files(p: Path) -> list[Path]:
    if p.is_dir():
        return sorted(x for x in p.glob("*.toml") if x.is_file())
    return [p]


# ---- the rule set ------------------------------------------------------------------------------------

def _ranges_meet(a, b) -> bool:
    return any(lo1 <= hi2 and lo2 <= hi1 for lo1, hi1 in a for lo2, hi2 in b)


def _cidrs_meet(a, b) -> bool:
    for v1, p1, a1 in a:
        for v2, p2, a2 in b:
            if v1 == v2:
                n1 = ipaddress.ip_network((a1, p1))
                n2 = ipaddress.ip_network((a2, p2))
                if n1.overlaps(n2):
                    return True
    return False


def _names_meet(a, b) -> bool:
    from fnmatch import fnmatchcase
    for x in a:
        for y in b:
            if x == y or fnmatchcase(y.replace("*", "x"), x) or fnmatchcase(x.replace("*", "x"), y):
                return True
    return False


def _may_overlap(a: Rule, b: Rule) -> bool:
    """True when some flow could satisfy both rules through the same port, name, address or ALPN (payload
    patterns: only identical patterns are assumed to meet)."""
    if a.l4 and b.l4 and a.l4 != b.l4:
        return False
    # ports: a flow between two different well-known ports could satisfy two "either" rules, but that is
    # not what a reader of the report wants to hear about: only a port both rules name counts
    if a.ports and b.ports and not _ranges_meet(a.ports, b.ports):
        return False
    if a.cidrs and b.cidrs and not _cidrs_meet(a.cidrs, b.cidrs):
        return False
    if a.server_names and b.server_names and not _names_meet(a.server_names, b.server_names):
        return False
    if a.alpn and b.alpn and not set(a.alpn) & set(b.alpn):
        return False
    if a.detected and b.detected and not set(a.detected) & set(b.detected):
        return False
    if a.payload and b.payload and a.payload != b.payload:
        return False
    return True


@dataclass
class RuleSet:
    rules: list[Rule]                      # in precedence order (rank)
    errors: list[RuleError]
    overrides: list[str]                   # user rules replacing shipped rules of the same id
    conflicts: list[str]                   # same priority, different app, may match the same flow
    files: list[str]

    @property
    def ok(self) -> bool:
        return not self.errors

    def labels(self) -> list[str]:
        """Label vocabulary: built-in labels (by id), then the rules' new labels."""
        names = dpi_labels()
        for r in self.rules:
            if r.app not in names:
                names.append(r.app)
        return names

    def vocab(self) -> "Vocab":
        names = self.labels()
        cats = {n: BUILTIN_CATEGORY.get(n, "") for n in names}
        for r in reversed(self.rules):  # the highest-ranked rule naming a label sets its category
            cats[r.app] = r.category
        return Vocab(names, [cats.get(n) or None for n in names], [r.id for r in self.rules],
                     [r.category for r in self.rules])

    def compile(self) -> dict:
        """Tables for FlowTable.set_rules() / DpiFlow (see install_rules in ext/_flowtable.pyx)."""
        names = self.labels()
        ids = {n: i for i, n in enumerate(names)}
        out = []
        for rank, r in enumerate(self.rules):
            det = [0, 0]
            for x in r.detected:
                bit = 0 if x == "none" else ids[x]
                det[bit >> 6] |= 1 << (bit & 63)
            out.append({
                "rank": rank, "app": ids[r.app], "l4": r.l4, "conf": r.confidence, "side": r.side,
                "flags": r.flags, "det": tuple(det), "ports": r.ports,
                "cidrs": r.cidrs, "names": r.server_names, "alpns": r.alpn,
                "pats": [{"dir": p.direction, "anywhere": 1 if p.within else 0, "offset": p.offset,
                          "within": p.within, "bytes": p.data, "care": p.care} for p in r.payload],
            })
        return {"rules": out, "extra_labels": names[len(dpi_labels()):]}


@dataclass
class Vocab:
    """What the Arrow columns need to turn ids into text."""
    labels: list[str]
    label_categories: list
    rule_ids: list[str]
    rule_categories: list[str]

    @staticmethod
    def builtin() -> "Vocab":
        return RuleSet([], [], [], [], []).vocab()

    def rule_names(self) -> list:
        """app_rule text by id: 0 none; 1..128 dissectors; DPI_RULE_BASE + i rules."""
        names: list = [None] * (DPI_RULE_BASE + len(self.rule_ids))
        d = dpi_dissectors()
        for i, (mod, _label) in enumerate(d["tcp"]):
            names[1 + i] = f"dissector:{mod}"
        for i, (mod, _label) in enumerate(d["udp"]):
            names[65 + i] = f"dissector:{mod}"
        for i, rid in enumerate(self.rule_ids):
            names[DPI_RULE_BASE + i] = f"rule:{rid}"
        return names


def load_rules(extra: Iterable[str | Path] = (), shipped: bool = True) -> RuleSet:
    """Shipped rules (rules/*.toml) and the user's files or directories, checked and ranked.

    Precedence (rank): higher priority first; at equal priority user rules before shipped ones, then the
    more specific rule (more kinds of condition), then file order. A user rule with the id of a shipped
    rule replaces it."""
    errors: list[RuleError] = []
    files: list[str] = []
    sources: list[tuple[Path, bool]] = []
    if shipped:
        if SHIPPED_DIR.is_dir():
            sources += [(f, False) for f in _files(SHIPPED_DIR)]
        else:  # an install without the rules/ directory: say so rather than run without them
            errors.append(RuleError(SHIPPED_DIR, None, "the shipped rules directory is missing"))
    for p in extra:
        p = Path(p)
        if not p.exists():
            errors.append(RuleError(p, None, "no such file or directory"))
            continue
        fs = _files(p)
        if p.is_dir() and not fs:
            errors.append(RuleError(p, None, "no *.toml rule files in this directory"))
        sources += [(f, True) for f in fs]
    all_rules: list[Rule] = []
    for f, user in sources:
        rules, errs = parse_file(f, user, order_base=len(all_rules))
        files.append(str(f))
        errors += errs
        all_rules += rules
    # ids: unique within shipped and within user rules; a user id equal to a shipped id replaces it
    overrides: list[str] = []
    seen: dict[tuple[bool, str], Rule] = {}
    for r in all_rules:
        k = (r.user, r.id)
        if k in seen:
            errors.append(RuleError(r.path, r.line, f"duplicate rule id {r.id!r} (first at {seen[k].where})"))
        else:
            seen[k] = r
    user_ids = {r.id for r in all_rules if r.user}
    kept = []
    for r in all_rules:
        if not r.user and r.id in user_ids:
            u = seen[(True, r.id)]
            overrides.append(f"{u.where}: user rule {r.id!r} replaces the shipped rule at {r.where}")
            continue
        kept.append(r)
    kept.sort(key=lambda r: (-r.priority, 0 if r.user else 1, -r.specificity, r.order))
    conflicts = []
    for i, a in enumerate(kept):
        for b in kept[i + 1:]:
            if b.priority != a.priority:
                break
            if a.app != b.app and _may_overlap(a, b):
                why = ("user rule" if a.user and not b.user else "more specific" if a.specificity > b.specificity
                       else "earlier in the files")
                conflicts.append(f"{a.where}: rule {a.id!r} ({a.app}) and {b.where}: rule {b.id!r} ({b.app}) "
                                 f"have priority {a.priority} and may match the same flow; {a.id!r} wins ({why})")
    return RuleSet(kept, errors, overrides, conflicts, files)
