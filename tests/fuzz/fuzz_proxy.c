/* Whole-proxy harness: client bytes and backend bytes from the input go
 * through a real worker's event loop. The client is one end of a socketpair
 * handed to the session as an accepted connection; the backend is a loopback
 * listener this harness owns, answering with the input's backend bytes.
 * Whatever the bytes, the proxy must not crash or leak, and what the client
 * receives must be a sequence of well-formed HTTP/1.1 responses (possibly cut
 * short by a close), never a fabricated success.
 *
 * Input: byte 0 = how the rest splits (client part gets (b0 * rest) / 255
 * bytes), byte 1 bit 0 = the backend closes after answering. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "config.h"
#include "fuzz.h"
#include "h1.h"
#include "worker.h"

static int backend_listener(int *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		abort();
	*port = ntohs(a.sin_port);
	return fd;
}

/* What the client must be able to parse: answers, one after another. */
static int on_head(void *ud, struct sp_h1_msg *m)
{
	(void)ud;
	FUZZ_CHECK(m->status >= 100 && m->status <= 599, "status %d sent to the client", m->status);
	return 0;
}

static int on_body(void *ud, const char *p, size_t n)
{
	(void)ud;
	(void)p;
	(void)n;
	return 0;
}

static int on_done(void *ud, struct sp_h1_msg *m)
{
	(void)ud;
	(void)m;
	return 0;
}

static const struct sp_h1_hooks client_hooks = {on_head, on_body, on_done};

static struct sp_config *config(int port)
{
	static char text[512];
	int lport, probe = backend_listener(&lport); /* a free port for the worker's listener */
	close(probe);
	struct sp_diag d;
	snprintf(text, sizeof(text),
		 "listen = ( { address = \"127.0.0.1:%d\"; } );\nworkers = 1;\nlog_level = \"error\";\n"
		 "backends = { b = { url = \"http://127.0.0.1:%d\"; connect_timeout_ms = 200;"
		 " response_timeout_ms = 200; }; };\ndefault_backend = \"b\";\n"
		 "timeouts = { client_header_ms = 200; client_body_ms = 200; };\n",
		 lport, port);
	sp_diag_init(&d);
	struct sp_config *c = sp_config_load_string(text, "fuzz.conf", &d);
	sp_diag_deinit(&d);
	return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int once;
	if (!once) {
		once = 1;
		signal(SIGPIPE, SIG_IGN);
		evthread_use_pthreads();
	}
	if (size < 2)
		return 0;
	size_t rest = size - 2;
	size_t ncl = (size_t)data[0] * rest / 255;
	const uint8_t *cl = data + 2, *be = data + 2 + ncl;
	size_t nbe = rest - ncl;
	int close_after = data[1] & 1;

	int port, lfd = backend_listener(&port), sv[2], bfd = -1;
	struct sp_config *cfg = NULL;
	struct sp_worker *w = NULL;
	/* the listener's port was free when probed; the harness's own outgoing
	 * connections (thousands a second, in TIME_WAIT) can take it meanwhile */
	for (int tries = 0; !w && tries < 20; tries++) {
		sp_config_unref(&cfg);
		cfg = config(port);
		FUZZ_CHECK(cfg, "the harness's config does not load");
		w = sp_worker_new(0, cfg, NULL, NULL);
	}
	FUZZ_CHECK(w, "no worker");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	sp_session_accept(w, sv[0], (struct sockaddr *)&peer, sizeof(peer), NULL);
	if (ncl && write(sv[1], cl, ncl) < 0)
		abort();
	shutdown(sv[1], SHUT_WR);

	static const struct sp_h1_limits limits = {65536, 1 << 20, 10000};
	struct sp_h1 *client = sp_h1_new(0, &client_hooks, NULL, &limits);
	/* answers to HEAD have no body and a tunnel after 101 is not HTTP: the
	 * client-side parse is only checked when neither can happen */
	int check = ncl && !memmem(cl, ncl, "HEAD", 4) && !memmem(cl, ncl, "pgrade", 6) &&
		    !memmem(cl, ncl, "PGRADE", 6);
	int sent = 0, parse_failed = !check;
	char buf[65536];
	for (int round = 0; round < 200; round++) {
		event_base_loop(w->base, EVLOOP_NONBLOCK);
		if (bfd < 0)
			bfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (bfd >= 0) {
			while (read(bfd, buf, sizeof(buf)) > 0)
				; /* the request the proxy sent: read and drop */
			if (!sent) {
				sent = 1;
				if (nbe && write(bfd, be, nbe) < 0 && errno != EAGAIN)
					close_after = 1;
				if (close_after)
					shutdown(bfd, SHUT_WR);
			}
		}
		ssize_t n;
		while ((n = read(sv[1], buf, sizeof(buf))) > 0) {
			size_t used = 0;
			/* what the proxy wrote must parse as responses */
			if (!parse_failed && sp_h1_execute(client, buf, (size_t)n, &used) == SP_H1_ERROR) {
				parse_failed = 1;
				FUZZ_CHECK(0, "the client cannot parse the proxy's answer: %s",
					   sp_h1_error_reason(client));
			}
		}
		if (n == 0)
			break; /* the proxy closed the client connection */
		if (w->nsessions == 0)
			break;
		usleep(100);
	}
	sp_h1_free(&client);
	if (bfd >= 0)
		close(bfd);
	close(lfd);
	close(sv[1]);
	sp_worker_free(&w);
	sp_config_unref(&cfg);
	return 0;
}
