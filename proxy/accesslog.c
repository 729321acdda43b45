/* Access log lines. Each worker formats into its own buffer and appends the
 * finished line whole, so lines from several threads never interleave: with
 * one write(2) on a regular file (O_APPEND), under the process-wide log lock
 * otherwise (a pipe takes only PIPE_BUF bytes in one piece). A line that
 * cannot be written whole (a full disk) is counted, reported now and then,
 * and never leaves a fragment for the next line to be glued to. */
#include "accesslog.h"

#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"

#define REPORT_EVERY_S 10 /* at most one message per log about dropped lines */

struct sp_accesslog {
	int fd;
	int owned;
	char *path;
	const char *name;            /* "access", "diff": in messages and metrics */
	_Atomic int locked;          /* fd is not a regular file: writes hold the log lock */
	_Atomic int torn;            /* a line was cut short: the next one starts with '\n' */
	_Atomic uint64_t dropped;    /* lines not written whole, since start */
	_Atomic uint64_t reported;   /* of those, the ones already in a message */
	_Atomic int64_t next_report; /* CLOCK_MONOTONIC second of the next message */
};

struct sp_accesslog *sp_accesslog_open(const char *path, const char *name)
{
	struct sp_accesslog *log = calloc(1, sizeof(*log));
	if (!log)
		return NULL;
	log->name = name;
	if (strcmp(path, "-") == 0) {
		log->fd = STDERR_FILENO;
		log->locked = sp_log_fd_needs_lock(log->fd);
		return log;
	}
	log->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (log->fd < 0) {
		int e = errno;
		free(log);
		errno = e;
		return NULL;
	}
	log->owned = 1;
	log->locked = sp_log_fd_needs_lock(log->fd); /* a FIFO, /dev/stdout */
	log->path = strdup(path);
	return log;
}

