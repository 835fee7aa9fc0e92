/* mail.h: the mail protocols, by their first lines: SMTP (RFC 5321: server greeting "220 ..." naming
 * (E)SMTP or on a submission port, client "EHLO"/"HELO"), POP3 (RFC 1939: "+OK " greeting; client
 * "CAPA"/"USER "/"AUTH "), IMAP (RFC 9051: "* OK " / "* PREAUTH " greeting; client "<tag> CAPABILITY" /
 * "LOGIN"). Greetings count only when the server speaks first, before any client byte.
 */
#ifndef FT_DPI_MAIL_H
#define FT_DPI_MAIL_H
#include "dpi_types.h"

static inline int ft_dpi_mail(const uint8_t *p, uint32_t len, int dir, struct ft_dpi_state *st, struct ft_dpi_out *out)
{
    (void)out;
    int d = ft_dpi_dir(dir);
    if (len < 4 || !ft_dpi_printable(p, 4)) /* text protocols: binary data leaves before the line scan */
        return FT_DPI_EXCLUDED;
    int verdict;
    int32_t e = ft_dpi_first_line(p, len, dir, &verdict); /* waits for the line's end while it is text */
    if (e < 0)
        return verdict;
    uint32_t n = (uint32_t)e;
    if (n < 4)
        return FT_DPI_EXCLUDED;
    int greeting = d == 1 && st->dir_pkts[0] == 0;
    if (greeting && memcmp(p, "220", 3) == 0 && (p[3] == ' ' || p[3] == '-') && !ft_dpi_port(st, 21)) {
        int smtp = ft_dpi_port(st, 25) || ft_dpi_port(st, 587) || ft_dpi_port(st, 2525);
        for (uint32_t i = 4; i + 4 <= n && !smtp; i++)
            smtp = ft_dpi_ieq(p + i, "smtp", 4);
        if (!smtp)
            return FT_DPI_EXCLUDED;
        st->app = FT_APP_SMTP;
        return FT_DPI_DETECTED;
    }
    if (greeting && n >= 4 && memcmp(p, "+OK ", 4) == 0) {
        st->app = FT_APP_POP3;
        return FT_DPI_DETECTED;
    }
    if (greeting && ((n >= 5 && memcmp(p, "* OK ", 5) == 0) || (n >= 10 && memcmp(p, "* PREAUTH ", 10) == 0))) {
        st->app = FT_APP_IMAP;
        return FT_DPI_DETECTED;
    }
    if (d == 0) {
        if (n >= 5 && (ft_dpi_ieq(p, "ehlo ", 5) || ft_dpi_ieq(p, "helo ", 5))) {
            st->app = FT_APP_SMTP;
            return FT_DPI_DETECTED;
        }
        if ((n == 4 && ft_dpi_ieq(p, "capa", 4)) || (n > 5 && ft_dpi_ieq(p, "user ", 5) && ft_dpi_port(st, 110))) {
            st->app = FT_APP_POP3;
            return FT_DPI_DETECTED;
        }
        /* IMAP: "<tag> CAPABILITY" / "<tag> LOGIN " / "<tag> STARTTLS" */
        uint32_t i = 0;
        while (i < n && i < 16 && p[i] != ' ')
            i++;
        if (i > 0 && i < n && ((n - i - 1 == 10 && ft_dpi_ieq(p + i + 1, "capability", 10)) ||
                               (n - i - 1 > 6 && ft_dpi_ieq(p + i + 1, "login ", 6)) ||
                               (n - i - 1 == 8 && ft_dpi_ieq(p + i + 1, "starttls", 8)))) {
            st->app = FT_APP_IMAP;
            return FT_DPI_DETECTED;
        }
    }
    return FT_DPI_EXCLUDED;
}

#endif /* FT_DPI_MAIL_H */
