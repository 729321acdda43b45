/* strangler: command line, start-up, signals. The proxy itself lives in the
 * workers; the main thread only waits for signals. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libconfig.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <pwd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "accesslog.h"
#include "admin.h"
#include "clock.h"
#include "comparer.h"
#include "config.h"
#include "diffreport.h"
#include "explain.h"
#include "guard.h"
#include "h1.h"
#include "log.h"
#include "override.h"
#include "shadow.h"
#include "runtime.h"
#include "worker.h"

#define DEFAULT_CONF "conf/strangler.conf"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: strangler [-c FILE] [-t] [-V|--version] [-h|--help]\n"
		"       strangler explain [-c FILE] [-H 'Name: value']... [--client-ip ADDR] METHOD TARGET\n"
		"       strangler diff-report FILE... [--route NAME]\n"
		"\n"
		"  -c FILE   configuration file (default " DEFAULT_CONF ")\n"
		"  -t        check the configuration (and that the logs and pid file can be opened\n"
		"            for writing), print every problem as FILE:LINE: setting: reason,\n"
		"            and exit (1 on any error, 0 otherwise)\n"
		"  -V, --version  print the version of strangler and of its libraries\n"
		"  -h, --help     this help (explain -h and diff-report -h: theirs)\n"
		"\n"
		"  explain   print the route, sticky key, bucket and backend a request would get,\n"
		"            the path that backend is sent (path_rewrite) and the header fields\n"
		"            it changes, by name, or the answer of a route that answers itself\n"
		"            (return), without sending anything\n"
		"  diff-report  summarise shadow diff logs (several files or - read as one) per route\n"
		"            and direction (primary -> shadow backend): the differing share, the top\n"
		"            differing fields with example request ids, the latency of both sides\n"
		"\n"
		"Signals: SIGTERM/SIGINT/SIGQUIT stop accepting and finish requests in flight\n"
		"(up to drain_timeout_ms); SIGHUP reloads the configuration (checked whole first;\n"
		"on any error the running one stays); SIGUSR1 reopens the access and diff logs.\n"
		"Documentation: strangler(8), docs/configuration.md, docs/operations.md,\n"
		"docs/migration.md, docs/security.md.\n");
}

static void version(void)
{
	printf("strangler %s\n", SP_VERSION);
	printf("libevent %s\n", event_get_version());
	printf("llhttp %s\n", sp_h1_version());
	printf("%s\n", OpenSSL_version(OPENSSL_VERSION));
	printf("libconfig %d.%d.%d\n", LIBCONFIG_VER_MAJOR, LIBCONFIG_VER_MINOR, LIBCONFIG_VER_REVISION);
	printf("jansson %s\n", jansson_version_str());
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
	struct sp_runtime *rt = arg;
	(void)what;
	sp_log(SP_LOG_INFO, "%s: stopping; finishing requests in flight", strsignal((int)sig));
	if (rt->stopping)
		return;
	rt->stopping = 1;
	for (int i = 0; i < rt->nworkers; i++)
		sp_worker_stop(rt->workers[i]);
	/* the main loop (admin API: /readyz says 503 now) runs until the
	 * workers have drained */
	struct timeval tv = {0, 50000};
	event_add(rt->stop_poll, &tv);
}

static void on_stop_poll(evutil_socket_t fd, short what, void *arg)
{
	struct sp_runtime *rt = arg;
	(void)fd;
	(void)what;
	for (int i = 0; i < rt->nworkers; i++)
		if (!sp_worker_finished(rt->workers[i]))
			return;
	event_base_loopbreak(rt->base);
}

