"""The Arrow schema of flowtap's flow records: the single source of truth.

Every column is declared once below with its type, unit, IPFIX element and meaning. The Arrow schema, the
field metadata and docs/schema.md (``python -m dpi.schema > docs/schema.md``; a test fails when the page is
stale) are all generated from this list. Conventions (DESIGN.md): flat snake_case names; ``src`` is the
initiator (SYN sender, else the first sender); counters are never null (0); measurements are null when not
measured; timestamps are ``timestamp[ns, UTC]``; new columns are only ever added at the end.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass

import pyarrow as pa

SCHEMA_VERSION = "1"

BYTES_DEFINITION = (
    "IP octets: from the first byte of the (inner) IP header to the end of the IP payload, as the IP header "
    "states it (IPv4 total length, IPv6 payload length + 40), the same as IPFIX octetDeltaCount; link-layer "
    "headers, tunnel headers, FCS and padding are not counted; a packet cut by the snap length still counts "
    "its full IP length"
)

FLOW_END_REASONS = {
    1: "idle timeout",
    2: "active timeout",
    3: "end of flow detected (TCP FIN in both directions, or RST; also a new SYN reusing the 4-tuple)",
    4: "forced end (end of input, or capture stopped)",
    5: "lack of resources (evicted from a full flow table, least recently seen first)",
}


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    nullable: bool
    doc: str
    unit: str = ""
    ipfix: str = ""
    kind: str = "attribute"  # attribute | counter | measurement | key


TS = pa.timestamp("ns", tz="UTC")

COLUMNS: tuple[Column, ...] = (
    Column("flow_id", pa.uint64(), False,
           "Identifier of the flow within this run, assigned in order of flow creation (deterministic for a "
           "given input). All records of one flow (active-timeout periods) share it.", ipfix="flowId (148)",
           kind="key"),
    Column("record_seq", pa.uint32(), False,
           "Position of this record among the flow's records: 0 for the first period, then +1 per active "
           "timeout.", kind="key"),
    Column("community_id", pa.string(), False,
           "Community ID v1 (seed 0 unless configured) of the flow's 5-tuple; for ICMP the type and code "
           "mapping of the spec. Joins flowtap records with Zeek, Suricata and Wireshark.", kind="key"),
    Column("observer_host", pa.string(), False,
           "Host name of the machine that produced the record (or the --observer value).",
           ipfix="exporterName-like", kind="attribute"),
    Column("flow_start", TS, False, "Time of the first packet of this record (packet time).",
           unit="ns", ipfix="flowStartNanoseconds (156)"),
    Column("flow_end", TS, False, "Time of the last packet of this record (packet time).",
           unit="ns", ipfix="flowEndNanoseconds (157)"),
    Column("duration_ns", pa.int64(), False, "flow_end - flow_start.", unit="ns",
           ipfix="flowDurationMicroseconds (161), in ns"),
    Column("flow_end_reason", pa.uint8(), False,
           "Why this record was emitted, IPFIX flowEndReason codes: " +
           "; ".join(f"{k} = {v}" for k, v in FLOW_END_REASONS.items()) + ".",
           ipfix="flowEndReason (136)"),
    Column("ip_version", pa.uint8(), False, "4 or 6 (of the inner packet when tunnelled).",
           ipfix="ipVersion (60)"),
    Column("src_ip", pa.string(), False, "Initiator's address, text form.",
           ipfix="sourceIPv4Address (8) / sourceIPv6Address (27)", kind="key"),
    Column("dst_ip", pa.string(), False, "Responder's address, text form.",
           ipfix="destinationIPv4Address (12) / destinationIPv6Address (28)", kind="key"),
    Column("src_port", pa.uint16(), False,
           "Initiator's TCP/UDP port; 0 for other protocols and for non-first IP fragments.",
           ipfix="sourceTransportPort (7)", kind="key"),
    Column("dst_port", pa.uint16(), False, "Responder's TCP/UDP port; 0 as for src_port.",
           ipfix="destinationTransportPort (11)", kind="key"),
    Column("protocol", pa.uint8(), False, "IP protocol number (upper-layer protocol after IPv6 extension "
           "headers): 6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...", ipfix="protocolIdentifier (4)", kind="key"),
    Column("vlan_id", pa.uint16(), False, "Innermost 802.1Q VLAN id; 0 when untagged. Part of the flow key.",
           ipfix="vlanId (58)", kind="key"),
    Column("outer_vlan_id", pa.uint16(), False,
           "Outermost VLAN id when tags are stacked (802.1ad QinQ), else 0.", ipfix="dot1qVlanId (243)"),
    Column("dscp", pa.uint8(), False, "DSCP of the first packet from src (TOS / traffic class >> 2).",
           ipfix="ipDiffServCodePoint (195)"),
    Column("tunnel_type", pa.string(), True,
           "Outermost encapsulation removed to reach the metered packet: gre, gre_teb, erspan2, erspan3, "
           "vxlan; null when the packet was not tunnelled."),
    Column("tunnel_id", pa.uint32(), True,
           "VXLAN VNI, ERSPAN session id or GRE key (0 when the header has none); null when not tunnelled. "
           "Part of the flow key."),
    Column("src_packets", pa.uint64(), False, "Packets from src to dst in this record.",
           ipfix="packetDeltaCount (2)", kind="counter"),
    Column("dst_packets", pa.uint64(), False, "Packets from dst to src in this record.",
           ipfix="packetDeltaCount (2), reverse direction (RFC 5103)", kind="counter"),
    Column("src_bytes", pa.uint64(), False, "IP octets from src to dst in this record (see metadata "
           "bytes_definition).", unit="bytes", ipfix="octetDeltaCount (1)", kind="counter"),
    Column("dst_bytes", pa.uint64(), False, "IP octets from dst to src in this record.", unit="bytes",
           ipfix="octetDeltaCount (1), reverse direction (RFC 5103)", kind="counter"),
    Column("tcp_flags", pa.uint16(), True,
           "OR of the TCP flags of all packets of this record, both directions (FIN 0x01, SYN 0x02, RST "
           "0x04, PSH 0x08, ACK 0x10, URG 0x20, ECE 0x40, CWR 0x80, AE 0x100); null for non-TCP flows.",
           ipfix="tcpControlBits (6)", kind="measurement"),
    Column("src_tcp_flags", pa.uint16(), True, "OR of the TCP flags sent by src; null for non-TCP flows.",
           ipfix="tcpControlBits (6)", kind="measurement"),
    Column("dst_tcp_flags", pa.uint16(), True, "OR of the TCP flags sent by dst; null for non-TCP flows.",
           ipfix="tcpControlBits (6), reverse direction", kind="measurement"),
    Column("icmp_type", pa.uint8(), True, "Type of the first ICMP/ICMPv6 message from src; null otherwise.",
           ipfix="icmpTypeIPv4 (176) / icmpTypeIPv6 (178)", kind="measurement"),
    Column("icmp_code", pa.uint8(), True, "Code of the first ICMP/ICMPv6 message from src; null otherwise.",
           ipfix="icmpCodeIPv4 (177) / icmpCodeIPv6 (179)", kind="measurement"),
    Column("truncated_packets", pa.uint32(), False,
           "Packets of this record cut by the capture's snap length (their bytes still count in full).",
           kind="counter"),
    Column("fragment_packets", pa.uint32(), False, "Packets of this record that were IP fragments.",
           kind="counter"),
    Column("interface", pa.uint16(), False,
           "Where the first packet was seen: pcapng interface id for replayed pcapng, 0 for pcap."),
    Column("app_proto", pa.string(), True,
           "Application protocol label (lowercase): what the flow is, as decided by the payload dissectors and "
           "the rules (docs/dpi.md): tls, http, dns, etcd, kube-apiserver, nfs, rocev2, ...; null when "
           "nothing recognised it. app_confidence says what the label rests on.",
           ipfix="applicationName (96)", kind="measurement"),
    # ---- DPI (issue 5): application classification, appended in this block ----
    Column("app_category", pa.string(), True,
           "Category of app_proto: the deciding rule's category, else the built-in label's (web, rpc, dns, "
           "kubernetes, ml, hpc, rdma, storage, database, messaging, monitoring, logging, network, auth, "
           "remote-access, mail, file-transfer, voip, vpn, iot, other); null when app_proto is null.",
           kind="measurement"),
    Column("app_rule", pa.string(), True,
           "What decided app_proto: \"dissector:<module>\" (a payload dissector, ext/dpi/<module>.h) or "
           "\"rule:<id>\" (a rule of rules/*.toml or of --rules); null when app_proto is null.",
           kind="measurement"),
    Column("app_confidence", pa.string(), True,
           "What app_proto rests on: payload (a dissector or a payload-pattern rule recognised the bytes), "
           "name (a server-name or ALPN rule), address (a CIDR rule), port (a port rule; no payload was "
           "seen), guess (a port rule, although payload was seen that no dissector recognised); null when "
           "app_proto is null.", kind="measurement"),
    Column("app_payload_proto", pa.string(), True,
           "Label the payload dissector gave before rules applied (tls under etcd, http2 under grpc, http "
           "under prometheus); null when no dissector recognised the payload.", kind="measurement"),
    Column("server_name", pa.string(), True,
           "Server name from the payload, lower case: TLS/QUIC SNI, HTTP Host (without port), HTTP/2 "
           ":authority, DNS query name (without the trailing dot), RTSP URL host; at most 127 bytes (longer "
           "names are cut); null when absent.", kind="measurement"),
    Column("alpn", pa.string(), True,
           "TLS/QUIC application protocol (ALPN): the server's choice when visible (TLS 1.2 ServerHello), "
           "else the client's first offer (TLS 1.3 encrypts the choice); null when absent.",
           kind="measurement"),
    Column("app_version", pa.string(), True,
           "Protocol version or software banner from the payload: TLSv1.2/TLSv1.3 (the server's choice when "
           "seen), QUIC v1/v2/draft-NN/Q046, HTTP/1.1, HTTP/2, SSH software version (server's, else "
           "client's), MySQL server version, SMB1 or SMB2/3, SNMP v1/v2c/v3, NTPv4, ...; null when absent.",
           kind="measurement"),
    Column("http_method", pa.string(), True,
           "HTTP request method (HTTP/1.x request line or HTTP/2 :method); null otherwise.", kind="measurement"),
    Column("http_path", pa.string(), True,
           "HTTP request path without the query string (HTTP/1.x target, HTTP/2 :path; for gRPC the "
           "/package.Service/Method); at most 111 bytes; null otherwise.", kind="measurement"),
    Column("http_user_agent", pa.string(), True,
           "HTTP User-Agent (HTTP/1.x header, HTTP/2 user-agent); at most 111 bytes; null otherwise.",
           kind="measurement"),
    Column("dns_qtype", pa.uint16(), True,
           "DNS (mDNS, LLMNR) query type of the first question (1 A, 28 AAAA, 33 SRV, 65 HTTPS, ...); null "
           "for other protocols.", kind="measurement"),
    Column("dns_rcode", pa.uint8(), True,
           "DNS response code of the response to the first query (0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, ...); "
           "null when no response was seen within the DPI budget, and for other protocols.",
           kind="measurement"),
    Column("dpi_packets", pa.uint8(), False,
           "Payload packets DPI inspected for this flow, both directions (at most the budget, --dpi-budget); "
           "0 when DPI is off or the flow carried no payload.", kind="counter"),
)


def _field(c: Column) -> pa.Field:
    meta = {"doc": c.doc, "kind": c.kind}
    if c.unit:
        meta["unit"] = c.unit
    if c.ipfix:
        meta["ipfix"] = c.ipfix
    return pa.field(c.name, c.type, nullable=c.nullable, metadata=meta)


def flow_schema(metadata: dict[str, str] | None = None) -> pa.Schema:
    """The flow-record schema, with run metadata (values are strings; JSON for structured ones)."""
    base = {
        "flowtap.schema_version": SCHEMA_VERSION,
        "flowtap.bytes_definition": BYTES_DEFINITION,
        "flowtap.flow_end_reasons": json.dumps(FLOW_END_REASONS),
    }
    if metadata:
        base.update(metadata)
    return pa.schema([_field(c) for c in COLUMNS], metadata=base)


COLUMN_NAMES = tuple(c.name for c in COLUMNS)


def markdown() -> str:
    """docs/schema.md, generated from COLUMNS."""
    out = [
        "# Flow record schema",
        "",
        "<!-- generated by `python -m dpi.schema > docs/schema.md`; edit dpi/schema.py, not this page -->",
        "",
        f"Schema version {SCHEMA_VERSION}. One row per flow record. `src` is the initiator (the sender of "
        "the SYN, the receiver of a SYN/ACK seen first, else the first sender). Counters are never null; "
        "measurements are null when not measured. Timestamps are `timestamp[ns, UTC]` in packet time.",
        "",
        f"Bytes: {BYTES_DEFINITION}.",
        "",
        "| # | column | type | null | unit | IPFIX | meaning |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(COLUMNS):
        out.append(f"| {i} | `{c.name}` | {c.type} | {'yes' if c.nullable else 'no'} | {c.unit} | "
                   f"{c.ipfix} | {c.doc} |")
    out += [
        "",
        "## Schema metadata",
        "",
        "| key | meaning |",
        "|---|---|",
        "| `flowtap.schema_version` | version of this column list |",
        "| `flowtap.version` | flowtap package version that wrote the file |",
        "| `flowtap.record_version` | version of the per-packet record (ext/ft_record.h) |",
        "| `flowtap.bytes_definition` | what the byte counters count |",
        "| `flowtap.flow_end_reasons` | JSON: flow_end_reason code -> meaning |",
        "| `flowtap.capture_source` | JSON list of the replayed files (or the capture interfaces) |",
        "| `flowtap.observer_host` | host name written in observer_host |",
        "| `flowtap.settings` | JSON: idle/active/closed timeouts (ns), max_flows, batch_rows, DPI budget "
        "and rule directories |",
        "| `flowtap.counters` | JSON run counters (packets seen/metered, parse exit reasons, packets not "
        "metered by reason, flows created/evicted, records by end reason, DPI counters, capture errors). In Parquet "
        "files: file metadata written at close. In Arrow IPC files and streams: the custom metadata of "
        "every record batch (a snapshot at that batch) and of the final batch. |",
        "",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(markdown())
