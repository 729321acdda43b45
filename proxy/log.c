/* Process-wide diagnostics: one line per event, written with a single write(2)
 * (under the log lock when stderr is a pipe) so lines from different workers,
 * and the access log's when it also goes to stderr, never interleave. */
#include "log.h"

#include "clock.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The level is set once at start-up and on reload; an atomic keeps readers in
 * worker threads well-defined. */
static _Atomic int log_level = SP_LOG_INFO;

/* -1 until the first line: then whether stderr needs the log lock. */
static _Atomic int stderr_locked = -1;
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int sp_log_level_parse(const char *name)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(name, level_names[i]) == 0)
			return i;
	return -1;
}

void sp_log_set_level(enum sp_log_level level)
{
	atomic_store(&log_level, (int)level);
}

int sp_log_enabled(enum sp_log_level level)
{
	return (int)level >= atomic_load(&log_level);
}

void sp_log(enum sp_log_level level, const char *fmt, ...)
{
	if (!sp_log_enabled(level))
		return;
	char line[2048];
	char now[SP_UTC_SIZE];
	sp_utc_stamp(now, sp_unix_ms());
	int n = snprintf(line, sizeof(line), "%s [%s] ", now, level_names[level]);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	int locked = atomic_load_explicit(&stderr_locked, memory_order_relaxed);
	if (locked < 0) {
		locked = sp_log_fd_needs_lock(STDERR_FILENO);
		atomic_store_explicit(&stderr_locked, locked, memory_order_relaxed);
	}
	if (locked)
		sp_log_lock();
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
	if (locked)
		sp_log_unlock();
}

int sp_log_fd_needs_lock(int fd)
{
	struct stat st;
	return fstat(fd, &st) < 0 || !S_ISREG(st.st_mode);
}

void sp_log_lock(void)
{
	pthread_mutex_lock(&write_lock);
}

void sp_log_unlock(void)
{
	pthread_mutex_unlock(&write_lock);
}