static void on_other_signal(evutil_socket_t sig, short what, void *arg)
{
	struct sp_runtime *rt = arg;
	(void)what;
	if (sig == SIGHUP && rt->stopping) {
		/* what runs next is the replacing process's to load */
		sp_log(SP_LOG_WARN, "SIGHUP: stopping: no reload (send it to the process that "
		       "replaces this one)");
		return;
	}
	if (sig == SIGHUP) {
		struct sp_diag diag;
		sp_diag_init(&diag);
		sp_runtime_reload(rt, &diag);
		sp_diag_deinit(&diag);
		return;
	}
	int ok = 1;
	if (rt->alog && sp_accesslog_reopen(rt->alog) < 0) {
		sp_log(SP_LOG_ERROR, "SIGUSR1: cannot reopen the access log: %s", strerror(errno));
		ok = 0;
	}
	if (rt->difflog && sp_accesslog_reopen(rt->difflog) < 0) {
		sp_log(SP_LOG_ERROR, "SIGUSR1: cannot reopen the diff log: %s", strerror(errno));
		ok = 0;
	}
	if (ok)
		sp_log(SP_LOG_INFO, "SIGUSR1: logs reopened");
}

/* Per-route shadow counters, summed over the workers, go to the diff log
 * now and then, so `strangler diff-report` knows the identical share too. */
static void on_summary_timer(evutil_socket_t fd, short what, void *arg)
{
	struct sp_runtime *rt = arg;
	(void)fd;
	(void)what;
	sp_shadow_write_summaries(rt->cfg, NULL, rt->workers, rt->nworkers, rt->difflog, rt->instance);
}

/* Every connection is a descriptor (two when proxied): use what the hard
 * limit allows, as nginx's worker_rlimit_nofile would. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* Memory freed after a crowd of connections leaves goes back to the
 * system (sp_runtime_trim_due). */
static void trim_memory(struct sp_runtime *rt)
{
	size_t open = 0, peak = 0;
	for (int i = 0; i < rt->nworkers; i++) {
		struct sp_worker *w = rt->workers[i];
		size_t now = atomic_load_explicit(&w->nsessions, memory_order_relaxed);
		open += now;
		peak += atomic_exchange_explicit(&w->peak_sessions, now, memory_order_relaxed);
	}
#ifdef __GLIBC__
	if (sp_runtime_trim_due(rt, open, peak))
		malloc_trim(0);
#endif
}

static void on_guard_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	struct sp_runtime *rt = arg;
	trim_memory(rt);
	/* a stopping process's guards judge no more: the exchanges it finishes
	 * are a remainder, and the replacing process owns the state file */
	if (rt->stopping)
		return;
	sp_runtime_retry_state(rt);
	sp_guards_tick(rt, rt->guards);
}

/* After the sockets are bound and the files opened: run as `user`. */
/* The logs, opened as root, become the user's: SIGUSR1 reopens them as it. */
static int drop_privileges(const char *user, struct sp_accesslog *logs[2])
{
	struct passwd *pw = getpwnam(user);
	if (geteuid() != 0) {
		sp_log(SP_LOG_WARN, "user: not started as root; staying %ld", (long)geteuid());
		return 0;
	}
	for (int i = 0; pw && i < 2; i++)
		sp_accesslog_give(logs[i], pw->pw_uid, pw->pw_gid, user);
	if (!pw || initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
	    setuid(pw->pw_uid) < 0) {
		sp_log(SP_LOG_ERROR, "user: cannot switch to %s: %s", user,
		       pw ? strerror(errno) : "no such user");
		return -1;
	}
	sp_log(SP_LOG_INFO, "running as user %s", user);
	for (int i = 0; i < 2; i++)
		sp_accesslog_check_reopen(logs[i], user);
	return 0;
}

/* host:pid:start, unique to this process: summary lines carry it, so that
 * diff-report can total the logs of several instances read together. */
static void name_instance(char *buf, size_t len)
{
	char host[64] = "";
	gethostname(host, sizeof(host) - 1);
	snprintf(buf, len, "%s:%ld:%lld", host, (long)getpid(), (long long)time(NULL));
}

/* Only while it still holds this process's id: a replacement started
 * during the drain has written its own. */