int sp_accesslog_reopen(struct sp_accesslog *log)
{
	if (!log || !log->owned)
		return 0;
	int fd = open(log->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	/* dup2 swaps the file under the same descriptor number, so workers
	 * writing concurrently need no lock: each write goes to one file. */
	int rc = dup3(fd, log->fd, O_CLOEXEC) < 0 ? -1 : 0;
	close(fd);
	if (rc == 0) {
		atomic_store_explicit(&log->locked, sp_log_fd_needs_lock(log->fd),
				      memory_order_relaxed);
		atomic_store_explicit(&log->torn, 0, memory_order_relaxed); /* a new file */
	}
	return rc;
}

void sp_accesslog_close(struct sp_accesslog **lp)
{
	struct sp_accesslog *log = *lp;
	if (!log)
		return;
	*lp = NULL;
	if (log->owned)
		close(log->fd);
	free(log->path);
	free(log);
}

void sp_accesslog_give(struct sp_accesslog *log, uid_t uid, gid_t gid, const char *user)
{
	if (log && log->owned && fchown(log->fd, uid, gid) < 0)
		sp_log(SP_LOG_WARN, "%s log: cannot give %s to user %s: %s", log->name, log->path, user,
		       strerror(errno));
}

void sp_accesslog_check_reopen(const struct sp_accesslog *log, const char *user)
{
	if (!log || !log->path)
		return;
	char copy[4096];
	snprintf(copy, sizeof(copy), "%s", log->path);
	const char *dir = dirname(copy); /* dirname(3) may write into its argument */
	if (access(dir, W_OK | X_OK) >= 0)
		return;
	/* the user's own group, which logrotate's "create" needs by name
	 * (Debian's nobody is in nogroup) */
	struct group *gr = getgrgid(getegid());
	char gid[24];
	snprintf(gid, sizeof(gid), "%u", (unsigned)getegid());
	sp_log(SP_LOG_WARN,
	       "%s log: directory %s is not writable by user %s: after a rotation, SIGUSR1 "
	       "can only reopen a file made for it (logrotate: create 0640 %s %s)",
	       log->name, dir, user, user, gr ? gr->gr_name : gid);
}

const char *sp_accesslog_name(const struct sp_accesslog *log)
{
	return log->name;
}

uint64_t sp_accesslog_dropped(struct sp_accesslog *log)
{
	return atomic_load_explicit(&log->dropped, memory_order_relaxed);
}

/* The date and time are written once a second per thread (each worker's
 * lines), the milliseconds for each line. */
int sp_accesslog_add_time(struct sp_buf *b)
{
	static _Thread_local struct {
		long long sec;
		char text[SP_UTC_SIZE];
		size_t len; /* up to and with the '.' */
	} t = {-1, "", 0};
	long long ms = sp_unix_ms();
	if (ms / 1000 != t.sec) {
		sp_utc_stamp(t.text, ms);
		t.sec = ms / 1000;
		t.len = strlen(t.text) - 4;
	}
	char tail[5] = {(char)('0' + ms % 1000 / 100), (char)('0' + ms % 100 / 10),
			(char)('0' + ms % 10), 'Z', '"'};
	return sp_buf_adds(b, "{\"time\":\"") || sp_buf_add(b, t.text, t.len) ||
	       sp_buf_add(b, tail, sizeof(tail));
}

/* ,"retried_from":[{"server":"10.0.0.1:9001","status":503},
 * {"server":"10.0.0.2:9001","error":"connect refused"}] */
static int add_tries(struct sp_buf *b, const struct sp_access_try *t, size_t n)
{
	if (sp_buf_adds(b, ",\"retried_from\":["))
		return -1;
	for (size_t i = 0; i < n; i++) {
		int rc = sp_buf_adds(b, i ? ",{\"server\":\"" : "{\"server\":\"") ||
			 sp_buf_add_json_text(b, t[i].server, strlen(t[i].server)) ||
			 sp_buf_addc(b, '"');
		if (!rc && t[i].status)
			rc = sp_buf_adds(b, ",\"status\":") ||
			     sp_buf_add_uint(b, (unsigned)t[i].status, 10);
		else if (!rc)
			rc = sp_buf_add_json_field(b, "error", t[i].error, strlen(t[i].error));
		if (rc || sp_buf_addc(b, '}'))
			return -1;
	}
	return sp_buf_addc(b, ']');
}

int sp_access_format(const struct sp_access_entry *e, struct sp_buf *b)
{
	sp_buf_reset(b);
	if (sp_accesslog_add_time(b))
		return -1;
	if (sp_buf_add_json_field(b, "client", e->client, e->client ? strlen(e->client) : 0) ||
	    (e->peer && sp_buf_add_json_field(b, "peer", e->peer, strlen(e->peer))) ||
	    sp_buf_add_json_field(b, "method", e->method, e->method ? strlen(e->method) : 0) ||
	    sp_buf_add_json_field(b, "path", e->path, e->path_len) ||
	    (e->log_query && sp_buf_add_json_field(b, "query", e->query, e->query_len)) ||
	    sp_buf_adds(b, ",\"status\":") || sp_buf_add_uint(b, (unsigned)e->status, 10) ||
	    sp_buf_add_json_text_field(b, "route", e->route) ||
	    sp_buf_add_json_field(b, "backend", e->backend, e->backend ? strlen(e->backend) : 0) ||
	    sp_buf_add_json_text_field(b, "server", e->server))
		return -1;
	if (e->has_bucket ? sp_buf_adds(b, ",\"bucket\":") || sp_buf_add_uint(b, e->bucket, 10)
			  : sp_buf_adds(b, ",\"bucket\":null"))
		return -1;
	if (e->upstream_ms >= 0
		    ? sp_buf_adds(b, ",\"upstream_ms\":") || sp_buf_add_fixed3(b, e->upstream_ms)
		    : sp_buf_adds(b, ",\"upstream_ms\":null"))
		return -1;
	if (sp_buf_adds(b, ",\"total_ms\":") || sp_buf_add_fixed3(b, e->total_ms) ||
	    sp_buf_adds(b, ",\"bytes_in\":") || sp_buf_add_uint(b, e->bytes_in, 10) ||
	    sp_buf_adds(b, ",\"bytes_out\":") || sp_buf_add_uint(b, e->bytes_out, 10) ||
	    sp_buf_add_json_field(b, "request_id", e->request_id,
			  e->request_id ? strlen(e->request_id) : 0))
		return -1;
	if (e->error && sp_buf_add_json_field(b, "error", e->error, strlen(e->error)))
		return -1;
	if (e->fallback_from &&
	    sp_buf_add_json_field(b, "fallback_from", e->fallback_from, strlen(e->fallback_from)))
		return -1;
	if (e->queued &&
	    (sp_buf_adds(b, ",\"queue_ms\":") || sp_buf_add_fixed3(b, e->queue_ms)))
		return -1;
	if (e->ntries && add_tries(b, e->tries, e->ntries))
		return -1;
	return sp_buf_adds(b, "}\n");
}

void sp_accesslog_write(struct sp_accesslog *log, const struct sp_access_entry *e,
			struct sp_buf *scratch)
{
	if (!log || sp_access_format(e, scratch) < 0)
		return;
	sp_accesslog_write_raw(log, scratch->data, scratch->len);
}

/* Bytes of p written to fd (all len, or fewer with errno set). */
static size_t write_all(int fd, const char *p, size_t len)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = write(fd, p + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			break;
		}
		done += (size_t)n;
	}
	return done;
}

