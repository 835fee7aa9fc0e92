/* apps.h: the built-in application labels (app_proto values a dissector can give), in one list.
 *
 * The id of a label is its position here; ids are only meaningful inside one run (the Arrow column holds
 * the text). Python reads FT_APP_NAMES through dpi._flowtable.dpi_labels(); rule files add labels after
 * FT_APP__COUNT. Keep names lowercase, words joined by '-'.
 */
#ifndef FT_DPI_APPS_H
#define FT_DPI_APPS_H

#define FT_APP_LIST(X) \
    X(UNKNOWN, "") \
    X(TLS, "tls") \
    X(DTLS, "dtls") \
    X(QUIC, "quic") \
    X(HTTP, "http") \
    X(HTTP2, "http2") \
    X(GRPC, "grpc") \
    X(PROMETHEUS, "prometheus") \
    X(ETCD, "etcd") \
    X(KUBE_APISERVER, "kube-apiserver") \
    X(DNS, "dns") \
    X(MDNS, "mdns") \
    X(LLMNR, "llmnr") \
    X(SSH, "ssh") \
    X(ROCEV2, "rocev2") \
    X(RDMA_CM, "rdma-cm") \
    X(NVME_TCP, "nvme-tcp") \
    X(ISCSI, "iscsi") \
    X(NFS, "nfs") \
    X(PORTMAP, "portmap") \
    X(ONC_RPC, "onc-rpc") \
    X(SMB, "smb") \
    X(NETBIOS, "netbios") \
    X(POSTGRESQL, "postgresql") \
    X(MYSQL, "mysql") \
    X(REDIS, "redis") \
    X(KAFKA, "kafka") \
    X(MQTT, "mqtt") \
    X(MEMCACHED, "memcached") \
    X(FLUENTD, "fluentd") \
    X(DOGSTATSD, "dogstatsd") \
    X(STATSD, "statsd") \
    X(BGP, "bgp") \
    X(NTP, "ntp") \
    X(DHCP, "dhcp") \
    X(DHCPV6, "dhcpv6") \
    X(SNMP, "snmp") \
    X(SYSLOG, "syslog") \
    X(LDAP, "ldap") \
    X(KERBEROS, "kerberos") \
    X(STUN, "stun") \
    X(SSDP, "ssdp") \
    X(SIP, "sip") \
    X(RTSP, "rtsp") \
    X(RADIUS, "radius") \
    X(FTP, "ftp") \
    X(SMTP, "smtp") \
    X(POP3, "pop3") \
    X(IMAP, "imap") \
    X(TDS, "tds") \
    X(MONGODB, "mongodb") \
    X(VNC, "vnc") \
    X(RDP, "rdp") \
    X(SOCKS, "socks") \
    X(OPENVPN, "openvpn") \
    X(WIREGUARD, "wireguard") \
    X(IPSEC, "ipsec") \
    X(ZABBIX, "zabbix") \
    X(AMQP, "amqp") \
    X(CEPH, "ceph")

#define FT_APP_ENUM(id, name) FT_APP_##id,
enum ft_app { FT_APP_LIST(FT_APP_ENUM) FT_APP__COUNT };
#undef FT_APP_ENUM

#define FT_APP_NAME(id, name) name,
static const char *const FT_APP_NAMES[FT_APP__COUNT] = { FT_APP_LIST(FT_APP_NAME) };
#undef FT_APP_NAME

#endif /* FT_DPI_APPS_H */
