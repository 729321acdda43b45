/* Pausing listeners that accept() cannot serve (see listen.h). */
#include "listen.h"

#include <stdio.h>
#include <string.h>

#include "clock.h"
#include "conn.h"
#include "log.h"

/* A lasting shortage is said once per this many µs, not once per pause. */
#define ACCEPT_LOG_EVERY_US (10 * 1000000)

int sp_accept_pause_init(struct sp_accept_pause *p, struct event_base *base, const char *who,
			 event_callback_fn resume, void *arg)
{
	memset(p, 0, sizeof(*p));
	snprintf(p->who, sizeof(p->who), "%s", who);
	p->timer = evtimer_new(base, resume, arg);
	return p->timer ? 0 : -1;
}

void sp_accept_pause_deinit(struct sp_accept_pause *p)
{
	if (p->timer)
		event_free(p->timer);
	p->timer = NULL;
}

void sp_accept_pause_cancel(struct sp_accept_pause *p)
{
	if (p->timer)
		evtimer_del(p->timer);
}

int sp_accept_failed(struct sp_accept_pause *p)
{
	int err = EVUTIL_SOCKET_ERROR();
	if (!sp_err_local(err)) {
		/* that connection is gone (EPROTO, EPERM...): nothing to spin on */
		sp_log(SP_LOG_ERROR, "%s: accept: %s", p->who, strerror(err));
		return 0;
	}
	int64_t now = sp_deadline_now_us();
	if (!p->logged_at || now - p->logged_at >= ACCEPT_LOG_EVERY_US) {
		if (p->quiet)
			sp_log(SP_LOG_ERROR,
			       "%s: accept: %s: accepting paused for %d ms (%lu pauses since the "
			       "last line)",
			       p->who, strerror(err), SP_ACCEPT_PAUSE_MS, p->quiet);
		else
			sp_log(SP_LOG_ERROR, "%s: accept: %s: accepting paused for %d ms", p->who,
			       strerror(err), SP_ACCEPT_PAUSE_MS);
		p->logged_at = now;
		p->quiet = 0;
	} else {
		p->quiet++;
	}
	struct timeval tv = sp_tv_ms(SP_ACCEPT_PAUSE_MS);
	if (p->timer)
		evtimer_add(p->timer, &tv);
	return 1;
}
