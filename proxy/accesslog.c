/* Access log lines. Each worker formats into its own buffer and appends the
 * finished line with one write(2) on an O_APPEND descriptor, so lines from
 * several threads never interleave. */
#include "accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

struct sp_accesslog {
	int fd;
	int owned;
	char *path;
};

struct sp_accesslog *sp_accesslog_open(const char *path)
{
	struct sp_accesslog *log = calloc(1, sizeof(*log));
	if (!log)
		return NULL;
	if (strcmp(path, "-") == 0) {
		log->fd = STDERR_FILENO;
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

static int add_str_field(struct sp_buf *b, const char *key, const char *v, size_t len)
{
	if (sp_buf_printf(b, ",\"%s\":", key))
		return -1;
	if (!v)
		return sp_buf_adds(b, "null");
	return sp_buf_addc(b, '"') || sp_buf_add_json_str(b, v, len) || sp_buf_addc(b, '"');
}

int sp_access_format(const struct sp_access_entry *e, struct sp_buf *b)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	sp_buf_reset(b);
	if (sp_buf_printf(b, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\"",
			  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			  tm.tm_sec, ts.tv_nsec / 1000000))
		return -1;
	if (add_str_field(b, "client", e->client, e->client ? strlen(e->client) : 0) ||
	    add_str_field(b, "method", e->method, e->method ? strlen(e->method) : 0) ||
	    add_str_field(b, "path", e->path, e->path_len) ||
	    sp_buf_printf(b, ",\"status\":%d", e->status) ||
	    add_str_field(b, "route", e->route, e->route ? strlen(e->route) : 0) ||
	    add_str_field(b, "backend", e->backend, e->backend ? strlen(e->backend) : 0))
		return -1;
	if (e->has_bucket ? sp_buf_printf(b, ",\"bucket\":%u", e->bucket)
			  : sp_buf_adds(b, ",\"bucket\":null"))
		return -1;
	if (e->upstream_ms >= 0 ? sp_buf_printf(b, ",\"upstream_ms\":%.3f", e->upstream_ms)
				: sp_buf_adds(b, ",\"upstream_ms\":null"))
		return -1;
	if (sp_buf_printf(b, ",\"total_ms\":%.3f,\"bytes_in\":%llu,\"bytes_out\":%llu", e->total_ms,
			  (unsigned long long)e->bytes_in, (unsigned long long)e->bytes_out) ||
	    add_str_field(b, "request_id", e->request_id,
			  e->request_id ? strlen(e->request_id) : 0))
		return -1;
	if (e->error && add_str_field(b, "error", e->error, strlen(e->error)))
		return -1;
	if (e->fallback_from &&
	    add_str_field(b, "fallback_from", e->fallback_from, strlen(e->fallback_from)))
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

void sp_accesslog_write_raw(struct sp_accesslog *log, const char *p, size_t left)
{
	if (!log)
		return;
	while (left > 0) {
		ssize_t n = write(log->fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* a full disk must not stop the proxy */
		p += n;
		left -= (size_t)n;
	}
}
