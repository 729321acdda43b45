/* The access log: one JSON object per line, each line written whole. */
#ifndef SP_ACCESSLOG_H
#define SP_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

struct sp_accesslog;

/* path: a file (appended to, created 0640) or "-" for stderr; name ("access",
 * "diff", borrowed: a literal) labels its messages and metric. NULL on error
 * with errno set. */
struct sp_accesslog *sp_accesslog_open(const char *path, const char *name);
void sp_accesslog_close(struct sp_accesslog **log);
/* Reopens the file (after logrotate moved it). Returns 0 or -1 with errno. */
int sp_accesslog_reopen(struct sp_accesslog *log);
const char *sp_accesslog_name(const struct sp_accesslog *log);
/* Before the process switches to `user` (uid, gid): the file becomes the
 * user's, so that a reopen can append to it. */
void sp_accesslog_give(struct sp_accesslog *log, uid_t uid, gid_t gid, const char *user);
/* After the switch: warns when the file's directory is not writable, where a
 * reopen after a rotation could not create the file. */
void sp_accesslog_check_reopen(const struct sp_accesslog *log, const char *user);
/* Lines not written whole (a full disk, a closed pipe) since start; any thread. */
uint64_t sp_accesslog_dropped(struct sp_accesslog *log);

/* A server a request left for another of its backend (SP_ACCESS_TRIES of
 * them are kept): its answer's status (retry_on_status), or its failure. */
#define SP_ACCESS_TRIES 8
struct sp_access_try {
	const char *server; /* "host:port" */
	int status;         /* 0: failed so (error) */
	const char *error;
};

struct sp_access_entry {
	const char *client;
	const char *peer; /* the proxy the client's address came through, or NULL */
	const char *method;
	const char *path;
	size_t path_len;
	int status;
	const char *route;   /* NULL: default backend */
	const char *backend; /* NULL: answered by the proxy */
	const char *server;  /* the backend's server ("host:port"), NULL: none tried */
	int has_bucket;
	uint32_t bucket;
	double upstream_ms;  /* < 0: no upstream exchange */
	int queued;          /* it waited for a connection slot (backends.NAME.queue) */
	double queue_ms;     /* how long */
	double total_ms;
	uint64_t bytes_in;
	uint64_t bytes_out;
	const char *request_id;
	const char *error;   /* NULL when none */
	const char *fallback_from; /* the backend avoided (down or refused), or NULL */
	const struct sp_access_try *tries; /* the servers left, in order (ntries: none) */
	size_t ntries;
	int log_query;       /* write "query" (log_query = true) */
	const char *query;   /* the query string as received; NULL: the target had no '?' */
	size_t query_len;
};

/* Formats e into line (reset first). Pure, for tests. */
int sp_access_format(const struct sp_access_entry *e, struct sp_buf *line);
/* Formats and writes; scratch is the caller's reusable buffer. */
void sp_accesslog_write(struct sp_accesslog *log, const struct sp_access_entry *e,
			struct sp_buf *scratch);

/* Appends {"time":"2026-11-27T15:40:00.123Z" for now, as each log line
 * begins (the date and time formatted once a second per thread). */
int sp_accesslog_add_time(struct sp_buf *b);

/* Appends a ready line (it must end with '\n') whole, or counts it dropped.
 * The diff log uses the same file handling. */
void sp_accesslog_write_raw(struct sp_accesslog *log, const char *line, size_t len);

#endif