static void remove_pid_file(const char *path)
{
	char buf[32] = "";
	FILE *f = fopen(path, "r");
	if (!f)
		return;
	int ours = fgets(buf, sizeof(buf), f) && strtol(buf, NULL, 10) == (long)getpid();
	fclose(f);
	if (ours)
		unlink(path);
}

static int write_pid_file(const char *path)
{
	FILE *f = fopen(path, "w");
	if (!f || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0) {
		sp_log(SP_LOG_ERROR, "pid_file: cannot write %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int check_config(const char *file)
{
	struct sp_diag diag;
	sp_diag_init(&diag);
	struct sp_config *c = sp_config_load(file, &diag);
	if (c) { /* what runs is the file with the runtime changes saved beside it */
		struct sp_config *saved = sp_state_apply_saved(c, file, &diag);
		if (!saved) /* the start would stop on its state file */
			sp_config_unref(&c);
		sp_config_unref(&saved);
	}
	if (c) { /* the files the start would open for writing */
		sp_config_check_outputs(c, &diag);
		if (diag.errors)
			sp_config_unref(&c);
	}
	fputs(diag.text.data ? diag.text.data : "", stderr);
	if (c)
		printf("%s: configuration OK (%zu backends, %zu routes, %d warnings)\n", file,
		       c->nbackends, c->nroutes, diag.warnings);
	else
		fprintf(stderr, "%s: %d error%s\n", file, diag.errors, diag.errors == 1 ? "" : "s");
	sp_config_unref(&c);
	sp_diag_deinit(&diag);
	return c || diag.errors == 0 ? 0 : 1;
}

static int run(const char *file)
{
	struct sp_diag diag;
	struct sp_runtime rt = {0};
	struct sp_admin *admin = NULL;
	struct event *sigs[5] = {NULL, NULL, NULL, NULL, NULL};
	struct event *guard_timer = NULL;
	int rc = 1;
	sigset_t held, old_mask;

	/* A SIGHUP or SIGUSR1 (a reload, a log reopen) sent while the process
	 * starts would meet the default action and kill it: they wait, blocked,
	 * until the loop's handlers exist. SIGTERM and SIGINT still stop a start
	 * that takes long (resolving backends). */
	sigemptyset(&held);
	sigaddset(&held, SIGHUP);
	sigaddset(&held, SIGUSR1);
	sigprocmask(SIG_BLOCK, &held, &old_mask);
	rt.file = file;
	name_instance(rt.instance, sizeof(rt.instance));
	rt.health = sp_health_table_new();
	rt.guards = sp_guards_new();
	rt.diffs = sp_diff_ring_new(20);
	rt.comparer = sp_comparer_new(); /* without it, workers compare on their own thread */
	rt.overrides = json_object();
	rt.audit = json_array();
	sp_diag_init(&diag);
	/* the file tells where the state is; the state's overrides apply on top.
	 * Its warnings too, as -t shows them. */
	rt.file_cfg = sp_runtime_load_file(&rt, &diag);
	fputs(diag.text.data ? diag.text.data : "", stderr);
	if (!rt.file_cfg)
		goto out;
	if (sp_runtime_load_state(&rt, rt.file_cfg) < 0)
		goto out; /* a corrupt state file would silently undo runtime changes */
	sp_diag_deinit(&diag);
	sp_diag_init(&diag);
	struct sp_config *cfg = sp_runtime_build(&rt, rt.file_cfg, NULL, &diag);
	if (cfg)
		sp_config_check_outputs(cfg, &diag);
	fputs(diag.text.data ? diag.text.data : "", stderr);
	if (!cfg)
		goto out;
	rt.cfg = cfg;
	if (diag.errors)
		goto out;
	sp_runtime_prune_state(&rt);
	sp_log_set_level((enum sp_log_level)cfg->log_level);
	signal(SIGPIPE, SIG_IGN);
	/* a file that reaches the size limit (ulimit -f) fails its write with
	 * EFBIG, counted like any failed write, instead of killing the process */
	signal(SIGXFSZ, SIG_IGN);
	raise_fd_limit();
	if (evthread_use_pthreads() < 0) {
		sp_log(SP_LOG_ERROR, "libevent: no thread support");
		goto out;
	}
	if (cfg->access_log && !(rt.alog = sp_accesslog_open(cfg->access_log, "access"))) {
		sp_log(SP_LOG_ERROR, "access_log: cannot open %s: %s", cfg->access_log, strerror(errno));
		goto out;
	}
	if (cfg->shadow.diff_log && !(rt.difflog = sp_accesslog_open(cfg->shadow.diff_log, "diff"))) {
		sp_log(SP_LOG_ERROR, "shadow_defaults.diff_log: cannot open %s: %s",
		       cfg->shadow.diff_log, strerror(errno));
		goto out;
	}
	rt.base = event_base_new();
	rt.workers = calloc((size_t)cfg->workers, sizeof(*rt.workers));
	if (!rt.base || !rt.workers)
		goto out;
	/* Signals are caught before any listener exists: a SIGHUP or SIGTERM
	 * sent as soon as the port accepts must not meet the default action
	 * (which would kill the process). They are handled once the loop runs. */
	sigs[0] = evsignal_new(rt.base, SIGTERM, on_stop_signal, &rt);
	sigs[1] = evsignal_new(rt.base, SIGINT, on_stop_signal, &rt);
	sigs[2] = evsignal_new(rt.base, SIGHUP, on_other_signal, &rt);
	sigs[3] = evsignal_new(rt.base, SIGUSR1, on_other_signal, &rt);
	sigs[4] = evsignal_new(rt.base, SIGQUIT, on_stop_signal, &rt); /* nginx's graceful stop */
	for (int i = 0; i < 5; i++)
		if (!sigs[i] || evsignal_add(sigs[i], NULL) < 0)
			goto out;
	sigprocmask(SIG_SETMASK, &old_mask, NULL); /* what came meanwhile is handled now */
	for (int i = 0; i < cfg->workers; i++) {
		if (!(rt.workers[i] = sp_worker_new(i, cfg, rt.alog, rt.difflog)))
			goto out;
		rt.workers[i]->diffring = rt.diffs;
		rt.workers[i]->comparer = rt.comparer;
		rt.nworkers++;
	}
	if (cfg->has_admin && !(admin = sp_admin_new(&rt)))
		goto out;
	sp_runtime_start_checks(&rt);
	if (cfg->pid_file && write_pid_file(cfg->pid_file) < 0)
		goto out;
	if (cfg->user && drop_privileges(cfg->user, (struct sp_accesslog *[2]){rt.alog, rt.difflog}) < 0)
		goto out;
	sp_runtime_check_access(&rt);
	/* the state file is this process's from now on: written once, so that a
	 * process it replaces (an upgrade's overlap) sees another's file and
	 * writes nothing over the changes made here */
	if (cfg->has_admin && cfg->admin.state_file && sp_runtime_take_state(&rt) < 0)
		sp_log(SP_LOG_WARN, "admin.state_file: cannot write %s at start: %s",
		       rt.cfg->admin.state_file, sp_runtime_state_strerror(errno));
	cfg = rt.cfg; /* a new generation when the file was read again */
	rt.stop_poll = event_new(rt.base, -1, EV_PERSIST, on_stop_poll, &rt);
	guard_timer = event_new(rt.base, -1, EV_PERSIST, on_guard_tick, &rt);
	struct timeval one_second = {1, 0};
	if (!rt.stop_poll || !guard_timer || event_add(guard_timer, &one_second) < 0)
		goto out;
	if (rt.difflog) {
		int ms = cfg->shadow.summary_interval_ms;
		struct timeval tv = sp_tv_ms(ms);
		rt.summary_timer = event_new(rt.base, -1, EV_PERSIST, on_summary_timer, &rt);
		if (!rt.summary_timer || event_add(rt.summary_timer, &tv) < 0)
			goto out;
	}
	for (int i = 0; i < rt.nworkers; i++)
		if (sp_worker_start(rt.workers[i]) < 0) {
			sp_log(SP_LOG_ERROR, "cannot start worker thread %d", i);
			for (int j = 0; j < i; j++) {
				sp_worker_stop(rt.workers[j]);
				sp_worker_join(rt.workers[j]);
			}
			rt.nworkers = 0;
			goto out;
		}
	for (size_t i = 0; i < cfg->nlisten; i++)
		sp_log(SP_LOG_INFO, "listening on %s%s%s", cfg->listen[i].address,
		       cfg->listen[i].tls ? " (TLS)" : "",
		       cfg->listen[i].proxy_protocol ? " (PROXY protocol)" : "");
	sp_log(SP_LOG_INFO, "strangler %s started: %d workers, %zu backends, %zu routes", SP_VERSION,
	       rt.nworkers, cfg->nbackends, cfg->nroutes);
	event_base_dispatch(rt.base);
	for (int i = 0; i < rt.nworkers; i++) {
		sp_worker_join(rt.workers[i]);
		/* a drain timeout ends a worker with comparisons out: counted
		 * before the last summary */
		sp_worker_take_comparisons(rt.workers[i]);
	}
	sp_shadow_write_summaries(rt.cfg, NULL, rt.workers, rt.nworkers, rt.difflog, rt.instance);
	if (rt.cfg->pid_file)
		remove_pid_file(rt.cfg->pid_file);
	sp_log(SP_LOG_INFO, "stopped");
	rc = 0;
out:
	sp_admin_free(&admin);
	sp_health_checker_free(&rt.checker);
	for (int i = 0; i < rt.nworkers; i++)
		sp_worker_free(&rt.workers[i]); /* takes its comparisons back first */
	free(rt.workers);
	sp_comparer_free(&rt.comparer);
	/* Freeing the signal events puts back the default actions: a SIGTERM
	 * sent now (a second stop, a supervisor's) would kill the exit half
	 * way (the pid file, the leak check of sanitized builds). It is done. */
	for (int i = 0; i < 5; i++)
		if (sigs[i])
			event_free(sigs[i]);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGQUIT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGUSR1, SIG_IGN);
	if (rt.summary_timer)
		event_free(rt.summary_timer);
	if (rt.stop_poll)
		event_free(rt.stop_poll);
	if (guard_timer)
		event_free(guard_timer);
	if (rt.base)
		event_base_free(rt.base);
	sp_accesslog_close(&rt.alog);
	sp_accesslog_close(&rt.difflog);
	sp_config_unref(&rt.cfg);
	sp_config_unref(&rt.file_cfg);
	json_decref(rt.overrides);
	json_decref(rt.audit);
	sp_health_table_free(&rt.health);
	sp_guards_free(&rt.guards);
	sp_diff_ring_free(&rt.diffs);
	sp_diag_deinit(&diag);
	return rc;
}

int main(int argc, char **argv)
{
	const char *file = DEFAULT_CONF;
	int test_only = 0, opt;

	if (argc > 1 && strcmp(argv[1], "explain") == 0)
		return sp_explain_main(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "diff-report") == 0)
		return sp_diff_report_main(argc - 1, argv + 1);
	static const struct option longopts[] = {{"help", no_argument, NULL, 'h'},
						 {"version", no_argument, NULL, 'V'},
						 {NULL, 0, NULL, 0}};
	while ((opt = getopt_long(argc, argv, "c:tVh", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			file = optarg;
			break;
		case 't':
			test_only = 1;
			break;
		case 'V':
			version();
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "strangler: unexpected argument \"%s\"\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	return test_only ? check_config(file) : run(file);
}
