/* Trusted proxies, X-Forwarded-For and the PROXY protocol (realip.h). */
#include "realip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sp_ip_parse(const char *s, size_t n, struct sp_ip *out)
{
	char text[INET6_ADDRSTRLEN];
	if (n == 0 || n >= sizeof(text))
		return -1;
	memcpy(text, s, n);
	text[n] = '\0';
	memset(out, 0, sizeof(*out));
	if (memchr(s, ':', n)) {
		if (inet_pton(AF_INET6, text, out->a) != 1)
			return -1;
		out->family = AF_INET6;
		static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
		if (memcmp(out->a, mapped, 12) == 0) {
			memmove(out->a, out->a + 12, 4);
			memset(out->a + 4, 0, 12);
			out->family = AF_INET;
		}
		return 0;
	}
	if (inet_pton(AF_INET, text, out->a) != 1)
		return -1;
	out->family = AF_INET;
	return 0;
}

int sp_ip_from_sockaddr(const struct sockaddr *sa, struct sp_ip *out)
{
	char text[INET6_ADDRSTRLEN];
	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET) {
		memcpy(out->a, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		out->family = AF_INET;
		return 0;
	}
	if (sa->sa_family != AF_INET6)
		return -1;
	/* through the text, so that a mapped IPv4 address becomes one */
	const struct in6_addr *a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	if (!IN6_IS_ADDR_V4MAPPED(a6)) {
		memcpy(out->a, a6, 16);
		out->family = AF_INET6;
		return 0;
	}
	inet_ntop(AF_INET6, a6, text, sizeof(text));
	return sp_ip_parse(text, strlen(text), out);
}

void sp_ip_text(const struct sp_ip *ip, char out[INET6_ADDRSTRLEN])
{
	if (ip->family == AF_INET)
		sp_ipv4_text(ip->a, out); /* inet_ntop's sprintf: every accepted connection */
	else if (!ip->family || !inet_ntop(ip->family, ip->a, out, INET6_ADDRSTRLEN))
		strcpy(out, "-");
}

int sp_cidr_parse(const char *s, struct sp_cidr *out, char *buf, size_t len, const char **why)
{
	const char *slash = strchr(s, '/');
	size_t alen = slash ? (size_t)(slash - s) : strlen(s);
	memset(out, 0, sizeof(*out));
	if (sp_ip_parse(s, alen, &out->ip) < 0) {
		*why = "not an IP address or an address block (10.0.0.0/8, 2001:db8::/32); "
		       "host names are not resolved here";
		return -1;
	}
	int max = out->ip.family == AF_INET ? 32 : 128;
	/* ::ffff:10.0.0.0/104 is 10.0.0.0/8: its prefix counts the 96 bits before */
	int mapped = out->ip.family == AF_INET && memchr(s, ':', alen) != NULL;
	out->bits = max;
	if (!slash)
		return 0;
	const char *d = slash + 1;
	int bits = 0;
	size_t nd = strspn(d, "0123456789");
	if (nd > 1 && nd <= 3 && d[nd] == '\0' && d[0] == '0') {
		/* 10.0.0.0/08: written as a number elsewhere (octal to some) */
		snprintf(buf, len, "the prefix length after / has a leading zero: write /%d",
			 (int)strtol(d, NULL, 10));
		*why = buf;
		return -1;
	}
	if (nd == 0 || nd > 3 || d[nd] != '\0' ||
	    (bits = (int)strtol(d, NULL, 10) - (mapped ? 96 : 0)) > max || bits < 0) {
		if (mapped)
			snprintf(buf, len, "the prefix length after / must be 96-128 for an "
					   "IPv4-mapped address");
		else
			snprintf(buf, len, "the prefix length after / must be 0-%d for an %s address",
				 max, max == 32 ? "IPv4" : "IPv6");
		*why = buf;
		return -1;
	}
	out->bits = bits;
	/* an address with bits past the prefix is a typo for one or the other */
	for (int i = bits; i < max; i++) {
		if (out->ip.a[i / 8] & (0x80 >> (i % 8))) {
			struct sp_ip net = out->ip;
			for (int j = bits; j < max; j++)
				net.a[j / 8] &= (unsigned char)~(0x80 >> (j % 8));
			char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
			sp_ip_text(&net, a);
			sp_ip_text(&out->ip, b);
			snprintf(buf, len, "bits set past the /%d prefix: write %s/%d (the block) or %s "
				 "(the address)", bits + (mapped ? 96 : 0), a, bits, b);
			*why = buf;
			return -1;
		}
	}
	return 0;
}

