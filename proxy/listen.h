/* Listeners that accept() cannot serve for want of local resources
 * (descriptors, memory): the pending connection stays queued, the listener
 * stays readable, and libevent would call accept() again at once, a core at
 * full speed and a log line each time. Shared by the workers' listeners and
 * the admin's. */
#ifndef SP_LISTEN_H
#define SP_LISTEN_H

#include <event2/event.h>
#include <stdint.h>

/* How long accepting stops after such a failure. */
#define SP_ACCEPT_PAUSE_MS 100

struct sp_accept_pause {
	struct event *timer; /* runs the owner's resume callback */
	char who[24];        /* "worker 1", "admin": names the log line */
	int64_t logged_at;   /* µs (sp_deadline_now_us) of the last line; 0: none */
	unsigned long quiet; /* pauses since that line */
};

/* resume(arg) runs SP_ACCEPT_PAUSE_MS after each pause: the owner enables
 * its listeners again (unless it has reasons of its own to keep them off).
 * Returns -1 when the timer cannot be had. */
int sp_accept_pause_init(struct sp_accept_pause *p, struct event_base *base, const char *who,
			 event_callback_fn resume, void *arg);
void sp_accept_pause_deinit(struct sp_accept_pause *p);

/* For a listener's error callback (evconnlistener_set_error_cb): logs the
 * failure, and when it is a local shortage (sp_err_local) starts a pause and
 * returns 1: the caller then disables its listeners. During a shortage that
 * lasts, one line per 10 s says how many pauses there were. */
int sp_accept_failed(struct sp_accept_pause *p);

/* Cancels a pending resume (the listeners are going away). */
void sp_accept_pause_cancel(struct sp_accept_pause *p);

#endif
