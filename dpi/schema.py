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
from dataclasses import dataclass, replace

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
    5: "lack of resources (evicted from a full flow table: least recently seen flow on probation first, then least recently seen established flow; docs/limits.md)",
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
    extra: tuple = ()        # more field-metadata (key, value) pairs, e.g. a histogram's bucket layout
    group: str = "core"      # column group (GROUPS): present only when its meter runs


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


# The DPI block (issue 5), app_category to dpi_packets, is the "dpi" group; app_proto stays in "core" (issue 2
# defined it: null until classified, and always null when DPI is off).
_FIRST_DPI = [c.name for c in COLUMNS].index("app_category")
COLUMNS = COLUMNS[:_FIRST_DPI] + tuple(replace(c, group="dpi") for c in COLUMNS[_FIRST_DPI:])


# ---- latency histograms (TCP meter, issue 3; RoCE meter, issue 4): one type, one layout (ext/ft_hist.h) ----
HIST_TYPE = pa.struct([pa.field("first_bucket", pa.int16(), nullable=False),
                       pa.field("counts", pa.list_(pa.uint32()), nullable=False),
                       pa.field("collapsed", pa.bool_(), nullable=False)])
HIST_LAYOUT = (
    "log-bucketed, 8 buckets per octave: counts[i] is the number of samples x (ns) in global bucket "
    "k = first_bucket + i, 2^(k/8) <= x < 2^((k+1)/8) (bucket 0 also holds 0 and 1 ns); buckets before the "
    "first and after the last non-zero one are left out. Percentiles read from a bucket's geometric centre "
    "2^(k/8) * 2 * 2^(1/8) / (1 + 2^(1/8)) are within 4.33 % of any sample in it. The meter keeps a window "
    "of 80 buckets (1024x) that slides with the samples; collapsed = true means samples more than 1024x "
    "below the largest were folded into the first bucket. Counts are exact until one bucket passes 65,535 "
    "samples, after which they are halved and scaled back (relative counts within 1/32768). The same layout "
    "for every *_hist column (TCP RTT and response time, RoCE latencies)."
)
HIST_EXTRA = (("bucket_layout", HIST_LAYOUT), ("buckets_per_octave", "8"), ("bucket_base_ns", "1"),
              ("bucket_lower_edge_ns", "2 ** ((first_bucket + i) / 8)"))


# ---- RoCE meter columns (issue 4; definitions in docs/roce.md, computed in ext/ft_roce.h) --------------------
ROCE_TRANSPORTS = {0: "RC", 1: "UC", 2: "RD", 3: "UD", 5: "XRC"}
ROCE_PAIRINGS = {0: "none", 1: "psn", 2: "cm"}
ROCE_LATENCIES = {
    "ack_latency": "request-to-ACK latency: from a SEND or RDMA WRITE packet of {me} with AckReq set to the "
                   "first ACK or NAK from {peer} whose PSN is at or after it (one coalesced ACK ends several); "
                   "retransmitted requests are not timed (Karn). Measured at the probe: the path from the probe to "
                   "{peer} and back, plus {peer}'s ACK delay",
    "read_latency": "READ latency: from an RDMA READ request of {me} to the first response packet of that READ "
                    "from {peer}; re-sent READs are not timed",
    "nak_recovery": "NAK recovery time: from a NAK (PSN sequence error or RNR) from {peer} to {me}'s "
                    "retransmission of the PSN it names",
}
_NOT_ROCE = " 0 for flows that are not RoCE."


