/* Fuzzes proxy/realip.c, whose input comes from anyone who can connect: the
 * PROXY protocol header (sp_proxy_parse), X-Forwarded-For values
 * (sp_realip_xff) and, from the configuration, address blocks
 * (sp_cidr_parse).
 *
 * Input: byte 0 picks the mode (its value mod 3), the rest is the text.
 *  0: the PROXY header, in an allocation of its exact size (ASan sees any
 *     read past it). A whole header must be found whole again in any longer
 *     input that starts with it, and every shorter prefix must ask for more;
 *     an address it gives reads back as itself.
 *  1: X-Forwarded-For fields, one per line, behind trusted 10.0.0.0/8 and
 *     2001:db8::/32; byte 1 picks the peer (trusted or not). An untrusted
 *     peer takes nothing; what the walk ends on is the peer or an address
 *     of the text.
 *  2: a block. One that parses holds its own address and no address of the
 *     other family; its prefix fits the family. */
#include <string.h>

#include "fuzz.h"
#include "realip.h"

#define MAX_FIELDS 16

static void proxy_header(const uint8_t *p, size_t n)
{
	uint8_t *copy = malloc(n ? n : 1);
	FUZZ_CHECK(copy, "out of memory");
	memcpy(copy, p, n);
	struct sp_ip src, again;
	const char *why = NULL;
	long len = sp_proxy_parse(copy, n, &src, &why);
	FUZZ_CHECK(len >= -1 && len <= (long)n, "length %ld of %zu bytes", len, n);
	FUZZ_CHECK(len >= 0 || why, "a refusal without a reason");
	FUZZ_CHECK(len > 0 || src.family == 0, "an address without a whole header");
	if (len > 0) {
		const char *w;
		FUZZ_CHECK(sp_proxy_parse(copy, (size_t)len, &again, &w) == len &&
				   again.family == src.family && memcmp(again.a, src.a, 16) == 0,
			   "the header alone reads differently");
		for (size_t k = 0; k < (size_t)len; k += 1 + k / 8)
			FUZZ_CHECK(sp_proxy_parse(copy, k, &again, &w) == 0,
				   "a prefix of %zu bytes of a %ld-byte header is not 'more'", k, len);
		if (src.family) {
			char text[INET6_ADDRSTRLEN];
			sp_ip_text(&src, text);
			FUZZ_CHECK(sp_ip_parse(text, strlen(text), &again) == 0 &&
					   memcmp(&again, &src, sizeof(src)) == 0,
				   "%s does not read back", text);
		}
	}
	free(copy);
}

static void forwarded_for(const uint8_t *p, size_t n)
{
	static const char *const trusted_text[] = {"10.0.0.0/8", "2001:db8::/32"};
	static const char *const peers[] = {"10.1.2.3", "192.0.2.1", "2001:db8::5", "::1"};
	struct sp_cidr trusted[2];
	char buf[160];
	const char *why;
	for (int i = 0; i < 2; i++)
		FUZZ_CHECK(sp_cidr_parse(trusted_text[i], &trusted[i], buf, sizeof(buf), &why) == 0,
			   "%s", trusted_text[i]);
	if (n == 0)
		return;
	const char *peer_text = peers[p[0] % 4];
	p++, n--;
	char *text = malloc(n ? n : 1); /* exact size: reads past a field are seen */
	FUZZ_CHECK(text, "out of memory");
	memcpy(text, p, n);
	struct sp_hdr h[MAX_FIELDS];
	size_t nh = 0, at = 0;
	while (at <= n && nh < MAX_FIELDS) {
		const char *nl = memchr(text + at, '\n', n - at);
		size_t end = nl ? (size_t)(nl - text) : n;
		int other = nh % 3 == 2; /* a field between them that is not one */
		h[nh] = (struct sp_hdr){other ? "Accept" : "X-Forwarded-For", other ? 6 : 15,
					text + at, end - at};
		nh++;
		at = end + 1;
	}
	struct sp_ip peer, ip;
	FUZZ_CHECK(sp_ip_parse(peer_text, strlen(peer_text), &peer) == 0, "peer");
	ip = peer;
	int taken = sp_realip_xff(trusted, 2, h, nh, &ip);
	FUZZ_CHECK(taken >= 0, "taken %d", taken);
	if (!sp_cidr_has(trusted, 2, &peer))
		FUZZ_CHECK(taken == 0 && memcmp(&ip, &peer, sizeof(ip)) == 0,
			   "an untrusted peer was looked behind");
	FUZZ_CHECK(ip.family == AF_INET || ip.family == AF_INET6, "no address");
	if (taken == 0)
		FUZZ_CHECK(memcmp(&ip, &peer, sizeof(ip)) == 0, "moved without an entry");
	free(text);
}

static void block(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);
	FUZZ_CHECK(s, "out of memory");
	memcpy(s, p, n);
	s[n] = '\0';
	struct sp_cidr c;
	char buf[160];
	const char *why = NULL;
	if (sp_cidr_parse(s, &c, buf, sizeof(buf), &why) == 0) {
		int max = c.ip.family == AF_INET ? 32 : 128;
		FUZZ_CHECK(c.ip.family && c.bits >= 0 && c.bits <= max, "bits %d", c.bits);
		FUZZ_CHECK(sp_cidr_has(&c, 1, &c.ip), "%s does not hold its own address", s);
		struct sp_ip other = {c.ip.family == AF_INET ? AF_INET6 : AF_INET, {0}};
		memcpy(other.a, c.ip.a, 16);
		FUZZ_CHECK(!sp_cidr_has(&c, 1, &other), "%s holds another family", s);
	} else {
		FUZZ_CHECK(why && *why, "refused without a reason");
	}
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	switch (data[0] % 3) {
	case 0:
		proxy_header(data + 1, size - 1);
		break;
	case 1:
		forwarded_for(data + 1, size - 1);
		break;
	default:
		block(data + 1, size - 1);
	}
	return 0;
}
