/* http.h: HTTP/1.x (RFC 9112) requests and responses: method, Host, path, User-Agent. Over UDP the same
 * syntax is SSDP (HTTPU, UPnP). Refinements of the label, from the request itself:
 *   prometheus      a GET of a path ending in /metrics or /federate, or a Prometheus User-Agent (a scrape)
 *   kube-apiserver  a path under /api/ or /apis/ from a Kubernetes client (kubectl, client-go, kube-*)
 *   elasticsearch   nothing in the request says it for sure: left to rules (port 9200)
 */
#ifndef FT_DPI_HTTP_H
#define FT_DPI_HTTP_H
#include "dpi_types.h"

#define FT_HTTP_LINE_MAX 2048  /* a request line longer than this is not looked at further */

/* Length of the request method at p (followed by a space), or 0 when p does not start with one; -1 when
 * p is a proper prefix of a method (more bytes needed). Methods of RFC 9110, WebDAV and UPnP. */
static inline int ft_http_method(const uint8_t *p, uint32_t len)
{
    static const char *const m[] = {
        "GET ", "POST ", "PUT ", "HEAD ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE ",
        "PROPFIND ", "PROPPATCH ", "MKCOL ", "COPY ", "MOVE ", "LOCK ", "UNLOCK ", "REPORT ", "SEARCH ",
        "NOTIFY ", "M-SEARCH ", "SUBSCRIBE ", "UNSUBSCRIBE ", "PURGE ", "MKCALENDAR ",
    };
    int partial = 0;
    if (len == 0 || p[0] < 'C' || p[0] > 'U') /* every method starts with C..U: binary data leaves here */
        return 0;
    for (uint32_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        uint32_t n = (uint32_t)strlen(m[i]);
        if (len >= n) {
            if (memcmp(p, m[i], n) == 0)
                return (int)n - 1;
        } else if (memcmp(p, m[i], len) == 0) {
            partial = 1;
        }
    }
    return partial ? -1 : 0;
}

/* Looks for header `name` (lower case, with the colon) in the header block p[from..end): sets *v, *vn to
 * its value without surrounding blanks. Returns 1 when found. At most 64 header lines are looked at. */
static inline int ft_http_header(const uint8_t *p, uint32_t from, uint32_t end, const char *name,
                                 const uint8_t **v, uint32_t *vn)
{
    uint32_t nl = (uint32_t)strlen(name);
    uint32_t o = from;
    for (int k = 0; k < 64 && o < end; k++) {
        int32_t e = ft_dpi_crlf(p, end, o);
        uint32_t stop = e < 0 ? end : (uint32_t)e;
        if (stop == o)
            return 0; /* blank line: end of headers */
        if (stop - o > nl && ft_dpi_ieq(p + o, name, nl)) {
            uint32_t a = o + nl, b = stop;
            while (a < b && (p[a] == ' ' || p[a] == '\t'))
                a++;
            while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t'))
                b--;
            *v = p + a;
            *vn = b - a;
            return 1;
        }
        if (e < 0)
            return 0;
        o = stop + 2;
    }
    return 0;
}

/* 1 when s[0..n) ends with the literal t. */
static inline int ft_ends(const uint8_t *s, uint32_t n, const char *t)
{
    uint32_t k = (uint32_t)strlen(t);
    return n >= k && memcmp(s + n - k, t, k) == 0;
}

/* 1 when t occurs in s[0..n) (short needles, header values: bounded by n * strlen(t)). */
static inline int ft_contains(const uint8_t *s, uint32_t n, const char *t)
{
    uint32_t k = (uint32_t)strlen(t);
    for (uint32_t i = 0; i + k <= n; i++)
        if (memcmp(s + i, t, k) == 0)
            return 1;
    return 0;
}