def _roce_side_columns(x: str) -> tuple[Column, ...]:
    me, peer = ("src", "dst") if x == "src" else ("dst", "src")
    c = lambda name, doc, typ=pa.uint32(), unit="": Column(  # noqa: E731
        f"roce_{x}_{name}", typ, False, doc + _NOT_ROCE, unit=unit, kind="counter")
    m = lambda name, doc, typ=pa.int64(), unit="ns": Column(  # noqa: E731
        f"roce_{x}_{name}", typ, True, doc, unit=unit, kind="measurement")
    cols = [
        c("psn_gaps", f"Forward PSN jumps in what {me} sent: a request PSN beyond the next expected one "
          "(after READs the next expected PSN is past all the PSNs the READ takes), or a READ response "
          "packet beyond the next one of its READ. Packets lost before the probe (docs/roce.md)."),
        c("psn_missing", f"PSNs skipped by the roce_{x}_psn_gaps jumps."),
        c("psn_duplicates", f"Retransmissions by {me}: a request PSN behind the next expected one that the "
          f"probe saw before, that {peer} asked for with a NAK, or that belongs to a go-back-N resend; a "
          "READ response packet behind the next expected one."),
        c("psn_out_of_order", f"Request packets from {me} behind the next expected PSN, never seen before and "
          "not asked for again: reordering between the sender and the probe."),
        c("acks", f"Acknowledge packets from {me} with an ACK syndrome (AETH 000xxxxx)."),
        c("nak_psn_seq_err", f"NAKs from {me}: PSN sequence error (AETH 01100000)."),
        c("nak_rnr", f"RNR NAKs from {me}: receiver not ready (AETH 001xxxxx)."),
        c("nak_invalid_request", f"NAKs from {me}: invalid request (AETH 01100001; also invalid RD request "
          "01100100)."),
        c("nak_remote_access", f"NAKs from {me}: remote access error (AETH 01100010)."),
        c("nak_remote_operational", f"NAKs from {me}: remote operational error (AETH 01100011)."),
        c("cnp_packets", f"Congestion notification packets (BTH opcode 0x81) sent by {me}: {me} received "
          "CE-marked packets and asks the QP the CNP addresses to slow down."),
        c("ecn_ect_packets", f"Packets from {me} marked ECN-capable, ECT(0) or ECT(1), in the IP header."),
        c("ecn_ce_packets", f"Packets from {me} marked Congestion Experienced (CE) in the IP header."),
        c("fecn_packets", f"Packets from {me} with the BTH FECN bit set."),
        c("becn_packets", f"Packets from {me} with the BTH BECN bit set (CNPs carry it)."),
        c("send_messages", f"SEND messages started by {me} (SEND First or Only; every UD SEND), "
          "retransmissions not counted."),
        c("write_messages", f"RDMA WRITE messages started by {me} (First or Only)."),
        c("read_messages", f"RDMA READ requests sent by {me}."),
        c("atomic_messages", f"ATOMIC requests (CmpSwap, FetchAdd) sent by {me}."),
        c("payload_bytes", f"RDMA payload bytes in every RoCE packet {me} sent (after BTH, extension "
          "headers, pad and ICRC), retransmissions included.", pa.uint64(), "bytes"),
        c("message_bytes", f"Size of the messages {me} started: RETH DMA length of WRITEs and READs, payload "
          "of SENDs, 8 bytes per ATOMIC.", pa.uint64(), "bytes"),
        m("mean_message_bytes", f"roce_{x}_message_bytes / messages started by {me}; null without messages.",
          pa.float64(), "bytes"),
    ]
    for lat, text in ROCE_LATENCIES.items():
        what = text.format(me=me, peer=peer)
        cols += [
            c(f"{lat}_samples", f"Number of samples of the {what}."),
            m(f"{lat}_min_ns", f"Smallest roce_{x}_{lat} sample; null without samples."),
            m(f"{lat}_mean_ns", f"Mean of the roce_{x}_{lat} samples (integer ns); null without samples."),
            m(f"{lat}_max_ns", f"Largest roce_{x}_{lat} sample; null without samples."),
            m(f"{lat}_p50_ns", f"Median (nearest rank) of the roce_{x}_{lat} samples, within 4.4 % (bucket "
              "layout in docs/roce.md); null without samples."),
            m(f"{lat}_p99_ns", f"99th percentile (nearest rank) of the roce_{x}_{lat} samples, within 4.4 %; "
              "null without samples."),
            Column(f"roce_{x}_{lat}_hist", HIST_TYPE, True, f"Histogram of the roce_{x}_{lat} samples "
                   "(bucket layout in the field metadata); null without samples.", unit="ns",
                   kind="measurement", extra=HIST_EXTRA),
        ]
    return tuple(cols)


