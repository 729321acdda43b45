/* The client's own address when strangler sits behind a load balancer or
 * another proxy: which peers are trusted to say who is behind them
 * (trusted_proxies, a list of CIDR blocks), what X-Forwarded-For says, read
 * from the right as nginx's realip module does with real_ip_recursive, and
 * the PROXY protocol header (v1 text, v2 binary) that an L4 load balancer
 * sends before the connection's first byte. Pure logic: no libevent, no
 * sockets. */
#ifndef SP_REALIP_H
#define SP_REALIP_H

#include <arpa/inet.h>
#include <stddef.h>
#include <sys/socket.h>

#include "http.h"

/* An IPv4 or IPv6 address; an IPv4-mapped IPv6 address (::ffff:1.2.3.4) is
 * kept as the IPv4 address it maps, so that one client has one form. */
struct sp_ip {
	int family; /* AF_INET, AF_INET6; 0: none */
	unsigned char a[16];
};

/* An address block: the addresses whose first bits are ip's. */
struct sp_cidr {
	struct sp_ip ip;
	int bits; /* 0-32 or 0-128 */
};

/* The most trusted_proxies entries. */
#define SP_TRUSTED_MAX 256

/* s (n bytes) as an address: "1.2.3.4", "2001:db8::1". 0, or -1. */
int sp_ip_parse(const char *s, size_t n, struct sp_ip *out);
/* An accepted socket's peer address. 0, or -1 for another family. */
int sp_ip_from_sockaddr(const struct sockaddr *sa, struct sp_ip *out);
/* ip in the form inet_ntop(3) writes. */
void sp_ip_text(const struct sp_ip *ip, char out[INET6_ADDRSTRLEN]);

/* "10.0.0.0/8", "2001:db8::/32", or one address ("10.0.0.7": /32, /128).
 * Bits set past the prefix are an error (10.0.0.1/8 is meant as 10.0.0.0/8
 * or as 10.0.0.1: the message says which to write). 0, or -1 with *why
 * (static text, or written into buf of len bytes). */
int sp_cidr_parse(const char *s, struct sp_cidr *out, char *buf, size_t len, const char **why);
/* Whether ip is in one of the n blocks. */
int sp_cidr_has(const struct sp_cidr *c, size_t n, const struct sp_ip *ip);

/* The client's address behind trusted proxies. *ip comes in as the
 * connection's peer; while it is trusted, it becomes the rightmost
 * X-Forwarded-For entry not yet taken (every X-Forwarded-For field of h,
 * the last one's last entry first). An entry that is not an address (a
 * port is allowed: "1.2.3.4:5", "[2001:db8::1]:5") stops the walk where it
 * is, as do the end of the entries and an address not trusted. Returns the
 * entries taken. */
int sp_realip_xff(const struct sp_cidr *trusted, size_t n, const struct sp_hdr *h, size_t nh,
		  struct sp_ip *ip);

/* The PROXY protocol (haproxy.org/download/2.9/doc/proxy-protocol.txt). */
#define SP_PROXY_V1_MAX 107  /* the longest v1 line, CRLF included */
#define SP_PROXY_MAX 4096    /* the longest header accepted (v2 with its TLVs) */

/* The header at the start of p (n bytes, what has arrived so far):
 * returns its length once whole, with *src the client's address (family 0
 * when the header gives none: v1 UNKNOWN, v2 LOCAL, or another family than
 * TCP over IPv4 or IPv6), 0 when more bytes are needed, or -1 with *why
 * when it is not a PROXY header or a malformed one. */
long sp_proxy_parse(const unsigned char *p, size_t n, struct sp_ip *src, const char **why);

#endif