static inline int ft_dpi_http(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st,
                              struct ft_dpi_out *out)
{
    int udp = st->l4 == 17;
    if (len < 5) {
        if (ft_http_method(p, len) != 0 || memcmp(p, "HTTP/", len) == 0)
            return ft_dpi_more(dir);
        return FT_DPI_EXCLUDED;
    }
    if (memcmp(p, "HTTP/", 5) == 0) { /* a response: the capture missed the request, or server first */
        if (len < 12)
            return ft_dpi_more(dir);
        if (p[5] != '1' || p[6] != '.' || (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
            p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9')
            return FT_DPI_EXCLUDED;
        st->app = udp ? FT_APP_SSDP : FT_APP_HTTP; /* M-SEARCH answers go to the searcher's own port */
        FT_DPI_SET(out, FT_O_VERSION, version, p, 8, 0);
        return FT_DPI_DETECTED;
    }
    int m = ft_http_method(p, len);
    if (m == 0)
        return FT_DPI_EXCLUDED;
    if (m < 0)
        return ft_dpi_more(dir);
    uint32_t lim = len < FT_HTTP_LINE_MAX ? len : FT_HTTP_LINE_MAX;
    int32_t eol = ft_dpi_crlf(p, lim, (uint32_t)m);
    if (eol < 0) {
        /* the target must be printable so far; wait for the end of the request line */
        uint32_t k = lim;
        if (k > (uint32_t)m && p[k - 1] == '\r')
            k--; /* the segment ends between CR and LF */
        if (!ft_dpi_printable(p + m, k - (uint32_t)m) || ((uint32_t)m + 1 < k && p[m + 1] == ' '))
            return FT_DPI_EXCLUDED;
        return (len >= FT_HTTP_LINE_MAX) ? FT_DPI_EXCLUDED : ft_dpi_more(dir);
    }
    /* METHOD SP target SP HTTP/1.x */
    uint32_t ts = (uint32_t)m + 1, te = ts;
    while (te < (uint32_t)eol && p[te] != ' ')
        te++;
    if (te == ts || te + 9 != (uint32_t)eol || memcmp(p + te + 1, "HTTP/1.", 7) != 0 ||
        (p[te + 8] != '0' && p[te + 8] != '1'))
        return FT_DPI_EXCLUDED; /* RTSP/1.0 and SIP/2.0 have their own dissector */
    if (!ft_dpi_printable(p + ts, te - ts))
        return FT_DPI_EXCLUDED;
    /* wait for the end of the header block (Host and User-Agent may be in the next segment) */
    uint32_t hs = (uint32_t)eol + 2;
    int complete = 0;
    for (uint32_t i = hs; i + 1 < len; i++) {
        if (p[i] == '\r' && p[i + 1] == '\n' && i >= 2 && p[i - 2] == '\r' && p[i - 1] == '\n') {
            complete = 1;
            break;
        }
    }
    if (hs + 2 <= len && p[hs] == '\r' && p[hs + 1] == '\n')
        complete = 1;
    if (!complete && !ft_dpi_final(dir) && len < FT_DPI_REASM_BYTES)
        return FT_DPI_NEED_MORE;

    const uint8_t *v;
    uint32_t vn;
    uint32_t plen = te - ts;
    for (uint32_t i = ts; i < te; i++)
        if (p[i] == '?') {
            plen = i - ts;
            break;
        }
    FT_DPI_SET(out, FT_O_METHOD, http_method, p, (uint32_t)m, 0);
    FT_DPI_SET(out, FT_O_PATH, http_path, p + ts, plen, 0);
    FT_DPI_SET(out, FT_O_VERSION, version, p + te + 1, 8, 0);
    if (ft_http_header(p, hs, len, "host:", &v, &vn) && vn) {
        uint32_t hn = vn;
        if (v[0] != '[') /* strip ":port", but not from a bracketed IPv6 literal */
            for (uint32_t i = 0; i < vn; i++)
                if (v[i] == ':') {
                    hn = i;
                    break;
                }
        FT_DPI_SET(out, FT_O_SERVER_NAME, server_name, v, hn, 1);
    }
    int ua = ft_http_header(p, hs, len, "user-agent:", &v, &vn);
    if (ua)
        FT_DPI_SET(out, FT_O_UA, user_agent, v, vn, 0);

    const uint8_t *path = p + ts;
    if (udp) {
        st->app = FT_APP_SSDP;
    } else if (m == 3 && memcmp(p, "GET", 3) == 0 &&
               (ft_ends(path, plen, "/metrics") || ft_ends(path, plen, "/federate") ||
                (ua && vn >= 11 && memcmp(v, "Prometheus/", 11) == 0))) {
        st->app = FT_APP_PROMETHEUS;
    } else if (ua && ((plen >= 5 && memcmp(path, "/api/", 5) == 0) || (plen >= 6 && memcmp(path, "/apis/", 6) == 0)) &&
               (ft_contains(v, vn, "kubectl/") || ft_contains(v, vn, "kubelet/") || ft_contains(v, vn, "kube-") ||
                ft_contains(v, vn, "client-go"))) {
        st->app = FT_APP_KUBE_APISERVER;
    } else {
        st->app = FT_APP_HTTP;
    }
    return FT_DPI_DETECTED;
}

#endif /* FT_DPI_HTTP_H */