static int cidr_match(const struct sp_cidr *c, const struct sp_ip *ip)
{
	if (c->ip.family != ip->family)
		return 0;
	int whole = c->bits / 8, rest = c->bits % 8;
	if (memcmp(c->ip.a, ip->a, (size_t)whole) != 0)
		return 0;
	if (!rest)
		return 1;
	unsigned char mask = (unsigned char)(0xff00 >> rest);
	return (c->ip.a[whole] & mask) == (ip->a[whole] & mask);
}

int sp_cidr_has(const struct sp_cidr *c, size_t n, const struct sp_ip *ip)
{
	for (size_t i = 0; i < n; i++)
		if (cidr_match(&c[i], ip))
			return 1;
	return 0;
}

/* Whether s (n bytes, not NUL-terminated) is a port: 1-5 digits, at most
 * 65535; lead zeros only with strict (the PROXY protocol forbids them). */
static int port_ok(const char *s, size_t n, int strict)
{
	unsigned long v = 0;
	if (n < 1 || n > 5 || (strict && n > 1 && s[0] == '0'))
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	return v <= 65535;
}

/* One X-Forwarded-For entry: an address, with a port allowed after an
 * IPv4 address or a bracketed IPv6 one. */
static int xff_entry(const char *s, size_t n, struct sp_ip *out)
{
	if (n && s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (!close)
			return -1;
		size_t after = n - (size_t)(close - s) - 1;
		const char *port = close + 1;
		if (after && (port[0] != ':' || !port_ok(port + 1, after - 1, 0)))
			return -1;
		/* IPv6 text: [::ffff:192.0.2.7] is kept as the IPv4 address it maps */
		if (!memchr(s + 1, ':', (size_t)(close - s) - 1) ||
		    sp_ip_parse(s + 1, (size_t)(close - s) - 1, out) < 0)
			return -1;
		return 0;
	}
	const char *colon = memchr(s, ':', n);
	if (colon && !memchr(colon + 1, ':', n - (size_t)(colon - s) - 1) && colon > s) {
		if (!port_ok(colon + 1, n - (size_t)(colon - s) - 1, 0)) /* IPv4 with a port */
			return -1;
		if (sp_ip_parse(s, (size_t)(colon - s), out) < 0 || out->family != AF_INET)
			return -1;
		return 0;
	}
	return sp_ip_parse(s, n, out);
}

int sp_realip_xff(const struct sp_cidr *trusted, size_t n, const struct sp_hdr *h, size_t nh,
		  struct sp_ip *ip)
{
	int taken = 0;
	for (size_t i = nh; i-- > 0;) {
		if (!sp_hdr_name_is(&h[i], "X-Forwarded-For"))
			continue;
		const char *v = h[i].value;
		size_t end = h[i].value_len;
		while (end > 0) {
			size_t start = end;
			while (start > 0 && v[start - 1] != ',')
				start--;
			size_t a = start, b = end;
			while (a < b && (v[a] == ' ' || v[a] == '\t'))
				a++;
			while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
				b--;
			end = start ? start - 1 : 0;
			if (a == b) /* an empty list element (RFC 9110 5.6.1) */
				continue;
			struct sp_ip next;
			if (!sp_cidr_has(trusted, n, ip) || xff_entry(v + a, b - a, &next) < 0)
				return taken;
			*ip = next;
			taken++;
		}
	}
	return taken;
}