ROCE_COLUMNS: tuple[Column, ...] = (
    Column("roce_transport", pa.string(), True,
           "RoCEv2 transport of the flow's packets, from the BTH opcode: RC, UC, UD, RD or XRC; null for "
           "flows that are not RoCE and for RoCE flows that carried only CNPs.", kind="attribute"),
    Column("roce_pairing", pa.string(), True,
           "How the two directions of the RoCE connection were put together: cm = proven by the RDMA CM "
           "REQ and REP that named both QPs; psn = inferred from an ACK, NAK or READ response naming a PSN "
           "the other direction's requests used; none = one direction only (the packets addressed to one "
           "QP; UD, CNP-only and unmatched flows). Null for flows that are not RoCE.", kind="attribute"),
    Column("roce_src_qpn", pa.uint32(), True,
           "src's queue pair number (the destination QP of the packets dst sends); null when not known "
           "(not RoCE, or an unpaired flow of packets addressed to dst).", kind="key"),
    Column("roce_dst_qpn", pa.uint32(), True,
           "dst's queue pair number (the destination QP of the packets src sends); null when not known.",
           kind="key"),
    Column("roce_path_mtu", pa.uint16(), True,
           "RoCE path MTU observed: the payload size of the FIRST and MIDDLE packets of multi-packet "
           "messages (256..4096), or the one the PSN distance after a READ implied; null when not seen.",
           unit="bytes", kind="measurement"),
) + _roce_side_columns("src") + _roce_side_columns("dst")

ROCE_COLUMNS = tuple(replace(c, group="roce") for c in ROCE_COLUMNS)
COLUMNS = COLUMNS + ROCE_COLUMNS
# ---- end RoCE meter columns --------------------------------------------------------------------------------


# ---- TCP meter columns (issue 3; definitions in docs/tcp.md, computed in ext/ft_tcp.h) -------------------
_NOT_TCP = " 0 for non-TCP flows."
_SIDE = {"src": ("src", "dst"), "dst": ("dst", "src")}


