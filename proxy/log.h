/* Process-wide diagnostics to stderr, filtered by the configured log level. */
#ifndef SP_LOG_H
#define SP_LOG_H

enum sp_log_level { SP_LOG_DEBUG, SP_LOG_INFO, SP_LOG_WARN, SP_LOG_ERROR };

/* Level names accepted by the config's log_level: "debug", "info", "warn", "error".
 * Returns -1 for an unknown name. */
int sp_log_level_parse(const char *name);
void sp_log_set_level(enum sp_log_level level);
int sp_log_enabled(enum sp_log_level level);

__attribute__((format(printf, 2, 3))) void sp_log(enum sp_log_level level, const char *fmt, ...);

/* Writes to a descriptor that is not a regular file (a pipe, a terminal: how
 * docker, kubectl or `| tee` collect stderr) hold one process-wide lock:
 * there a write of more than PIPE_BUF bytes may be split, and another
 * thread's write may land between its parts. sp_log takes it for stderr, the
 * access and diff logs for theirs. A regular file needs none: each write(2)
 * lands whole. */
int sp_log_fd_needs_lock(int fd);
void sp_log_lock(void);
void sp_log_unlock(void);

#define sp_debug(...) do { if (sp_log_enabled(SP_LOG_DEBUG)) sp_log(SP_LOG_DEBUG, __VA_ARGS__); } while (0)
#define sp_info(...) sp_log(SP_LOG_INFO, __VA_ARGS__)
#define sp_warn(...) sp_log(SP_LOG_WARN, __VA_ARGS__)
#define sp_error(...) sp_log(SP_LOG_ERROR, __VA_ARGS__)

#endif