static const unsigned char v2_sig[12] = {'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};

/* "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222" (the line without its CRLF). */
static int v1_line(const char *line, size_t n, struct sp_ip *src, const char **why)
{
	const char *f[6];
	size_t fl[6], nf = 0, i = 0;
	memset(src, 0, sizeof(*src));
	if (n >= 13 && memcmp(line, "PROXY UNKNOWN", 13) == 0 && (n == 13 || line[13] == ' '))
		return 0; /* whatever follows is to be ignored */
	while (i <= n && nf < 6) {
		size_t j = i;
		while (j < n && line[j] != ' ')
			j++;
		f[nf] = line + i;
		fl[nf++] = j - i;
		i = j + 1;
	}
	*why = "malformed PROXY v1 header (PROXY TCP4|TCP6 SRC DST SPORT DPORT)";
	if (nf != 6 || i <= n)
		return -1;
	int fam = fl[1] == 4 && memcmp(f[1], "TCP4", 4) == 0   ? AF_INET
		  : fl[1] == 4 && memcmp(f[1], "TCP6", 4) == 0 ? AF_INET6
							      : 0;
	struct sp_ip dst;
	if (!fam || sp_ip_parse(f[2], fl[2], src) < 0 || sp_ip_parse(f[3], fl[3], &dst) < 0 ||
	    !port_ok(f[4], fl[4], 1) || !port_ok(f[5], fl[5], 1))
		return -1;
	/* TCP6 may carry mapped IPv4 addresses, which parse as IPv4 */
	int colon = memchr(f[2], ':', fl[2]) != NULL;
	if ((fam == AF_INET) == colon || (memchr(f[3], ':', fl[3]) != NULL) != colon) {
		*why = "PROXY v1 header: the addresses are not of the protocol it names";
		return -1;
	}
	return 0;
}

long sp_proxy_parse(const unsigned char *p, size_t n, struct sp_ip *src, const char **why)
{
	memset(src, 0, sizeof(*src));
	*why = "not a PROXY protocol header (the listener has proxy_protocol)";
	if (n && p[0] == '\r') {
		size_t k = n < 12 ? n : 12;
		if (memcmp(p, v2_sig, k) != 0)
			return -1;
		if (n < 16)
			return 0;
		size_t total = 16 + ((size_t)p[14] << 8 | p[15]);
		if ((p[12] >> 4) != 2) {
			*why = "PROXY v2 header: unknown version";
			return -1;
		}
		int cmd = p[12] & 0x0f, af = p[13] >> 4, tp = p[13] & 0x0f;
		/* LOCAL ignores the family byte (proxy-protocol.txt 2.2) */
		if (cmd > 1 || (cmd == 1 && (af > 3 || tp > 2))) {
			*why = cmd > 1 ? "PROXY v2 header: unknown command"
				       : "PROXY v2 header: unknown address family or protocol";
			return -1;
		}
		if (total > SP_PROXY_MAX) {
			*why = "PROXY v2 header longer than 4096 bytes";
			return -1;
		}
		if (n < total)
			return 0;
		if (cmd == 0 || tp != 1 || (af != 1 && af != 2))
			return (long)total; /* LOCAL (a health check), or not TCP: the peer stays */
		size_t need = af == 1 ? 12 : 36;
		if (total - 16 < need) {
			*why = "PROXY v2 header: too short for its addresses";
			return -1;
		}
		if (af == 1) {
			src->family = AF_INET;
			memcpy(src->a, p + 16, 4);
		} else {
			char text[INET6_ADDRSTRLEN];
			inet_ntop(AF_INET6, p + 16, text, sizeof(text));
			sp_ip_parse(text, strlen(text), src); /* a mapped address becomes IPv4 */
		}
		return (long)total;
	}
	static const char v1[] = "PROXY ";
	size_t k = n < 6 ? n : 6;
	if (memcmp(p, v1, k) != 0)
		return -1;
	const unsigned char *lf = memchr(p, '\n', n < SP_PROXY_V1_MAX ? n : SP_PROXY_V1_MAX);
	if (!lf) {
		if (n < SP_PROXY_V1_MAX)
			return 0;
		*why = "PROXY v1 header longer than 107 bytes";
		return -1;
	}
	size_t len = (size_t)(lf - p);
	if (len < 1 || p[len - 1] != '\r' || memchr(p, '\0', len) ||
	    v1_line((const char *)p, len - 1, src, why) < 0) {
		if (len < 1 || p[len - 1] != '\r' || memchr(p, '\0', len))
			*why = "malformed PROXY v1 header (PROXY TCP4|TCP6 SRC DST SPORT DPORT)";
		memset(src, 0, sizeof(*src));
		return -1;
	}
	return (long)len + 1;
}