def _tcp_side_columns(x: str) -> tuple[Column, ...]:
    me, peer = _SIDE[x]
    c = lambda name, doc, typ=pa.uint32(), unit="": Column(  # noqa: E731
        f"{x}_tcp_{name}", typ, False, doc + _NOT_TCP, unit=unit, kind="counter")
    m = lambda name, doc: Column(f"{x}_tcp_{name}", pa.int64(), True, doc, unit="ns",  # noqa: E731
                                 kind="measurement")
    rtt = (f"data-to-ACK RTT samples on data sent by {me}: from a data segment that moved the sequence edge "
           f"to the {peer} ACK that acknowledges exactly its end, never from a retransmitted or late "
           f"segment (Karn); the {'server' if me == 'src' else 'client'}-side leg as seen at the probe")
    return (
        c("retrans_packets", f"Segments sent by {me} that re-send sequence space already seen at the probe "
          "(SYN and FIN included), in this record: fast + timeout + spurious."),
        c("retrans_bytes", f"Payload bytes of {x}_tcp_retrans_packets.", pa.uint64(), "bytes"),
        c("fast_retrans_packets", f"Retransmissions by {me} sent in fast recovery: after {peer} sent 3 "
          "duplicate ACKs and before it acknowledged everything outstanding then."),
        c("timeout_retrans_packets", f"Retransmissions by {me} that are neither fast nor spurious: driven "
          "by a timer (retransmission timeout, tail-loss probe, RACK reordering timer)."),
        c("spurious_retrans_packets", f"Retransmissions by {me} whose every byte {peer} had already "
          "acknowledged."),
        c("syn_retrans_packets", f"{'SYN' if me == 'src' else 'SYN/ACK'} segments sent again by {me} "
          f"(also counted in {x}_tcp_retrans_packets)."),
        c("out_of_order_packets", f"Segments from {me} below the highest sequence seen that fill a hole "
          "(never-seen sequence space) within the reordering window of the hole's opening (the handshake "
          "RTT, else 3 ms): reordering between sender and probe."),
        c("upstream_retrans_packets", f"Segments from {me} that fill a hole later than the reordering "
          "window: lost between the sender and the probe, then sent again."),
        c("seq_gaps", f"Holes opened in {me}'s sequence space: a segment began beyond the highest sequence "
          "seen (Wireshark: previous segment not captured)."),
        c("seq_gaps_unfilled", f"Holes in {me}'s sequence space never filled at the probe: acknowledged "
          f"by {peer} without the probe seeing the bytes, or still open when the flow ended (capture loss "
          "or asymmetric routing)."),
        c("dup_acks", f"Duplicate ACKs sent by {me} (RFC 5681: no data, no SYN/FIN, same ACK number and "
          f"window as its previous segment, while {peer} has data outstanding)."),
        c("sack_blocks", f"SACK blocks sent by {me}."),
        c("zero_window_events", f"Times {me} advertised a zero receive window after a non-zero one."),
        c("zero_window_probes", f"Zero-window probes sent by {me} while {peer}'s window was zero."),
        c("window_full_packets", f"Data segments from {me} reaching the right edge of {peer}'s advertised "
          "window (only when window scaling is known from the handshake)."),
        c("rst_handshake", f"RST segments sent by {me} before the connection was established."),
        c("rst_established", f"RST segments sent by {me} after the connection was established (or "
          "in a flow first seen mid-stream)."),
        c("keepalive_packets", f"Keep-alives sent by {me}: 0 or 1 byte at the edge minus one (not "
          "retransmissions)."),
        c("rtt_samples", f"Number of {rtt}."),
        m("rtt_min_ns", f"Smallest of the {x}_tcp_rtt samples; null without samples."),
        m("rtt_mean_ns", f"Mean of the {x}_tcp_rtt samples (integer ns); null without samples."),
        m("rtt_max_ns", f"Largest of the {x}_tcp_rtt samples; null without samples."),
        m("rtt_p50_ns", f"Median (nearest rank) of the {x}_tcp_rtt samples, within 4.4 % (see "
          "docs/tcp.md); null without samples."),
        m("rtt_p90_ns", f"90th percentile (nearest rank) of the {x}_tcp_rtt samples, within 4.4 %."),
        m("rtt_p99_ns", f"99th percentile (nearest rank) of the {x}_tcp_rtt samples, within 4.4 %."),
        Column(f"{x}_tcp_rtt_hist", HIST_TYPE, True, f"Histogram of the {x}_tcp_rtt samples (bucket "
               "layout in the field metadata); null without samples.", unit="ns", kind="measurement",
               extra=HIST_EXTRA),
        c("ts_rtt_samples", f"RTT samples from TCP timestamps on {me}'s segments: from the first data "
          f"segment carrying a TSval to the first {peer} segment that echoes it in TSecr and acknowledges "
          "that segment."),
        m("ts_rtt_min_ns", f"Smallest of the {x}_tcp_ts_rtt samples; null without samples."),
        m("ts_rtt_mean_ns", f"Mean of the {x}_tcp_ts_rtt samples; null without samples."),
        m("ts_rtt_max_ns", f"Largest of the {x}_tcp_ts_rtt samples; null without samples."),
    )


def _tcp_flow_columns() -> tuple[Column, ...]:
    m = lambda name, doc: Column(name, pa.int64(), True, doc, unit="ns", kind="measurement")  # noqa: E731
    return (
        m("tcp_handshake_rtt_ns", "From the (most recent) SYN to the first segment with ACK and without SYN, "
          "normally the ACK completing the handshake: Wireshark's tcp.analysis.initial_rtt. In the record "
          "of the period where it was measured; null when no SYN was seen."),
        m("tcp_handshake_server_ns", "Server side of the handshake as seen at the probe: from the (most "
          "recent) SYN to the first SYN/ACK after it; null when either was not seen."),
        m("tcp_handshake_client_ns", "Client side of the handshake as seen at the probe: from the (most "
          "recent) SYN/ACK to the first ACK from src that acknowledges it; null when either was not seen."),
        Column("tcp_art_samples", pa.uint32(), False, "Application response times measured in this record: "
               "from the last src payload segment of a request (src payload after the last dst payload) "
               "to the first new dst payload segment after it; works on encrypted payload. 0 for non-TCP "
               "flows.", kind="counter"),
        m("tcp_art_min_ns", "Smallest application response time; null without samples."),
        m("tcp_art_mean_ns", "Mean application response time (integer ns); null without samples."),
        m("tcp_art_max_ns", "Largest application response time; null without samples."),
        m("tcp_art_p50_ns", "Median (nearest rank) application response time, within 4.4 %."),
        m("tcp_art_p99_ns", "99th percentile (nearest rank) application response time, within 4.4 %."),
        Column("tcp_art_hist", HIST_TYPE, True, "Histogram of the application response times (bucket "
               "layout in the field metadata); null without samples.", unit="ns", kind="measurement",
               extra=HIST_EXTRA),
    )