/* 0 once the line is in the file whole, or -1 with errno. After a line cut
 * short, the next one starts with '\n': the fragment stays an invalid line
 * of its own instead of spoiling a good one. */
static int write_line(struct sp_accesslog *log, const char *p, size_t len)
{
	if (atomic_load_explicit(&log->torn, memory_order_relaxed) &&
	    atomic_exchange_explicit(&log->torn, 0, memory_order_relaxed) &&
	    write_all(log->fd, "\n", 1) < 1) {
		atomic_store_explicit(&log->torn, 1, memory_order_relaxed);
		return -1;
	}
	size_t n = write_all(log->fd, p, len);
	if (n == len)
		return 0;
	if (n > 0)
		atomic_store_explicit(&log->torn, 1, memory_order_relaxed);
	return -1;
}

/* Counts a dropped line and says so, at most every REPORT_EVERY_S seconds
 * per log: a full disk must neither stop the proxy nor flood stderr. */
static void note_dropped(struct sp_accesslog *log, int err)
{
	uint64_t total = atomic_fetch_add_explicit(&log->dropped, 1, memory_order_relaxed) + 1;
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	int64_t next = atomic_load_explicit(&log->next_report, memory_order_relaxed);
	if (now.tv_sec < next ||
	    !atomic_compare_exchange_strong_explicit(&log->next_report, &next,
						     now.tv_sec + REPORT_EVERY_S,
						     memory_order_relaxed, memory_order_relaxed))
		return; /* reported recently, or another thread reports now */
	uint64_t before = atomic_exchange_explicit(&log->reported, total, memory_order_relaxed);
	sp_log(SP_LOG_ERROR,
	       "%s log: cannot write to %s: %s; %llu line(s) dropped since the last report, "
	       "%llu in all (metric strangler_log_lines_dropped_total)",
	       log->name, log->path ? log->path : "stderr", strerror(err),
	       (unsigned long long)(total > before ? total - before : 0),
	       (unsigned long long)total);
}

void sp_accesslog_write_raw(struct sp_accesslog *log, const char *p, size_t len)
{
	if (!log)
		return;
	int locked = atomic_load_explicit(&log->locked, memory_order_relaxed);
	if (locked)
		sp_log_lock();
	int rc = write_line(log, p, len);
	int err = errno;
	if (locked)
		sp_log_unlock(); /* before note_dropped: sp_log may take the lock */
	if (rc < 0)
		note_dropped(log, err);
}
