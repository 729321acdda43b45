/* A resolver for the config fuzzers: numeric addresses, "localhost" and
 * "two.test" (127.0.0.1 then 127.0.0.2: a name with several addresses) only,
 * without touching DNS, /etc/hosts or the network, so fuzzed host names cost
 * nothing and every run gives the same answer. It replaces libc's
 * getaddrinfo/freeaddrinfo for the whole executable (a definition in the
 * program wins over the shared library's and over the sanitizers' weak
 * interceptors). */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct fake_ai {
	struct addrinfo ai;
	struct sockaddr_storage ss;
};

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		struct addrinfo **res)
{
	struct sockaddr_in v4 = {.sin_family = AF_INET};
	struct sockaddr_in6 v6 = {.sin6_family = AF_INET6};
	int family = hints ? hints->ai_family : AF_UNSPEC;
	char *end;
	long port = service ? strtol(service, &end, 10) : 0;

	if (service && (*end || port < 0 || port > 65535))
		return EAI_SERVICE;
	*res = NULL;
	if (!node)
		node = hints && (hints->ai_flags & AI_PASSIVE) ? "0.0.0.0" : "127.0.0.1";
	else if (strcmp(node, "localhost") == 0)
		node = "127.0.0.1";
	int two = strcmp(node, "two.test") == 0;
	if (two)
		node = "127.0.0.1";

	struct fake_ai *f = calloc(1, sizeof(*f));
	if (!f)
		return EAI_MEMORY;
	if (family != AF_INET6 && inet_pton(AF_INET, node, &v4.sin_addr) == 1) {
		v4.sin_port = htons((uint16_t)port);
		memcpy(&f->ss, &v4, sizeof(v4));
		f->ai.ai_family = AF_INET;
		f->ai.ai_addrlen = sizeof(v4);
	} else if (family != AF_INET && inet_pton(AF_INET6, node, &v6.sin6_addr) == 1) {
		v6.sin6_port = htons((uint16_t)port);
		memcpy(&f->ss, &v6, sizeof(v6));
		f->ai.ai_family = AF_INET6;
		f->ai.ai_addrlen = sizeof(v6);
	} else {
		free(f);
		return EAI_NONAME;
	}
	f->ai.ai_socktype = hints && hints->ai_socktype ? hints->ai_socktype : SOCK_STREAM;
	f->ai.ai_protocol = IPPROTO_TCP;
	f->ai.ai_addr = (struct sockaddr *)&f->ss;
	if (two) {
		struct addrinfo *next = NULL;
		int rc = getaddrinfo("127.0.0.2", service, hints, &next);
		if (rc != 0) {
			free(f);
			return rc;
		}
		f->ai.ai_next = next;
	}
	*res = &f->ai;
	return 0;
}

void freeaddrinfo(struct addrinfo *ai)
{
	/* each is the first member of a block getaddrinfo allocated */
	while (ai) {
		struct addrinfo *next = ai->ai_next;
		free(ai);
		ai = next;
	}
}
