/* Unit tests for proxy/realip.c: address and block parsing, the
 * X-Forwarded-For walk behind trusted proxies, and the PROXY protocol
 * header, v1 and v2, whole, cut short and malformed. */
#include "unit.h"

#include "realip.h"

static struct sp_ip ip_of(const char *s)
{
	struct sp_ip ip;
	assert_int_equal(sp_ip_parse(s, strlen(s), &ip), 0);
	return ip;
}

static void assert_ip(const struct sp_ip *ip, const char *want)
{
	char text[INET6_ADDRSTRLEN];
	sp_ip_text(ip, text);
	assert_string_equal(text, want);
}

static void test_ip_parse(void **state)
{
	(void)state;
	struct sp_ip ip;
	static const char *const bad[] = {"", "1.2.3", "1.2.3.4.5", "256.1.1.1", "01.2.3.4",
					  "1.2.3.4 ", "host.example", "::g", "1:2:3:4:5:6:7:8:9",
					  "fe80::1%eth0", "[::1]", "1.2.3.4/8"};
	for (size_t i = 0; i < NELEM(bad); i++)
		assert_int_equal(sp_ip_parse(bad[i], strlen(bad[i]), &ip), -1);
	ip = ip_of("10.1.2.3");
	assert_int_equal(ip.family, AF_INET);
	assert_ip(&ip, "10.1.2.3");
	ip = ip_of("2001:DB8:0::1");
	assert_int_equal(ip.family, AF_INET6);
	assert_ip(&ip, "2001:db8::1"); /* one text for one address */
	ip = ip_of("::ffff:192.0.2.7");
	assert_int_equal(ip.family, AF_INET); /* a mapped address is the IPv4 one */
	assert_ip(&ip, "192.0.2.7");
	/* only the n bytes given are read */
	assert_int_equal(sp_ip_parse("1.2.3.45", 7, &ip), 0);
	assert_ip(&ip, "1.2.3.4");
}

static void test_ip_from_sockaddr(void **state)
{
	(void)state;
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
	struct sp_ip ip;
	inet_pton(AF_INET6, "::ffff:127.0.0.9", &s6.sin6_addr);
	assert_int_equal(sp_ip_from_sockaddr((struct sockaddr *)&s6, &ip), 0);
	assert_int_equal(ip.family, AF_INET);
	assert_ip(&ip, "127.0.0.9");
	inet_pton(AF_INET6, "2001:db8::5", &s6.sin6_addr);
	assert_int_equal(sp_ip_from_sockaddr((struct sockaddr *)&s6, &ip), 0);
	assert_ip(&ip, "2001:db8::5");
	struct sockaddr_in s4 = {.sin_family = AF_INET};
	inet_pton(AF_INET, "10.9.8.7", &s4.sin_addr);
	assert_int_equal(sp_ip_from_sockaddr((struct sockaddr *)&s4, &ip), 0);
	assert_ip(&ip, "10.9.8.7");
	struct sockaddr un = {.sa_family = AF_UNIX};
	assert_int_equal(sp_ip_from_sockaddr(&un, &ip), -1);
}

