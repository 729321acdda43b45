/* Worker threads: each owns an event loop, its listening sockets (bound with
 * SO_REUSEPORT so the kernel spreads connections), its backend pools and its
 * sessions. Nothing here is shared between workers but the config, which is
 * immutable. */
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "log.h"
#include "shadow.h"

static int open_listener(const struct sp_listen *l)
{
	int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (l->addr.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		goto fail;
	if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0 || listen(fd, 4096) < 0)
		goto fail;
	return fd;
fail:;
	int e = errno;
	close(fd);
	errno = e;
	return -1;
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
		      int len, void *arg)
{
	(void)lev;
	sp_session_accept(arg, fd, sa, (socklen_t)len);
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
	(void)lev;
	int err = EVUTIL_SOCKET_ERROR();
	sp_log(SP_LOG_ERROR, "accept: %s", strerror(err));
	if (err == EMFILE || err == ENFILE) {
		/* Out of descriptors: pause accepting for a moment instead of
		 * spinning on a listener that stays readable. */
		struct sp_worker *w = arg;
		struct timeval tv = {0, 100000};
		for (size_t i = 0; i < w->nlisteners; i++)
			evconnlistener_disable(w->listeners[i]);
		evtimer_add(w->accept_timer, &tv);
	}
}

static void on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct sp_worker *w = arg;
	(void)fd;
	(void)what;
	for (size_t i = 0; i < w->nlisteners; i++)
		evconnlistener_enable(w->listeners[i]);
}

static void stop_accepting(struct sp_worker *w)
{
	if (w->accept_timer)
		evtimer_del(w->accept_timer);
	for (size_t i = 0; i < w->nlisteners; i++)
		if (w->listeners[i])
			evconnlistener_free(w->listeners[i]);
	w->nlisteners = 0;
}

void sp_worker_session_gone(struct sp_worker *w)
{
	w->nsessions--;
	if (w->draining && w->nsessions == 0)
		event_base_loopbreak(w->base);
}

static void on_drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct sp_worker *w = arg;
	(void)fd;
	(void)what;
	sp_log(SP_LOG_WARN, "worker %d: drain timeout, closing %zu connections", w->id,
	       w->nsessions);
	sp_sessions_kill(w);
	event_base_loopbreak(w->base);
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
	struct sp_worker *w = arg;
	(void)fd;
	(void)what;
	if (w->draining)
		return;
	w->draining = 1;
	stop_accepting(w);
	sp_sessions_drain(w);
	if (w->nsessions == 0) {
		event_base_loopbreak(w->base);
		return;
	}
	int ms = w->cfg->limits.drain_timeout_ms;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(w->drain_timer, &tv);
}

struct sp_worker *sp_worker_new(int id, struct sp_config *cfg, struct sp_accesslog *alog,
				struct sp_accesslog *difflog)
{
	struct sp_worker *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->id = id;
	w->cfg = sp_config_ref(cfg);
	w->alog = alog;
	w->difflog = difflog;
	sp_buf_init(&w->logbuf);
	sp_buf_init(&w->diffbuf);
	TAILQ_INIT(&w->sessions);
	TAILQ_INIT(&w->shadows);
	if (getrandom(&w->rng, sizeof(w->rng), 0) != sizeof(w->rng))
		w->rng = (uint64_t)getpid() * 2654435761u + (uint64_t)id;
	w->base = event_base_new();
	if (!w->base)
		goto fail;
	w->stop_ev = event_new(w->base, -1, 0, on_stop, w);
	w->drain_timer = evtimer_new(w->base, on_drain_timeout, w);
	w->accept_timer = evtimer_new(w->base, on_accept_resume, w);
	w->pools = calloc(cfg->nbackends, sizeof(*w->pools));
	w->listeners = calloc(cfg->nlisten, sizeof(*w->listeners));
	w->shadow_stats = calloc(cfg->nroutes + 1, sizeof(*w->shadow_stats));
	if (!w->shadow_stats || !w->stop_ev || !w->drain_timer || !w->accept_timer || !w->pools || !w->listeners)
		goto fail;
	for (size_t i = 0; i < cfg->nbackends; i++)
		sp_pool_init(&w->pools[i], w->base, &cfg->backends[i]);
	for (size_t i = 0; i < cfg->nlisten; i++) {
		int fd = open_listener(&cfg->listen[i]);
		if (fd < 0) {
			sp_log(SP_LOG_ERROR, "%s:%d: listen.[%zu].address: cannot listen on %s: %s",
			       cfg->file, cfg->listen[i].line, i, cfg->listen[i].address,
			       strerror(errno));
			goto fail;
		}
		w->listeners[i] = evconnlistener_new(w->base, on_accept, w, LEV_OPT_CLOSE_ON_FREE,
						     -1, fd);
		if (!w->listeners[i]) {
			close(fd);
			goto fail;
		}
		evconnlistener_set_error_cb(w->listeners[i], on_accept_error);
		w->nlisteners++;
	}
	return w;
fail:
	sp_worker_free(&w);
	return NULL;
}

static void *worker_main(void *arg)
{
	struct sp_worker *w = arg;
	event_base_dispatch(w->base);
	return NULL;
}

int sp_worker_start(struct sp_worker *w)
{
	sigset_t all, old;
	sigfillset(&all);
	/* Signals belong to the main thread. */
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&w->thread, NULL, worker_main, w);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc == 0 ? 0 : -1;
}

void sp_worker_stop(struct sp_worker *w)
{
	event_active(w->stop_ev, EV_READ, 0);
}

void sp_worker_join(struct sp_worker *w)
{
	pthread_join(w->thread, NULL);
}

void sp_worker_free(struct sp_worker **wp)
{
	struct sp_worker *w = *wp;
	if (!w)
		return;
	*wp = NULL;
	sp_sessions_kill(w);
	sp_shadow_kill_all(w);
	stop_accepting(w);
	free(w->listeners);
	if (w->pools)
		for (size_t i = 0; i < w->cfg->nbackends; i++)
			sp_pool_deinit(&w->pools[i]);
	free(w->pools);
	if (w->stop_ev)
		event_free(w->stop_ev);
	if (w->drain_timer)
		event_free(w->drain_timer);
	if (w->accept_timer)
		event_free(w->accept_timer);
	if (w->base)
		event_base_free(w->base);
	sp_buf_deinit(&w->logbuf);
	sp_buf_deinit(&w->diffbuf);
	free(w->shadow_stats);
	sp_config_unref(&w->cfg);
	free(w);
}