COLUMNS = COLUMNS + tuple(replace(c, group="tcp") for c in
                          _tcp_side_columns("src") + _tcp_side_columns("dst") + _tcp_flow_columns())
# ---- end TCP meter columns --------------------------------------------------------------------------------


def _field(c: Column) -> pa.Field:
    meta = {"doc": c.doc, "kind": c.kind}
    if c.unit:
        meta["unit"] = c.unit
    if c.ipfix:
        meta["ipfix"] = c.ipfix
    meta.update(dict(c.extra))
    return pa.field(c.name, c.type, nullable=c.nullable, metadata=meta)


# Column groups, in schema order. "core" is always there; each other group is the output of one meter and is
# left out of the file when that meter is off or its columns are not wanted (replay --no-tcp-meter,
# --dpi-budget 0, --no-roce-columns): absent, not zero, so that a reader cannot take "not measured" for
# "measured nothing". The file's flowtap.column_groups
# says which groups it has; columns keep their relative order, so files of different settings concatenate
# by name (DuckDB union_by_name, polars how="diagonal").
GROUPS = ("core", "dpi", "roce", "tcp")
GROUP_DOCS = {
    "core": "always present: identity, time, counters, tunnel, ICMP, app_proto",
    "dpi": "application classification (issue 5); absent with --dpi-budget 0",
    "roce": "RoCEv2 meter (issue 4); absent with --no-roce-columns (the meter still runs: it keys and pairs "
            "RoCE flows by queue pair)",
    "tcp": "TCP loss and latency meter (issue 3); absent with --no-tcp-meter",
}


def check_groups(groups) -> tuple[str, ...]:
    """groups in schema order, "core" included; ValueError for an unknown name."""
    wanted = set(groups) | {"core"}
    unknown = wanted - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown column group(s) {sorted(unknown)}; known: {', '.join(GROUPS)}")
    return tuple(g for g in GROUPS if g in wanted)


def columns(groups=GROUPS) -> tuple[Column, ...]:
    """The columns of the given groups, in schema order."""
    keep = set(check_groups(groups))
    return tuple(c for c in COLUMNS if c.group in keep)


def flow_schema(metadata: dict[str, str] | None = None, groups=GROUPS) -> pa.Schema:
    """The flow-record schema of the given column groups (default: all), with run metadata (values are
    strings; JSON for structured ones)."""
    base = {
        "flowtap.schema_version": SCHEMA_VERSION,
        "flowtap.bytes_definition": BYTES_DEFINITION,
        "flowtap.flow_end_reasons": json.dumps(FLOW_END_REASONS),
        "flowtap.column_groups": json.dumps(list(check_groups(groups))),
    }
    if metadata:
        base.update(metadata)
    return pa.schema([_field(c) for c in columns(groups)], metadata=base)


COLUMN_NAMES = tuple(c.name for c in COLUMNS)   # every group


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
        "Column groups: `core` is always present; each other group is the output of one meter and is left "
        "out of the file (absent, not zero) when that meter is off. `flowtap.column_groups` lists the "
        "file's groups; columns keep the order below, so files written with different settings concatenate "
        "by name.",
        "",
        "| group | columns | present |",
        "|---|---:|---|",
        *[f"| `{g}` | {sum(c.group == g for c in COLUMNS)} | {GROUP_DOCS[g]} |" for g in GROUPS],
        "",
        "| # | column | group | type | null | unit | IPFIX | meaning |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(COLUMNS):
        out.append(f"| {i} | `{c.name}` | {c.group} | {c.type} | {'yes' if c.nullable else 'no'} | {c.unit} | "
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
        "| `flowtap.column_groups` | JSON list of the column groups in the file (see above) |",
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