static void test_cidr(void **state)
{
	(void)state;
	struct sp_cidr c[4];
	char buf[160];
	const char *why = NULL;
	assert_int_equal(sp_cidr_parse("10.0.0.0/8", &c[0], buf, sizeof(buf), &why), 0);
	assert_int_equal(sp_cidr_parse("192.168.1.7", &c[1], buf, sizeof(buf), &why), 0);
	assert_int_equal(sp_cidr_parse("2001:db8::/32", &c[2], buf, sizeof(buf), &why), 0);
	assert_int_equal(sp_cidr_parse("172.16.0.0/12", &c[3], buf, sizeof(buf), &why), 0);
	struct sp_ip in[] = {ip_of("10.255.0.1"), ip_of("192.168.1.7"), ip_of("2001:db8:ffff::1"),
			     ip_of("172.31.255.255"), ip_of("::ffff:10.0.0.1")};
	struct sp_ip out[] = {ip_of("11.0.0.1"), ip_of("192.168.1.8"), ip_of("2001:db9::1"),
			      ip_of("172.32.0.0"), ip_of("::a00:1")};
	for (size_t i = 0; i < NELEM(in); i++)
		assert_true(sp_cidr_has(c, 4, &in[i]));
	for (size_t i = 0; i < NELEM(out); i++)
		assert_false(sp_cidr_has(c, 4, &out[i]));
	assert_false(sp_cidr_has(c, 0, &in[0]));

	/* /0 takes every address of its family, and only those */
	struct sp_cidr all;
	assert_int_equal(sp_cidr_parse("0.0.0.0/0", &all, buf, sizeof(buf), &why), 0);
	assert_true(sp_cidr_has(&all, 1, &out[0]));
	assert_false(sp_cidr_has(&all, 1, &out[2]));

	assert_int_equal(sp_cidr_parse("10.0.0.1/8", &all, buf, sizeof(buf), &why), -1);
	assert_string_equal(why, "bits set past the /8 prefix: write 10.0.0.0/8 (the block) or "
				 "10.0.0.1 (the address)");
	assert_int_equal(sp_cidr_parse("10.0.0.0/33", &all, buf, sizeof(buf), &why), -1);
	assert_string_equal(why, "the prefix length after / must be 0-32 for an IPv4 address");
	assert_int_equal(sp_cidr_parse("10.0.0.0/08", &all, buf, sizeof(buf), &why), -1);
	assert_string_equal(why, "the prefix length after / has a leading zero: write /8");
	assert_int_equal(sp_cidr_parse("::ffff:10.0.0.0/0104", &all, buf, sizeof(buf), &why), -1);
	assert_string_equal(why, "the prefix length after / must be 96-128 for an IPv4-mapped address");
	assert_int_equal(sp_cidr_parse("::/129", &all, buf, sizeof(buf), &why), -1);
	assert_string_equal(why, "the prefix length after / must be 0-128 for an IPv6 address");
	/* a block of IPv4-mapped addresses is that IPv4 block */
	struct sp_cidr m;
	assert_int_equal(sp_cidr_parse("::ffff:10.0.0.0/104", &m, buf, sizeof(buf), &why), 0);
	assert_int_equal(m.ip.family, AF_INET);
	assert_int_equal(m.bits, 8);
	assert_true(sp_cidr_has(&m, 1, &in[0]));
	assert_false(sp_cidr_has(&m, 1, &out[0]));
	assert_int_equal(sp_cidr_parse("::ffff:10.0.0.0/95", &m, buf, sizeof(buf), &why), -1);
	assert_string_equal(why, "the prefix length after / must be 96-128 for an IPv4-mapped address");
	assert_int_equal(sp_cidr_parse("::ffff:10.0.0.1/104", &m, buf, sizeof(buf), &why), -1);
	assert_string_equal(why, "bits set past the /104 prefix: write 10.0.0.0/8 (the block) or "
				 "10.0.0.1 (the address)");
	static const char *const bad[] = {"10.0.0.0/", "10.0.0.0/08", "10.0.0.0/8x", "/8",
					  "lb.internal", "10.0.0.0/-1", ""};
	for (size_t i = 0; i < NELEM(bad); i++)
		assert_int_equal(sp_cidr_parse(bad[i], &all, buf, sizeof(buf), &why), -1);
}

/* The client address sp_realip_xff finds for peer behind the headers. */
static const char *walk(const struct sp_hdr *h, size_t nh, const char *peer, int *taken)
{
	static char text[INET6_ADDRSTRLEN];
	static struct sp_cidr trusted[2];
	char buf[160];
	const char *why;
	assert_int_equal(sp_cidr_parse("10.0.0.0/8", &trusted[0], buf, sizeof(buf), &why), 0);
	assert_int_equal(sp_cidr_parse("::1", &trusted[1], buf, sizeof(buf), &why), 0);
	struct sp_ip ip = ip_of(peer);
	*taken = sp_realip_xff(trusted, 2, h, nh, &ip);
	sp_ip_text(&ip, text);
	return text;
}

static void test_xff(void **state)
{
	(void)state;
	int n;
	struct sp_hdr one[] = {HDR("Host", "a"), HDR("X-Forwarded-For", "203.0.113.7")};
	assert_string_equal(walk(one, 2, "10.1.1.1", &n), "203.0.113.7");
	assert_int_equal(n, 1);
	/* a peer that is not trusted is not believed */
	assert_string_equal(walk(one, 2, "192.0.2.1", &n), "192.0.2.1");
	assert_int_equal(n, 0);
	/* the chain is read from the right while its hops are trusted; what a
	 * client wrote at the left is not believed */
	struct sp_hdr chain[] = {HDR("x-forwarded-for", "1.1.1.1, 198.51.100.9 ,10.2.2.2")};
	assert_string_equal(walk(chain, 1, "10.1.1.1", &n), "198.51.100.9");
	assert_int_equal(n, 2);
	/* several fields are one list, in order */
	struct sp_hdr split[] = {HDR("X-Forwarded-For", "198.51.100.9"), HDR("Accept", "*/*"),
				 HDR("X-Forwarded-For", "10.2.2.2, ")};
	assert_string_equal(walk(split, 3, "10.1.1.1", &n), "198.51.100.9");
	assert_int_equal(n, 2);
	/* all trusted: the leftmost */
	struct sp_hdr inner[] = {HDR("X-Forwarded-For", "10.3.3.3, 10.2.2.2")};
	assert_string_equal(walk(inner, 1, "10.1.1.1", &n), "10.3.3.3");
	/* ports and brackets, as some balancers write them */
	struct sp_hdr ports[] = {HDR("X-Forwarded-For", "[2001:db8::7]:443, 10.2.2.2:8080")};
	assert_string_equal(walk(ports, 1, "::1", &n), "2001:db8::7");
	assert_int_equal(n, 2);
	/* an IPv4-mapped address in brackets is the IPv4 client, as without them */
	struct sp_hdr mapped[] = {HDR("X-Forwarded-For", "[::ffff:203.0.113.7]:4711")};
	assert_string_equal(walk(mapped, 1, "10.1.1.1", &n), "203.0.113.7");
	assert_int_equal(n, 1);
	struct sp_hdr mapped_bare[] = {HDR("X-Forwarded-For", "[::FFFF:203.0.113.8]")};
	assert_string_equal(walk(mapped_bare, 1, "10.1.1.1", &n), "203.0.113.8");
	/* garbage stops the walk at the last trusted hop */
	struct sp_hdr junk[] = {HDR("X-Forwarded-For", "198.51.100.9, unknown, 10.2.2.2")};
	assert_string_equal(walk(junk, 1, "10.1.1.1", &n), "10.2.2.2");
	assert_int_equal(n, 1);
	static const char *const bad[] = {"1.2.3.4:", "1.2.3.4:99999", "1.2.3.4:8a", "[::1",
					  "[1.2.3.4]", "[::1]80", "2001:db8::1:80x", "_"};
	for (size_t i = 0; i < NELEM(bad); i++) {
		struct sp_hdr h = {"X-Forwarded-For", 15, bad[i], strlen(bad[i])};
		assert_string_equal(walk(&h, 1, "10.1.1.1", &n), "10.1.1.1");
		assert_int_equal(n, 0);
	}
	/* none, or empty */
	struct sp_hdr empty[] = {HDR("X-Forwarded-For", " , ")};
	assert_string_equal(walk(empty, 1, "10.1.1.1", &n), "10.1.1.1");
	assert_string_equal(walk(NULL, 0, "10.1.1.1", &n), "10.1.1.1");
	/* X-Forwarded_For is not X-Forwarded-For */
	struct sp_hdr alias[] = {HDR("X-Forwarded_For", "198.51.100.9")};
	assert_string_equal(walk(alias, 1, "10.1.1.1", &n), "10.1.1.1");
}

/* sp_proxy_parse on s (n bytes) whole, and on every shorter prefix, which
 * must ask for more (or, for a bad header, fail no later than whole). */
static long parse_all(const void *s, size_t n, struct sp_ip *src, const char **why)
{
	long whole = sp_proxy_parse(s, n, src, why);
	for (size_t k = 0; whole > 0 && k < (size_t)whole; k++) {
		struct sp_ip part;
		const char *w;
		assert_int_equal(sp_proxy_parse(s, k, &part, &w), 0);
	}
	return whole;
}

static void test_proxy_v1(void **state)
{
	(void)state;
	struct sp_ip src;
	const char *why;
	static const char tcp4[] = "PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n";
	assert_int_equal(parse_all(tcp4, sizeof(tcp4) - 1, &src, &why), 43);
	assert_ip(&src, "203.0.113.7");
	static const char tcp6[] = "PROXY TCP6 2001:db8::7 2001:db8::1 1 65535\r\n";
	assert_int_equal(parse_all(tcp6, sizeof(tcp6) - 1, &src, &why), sizeof(tcp6) - 1);
	assert_ip(&src, "2001:db8::7");
	static const char unknown[] = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n";
	assert_int_equal(parse_all(unknown, sizeof(unknown) - 1, &src, &why), sizeof(unknown) - 1);
	assert_int_equal(src.family, 0);
	assert_int_equal(parse_all("PROXY UNKNOWN\r\n", 15, &src, &why), 15);
	assert_int_equal(src.family, 0);

	static const char *const bad[] = {
		"GET / HTTP/1.1\r\n",
		"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\n",       /* LF alone */
		"PROXY TCP4 203.0.113.7 10.0.0.1 56324\r\n",         /* a field short */
		"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443 9\r\n",   /* one too many */
		"PROXY TCP4  203.0.113.7 10.0.0.1 56324 443\r\n",    /* two spaces */
		"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",           /* not TCP4's */
		"PROXY TCP6 203.0.113.7 2001:db8::1 1 2\r\n",        /* mixed */
		"PROXY TCP4 203.0.113.7 10.0.0.1 056324 443\r\n",    /* a lead zero */
		"PROXY TCP4 203.0.113.7 10.0.0.1 65536 443\r\n",
		"PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n",
		"PROXY TCP4 203.0.113.7 10.0.0.1 1 2 \r\n",
		"PROXY UNKNOWNX\r\n",
		"proxy TCP4 203.0.113.7 10.0.0.1 1 2\r\n",
		"\r\n\r\n\0\r\nQUIX\n____",
	};
	for (size_t i = 0; i < NELEM(bad); i++) {
		size_t n = i == NELEM(bad) - 1 ? 16 : strlen(bad[i]);
		assert_int_equal(sp_proxy_parse((const unsigned char *)bad[i], n, &src, &why), -1);
		assert_int_equal(src.family, 0);
		assert_non_null(strstr(why, "PROXY"));
	}
	/* no end of line within 107 bytes */
	char longer[200];
	memset(longer, 'x', sizeof(longer));
	memcpy(longer, "PROXY UNKNOWN ", 14);
	assert_int_equal(sp_proxy_parse((unsigned char *)longer, 106, &src, &why), 0);
	assert_int_equal(sp_proxy_parse((unsigned char *)longer, 107, &src, &why), -1);
	assert_string_equal(why, "PROXY v1 header longer than 107 bytes");
	/* a NUL inside the line */
	static const char nul[] = "PROXY TCP4 1.2.3.4\0 10.0.0.1 1 2\r\n";
	assert_int_equal(sp_proxy_parse((const unsigned char *)nul, sizeof(nul) - 1, &src, &why), -1);
}

/* A v2 header: signature, version 2 and cmd, family byte, addresses, tlv bytes. */
static size_t v2(unsigned char *out, int cmd, int fam, const void *addrs, size_t alen,
		 size_t tlv)
{
	static const unsigned char sig[12] = {'\r', '\n', '\r', '\n', 0, '\r', '\n', 'Q', 'U', 'I', 'T', '\n'};
	memcpy(out, sig, 12);
	out[12] = (unsigned char)(0x20 | cmd);
	out[13] = (unsigned char)fam;
	size_t len = alen + tlv;
	out[14] = (unsigned char)(len >> 8);
	out[15] = (unsigned char)len;
	memcpy(out + 16, addrs, alen);
	memset(out + 16 + alen, 0xEA, tlv);
	return 16 + len;
}

static void test_proxy_v2(void **state)
{
	(void)state;
	unsigned char b[8192];
	struct sp_ip src;
	const char *why;
	unsigned char a4[12] = {203, 0, 113, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb};
	size_t n = v2(b, 1, 0x11, a4, sizeof(a4), 0);
	assert_int_equal(parse_all(b, n, &src, &why), 28);
	assert_ip(&src, "203.0.113.7");
	/* the request that follows is not the header's */
	memcpy(b + n, "GET /", 5);
	assert_int_equal(sp_proxy_parse(b, n + 5, &src, &why), 28);
	/* TLVs (an AWS VPC endpoint id) are skipped */
	n = v2(b, 1, 0x11, a4, sizeof(a4), 40);
	assert_int_equal(parse_all(b, n, &src, &why), 68);
	assert_ip(&src, "203.0.113.7");
	unsigned char a6[36] = {0};
	inet_pton(AF_INET6, "2001:db8::7", a6);
	n = v2(b, 1, 0x21, a6, sizeof(a6), 0);
	assert_int_equal(parse_all(b, n, &src, &why), 52);
	assert_ip(&src, "2001:db8::7");
	inet_pton(AF_INET6, "::ffff:198.51.100.2", a6);
	n = v2(b, 1, 0x21, a6, sizeof(a6), 0);
	assert_int_equal(parse_all(b, n, &src, &why), 52);
	assert_int_equal(src.family, AF_INET);
	/* LOCAL (the balancer's own health check), UNSPEC, UDP and unix
	 * sockets: no address, the connection's peer stays */
	n = v2(b, 0, 0x11, a4, sizeof(a4), 0);
	assert_int_equal(parse_all(b, n, &src, &why), 28);
	assert_int_equal(src.family, 0);
	n = v2(b, 1, 0x00, a4, 0, 0);
	assert_int_equal(parse_all(b, n, &src, &why), 16);
	assert_int_equal(src.family, 0);
	n = v2(b, 1, 0x12, a4, sizeof(a4), 0);
	assert_int_equal(parse_all(b, n, &src, &why), 28);
	assert_int_equal(src.family, 0);
	n = v2(b, 1, 0x31, a6, 36, 180);
	assert_int_equal(parse_all(b, n, &src, &why), 16 + 216);
	assert_int_equal(src.family, 0);

	/* LOCAL ignores the family byte, whatever it holds */
	n = v2(b, 0, 0xff, a4, sizeof(a4), 0);
	assert_int_equal(parse_all(b, n, &src, &why), 28);
	assert_int_equal(src.family, 0);

	/* malformed */
	n = v2(b, 1, 0x11, a4, 8, 0); /* too short for two IPv4 addresses and ports */
	assert_int_equal(sp_proxy_parse(b, n, &src, &why), -1);
	assert_string_equal(why, "PROXY v2 header: too short for its addresses");
	n = v2(b, 2, 0x11, a4, sizeof(a4), 0);
	assert_int_equal(sp_proxy_parse(b, n, &src, &why), -1);
	assert_string_equal(why, "PROXY v2 header: unknown command");
	n = v2(b, 1, 0x41, a4, sizeof(a4), 0);
	assert_int_equal(sp_proxy_parse(b, n, &src, &why), -1);
	n = v2(b, 1, 0x13, a4, sizeof(a4), 0);
	assert_int_equal(sp_proxy_parse(b, n, &src, &why), -1);
	n = v2(b, 1, 0x11, a4, sizeof(a4), 0);
	b[12] = 0x11; /* version 1 in the binary form */
	assert_int_equal(sp_proxy_parse(b, n, &src, &why), -1);
	assert_string_equal(why, "PROXY v2 header: unknown version");
	/* longer than accepted: refused as soon as its length is known */
	n = v2(b, 1, 0x11, a4, sizeof(a4), 4096);
	assert_int_equal(sp_proxy_parse(b, 16, &src, &why), -1);
	assert_string_equal(why, "PROXY v2 header longer than 4096 bytes");
	n = v2(b, 1, 0x11, a4, sizeof(a4), 4096 - 16 - 12);
	assert_int_equal(parse_all(b, n, &src, &why), 4096);
	/* the signature cut short, then wrong */
	assert_int_equal(sp_proxy_parse(b, 5, &src, &why), 0);
	b[7] = 'q';
	assert_int_equal(sp_proxy_parse(b, 8, &src, &why), -1);
	assert_string_equal(why, "not a PROXY protocol header (the listener has proxy_protocol)");
	assert_int_equal(sp_proxy_parse(b, 0, &src, &why), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ip_parse),       cmocka_unit_test(test_ip_from_sockaddr),
		cmocka_unit_test(test_cidr),           cmocka_unit_test(test_xff),
		cmocka_unit_test(test_proxy_v1),       cmocka_unit_test(test_proxy_v2),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
