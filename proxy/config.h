/* A loaded configuration: one immutable, reference-counted generation. Every
 * request holds the generation it started with. */
#ifndef SP_CONFIG_H
#define SP_CONFIG_H

#include <netinet/in.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/socket.h>

#include "buf.h"
#include "realip.h"
#include "rewrite.h"
#include "route.h"
#include "tls.h"

struct sp_health;

/* Where a setting was written: one of the configuration's files, and a line. */
struct sp_where {
	const char *file;
	int line;
};

struct sp_listen {
	char *address; /* as written */
	const char *file; /* where it was written (the config's files) */
	int line;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	struct sp_tls_server *tls; /* NULL: plain HTTP */
	int proxy_protocol; /* connections start with a PROXY protocol header */
};

/* One server of a backend: where its connections go. */
struct sp_server {
	char *url;
	char *host;     /* host as written in the URL ("localhost" for a unix socket) */
	/* "host:port", the default port filled in; "unix:/path" for a unix
	 * socket (http://unix:/run/app.sock) */
	char *hostport;
	int is_unix;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int host_is_ip;           /* the certificate is checked against an IP address */
	int weight;               /* its share of the requests (1: as the others) */
	int backup;               /* takes requests only when no other server can */
	struct sp_health *health; /* shared state, owned by the runtime */
};

/* The Host of a request to sv that has none of its own (an HTTP/1.0 one),
 * and of its health checks, without host_header: its "host:port", or
 * "localhost" for a unix socket, as nginx sends. */
static inline const char *sp_server_authority(const struct sp_server *sv)
{
	return sv->is_unix ? sv->host : sv->hostport;
}

/* trusted_headers: X-Forwarded-Proto, X-Forwarded-Host. */
#define SP_FWD_PROTO 1
#define SP_FWD_HOST 2

/* The most weight a server may have. */
#define SP_WEIGHT_MAX 1000

/* The most servers a backend has. */
#define SP_SERVERS_MAX 64

struct sp_backend {
	char *name;
	int line;
	/* url (one server) or servers (a list): requests go round-robin to
	 * those not marked down (health is kept per server) */
	struct sp_server *servers;
	size_t nservers;
	int weighted; /* a weight other than 1 or a backup server: requests go by weight */
	int least_conn; /* balance = "least_conn": the fewest connections in use, by weight */
	int max_conns;  /* connections each worker may have in use per server (0: no limit) */
	/* queue: a request finding every server at max_conns waits (per
	 * worker, at most queue_max of them, for queue_timeout_ms) for one
	 * of the backend's connections to be given back (0: a 503 at once) */
	int queue_max, queue_timeout_ms;
	char *host_header; /* the Host its requests carry (NULL: the client's) */
	struct sp_rewrite *rewrite; /* path_rewrite: where it serves the public paths */
	size_t nrewrite;
	struct sp_hdr_rules req_headers, resp_headers; /* request_headers, response_headers */
	/* location_rewrite (on unless false, when it has path_rewrite or
	 * host_header): an answer's Location in the client's terms */
	int location_map;
	/* retry_on_status: answers (400..599, a bit each from 400) that send an
	 * idempotent request without a body on to another server, not tried
	 * yet (nginx's proxy_next_upstream http_503, Envoy's
	 * retriable_status_codes) */
	uint64_t retry_status[4];
	int retry_any; /* retry_on_status has a status */
	/* per_try_timeout_ms (0: off): an idempotent request without a body
	 * whose server has not begun its answer by then goes on to another
	 * server not tried yet (Envoy's per_try_timeout) */
	int per_try_timeout_ms;
	/* slow_start_ms (0: off): a server back up, or given back its requests
	 * after a drain, takes a share of its weight growing over this long */
	int slow_start_ms;
	/* retry_budget: the retries after answers or per_try_timeout_ms stay
	 * under percent of the backend's answers (a worker's, over two
	 * seconds), or min_per_s */
	int retry_budget_percent, retry_budget_min;
	int connect_timeout_ms;
	int response_timeout_ms;
	int max_idle;        /* idle connections per worker, all servers together */
	int idle_timeout_ms; /* a pooled connection unused this long is closed */
	SSL_CTX *tls_ctx; /* https:// backends */
	/* what tls_ctx trusts and presents (sp_tls_client_ctx); all zero for
	 * http://. A reload keeps a pool's connections only when it is equal. */
	unsigned char tls_id[SP_TLS_ID_LEN];
	int tls_wanted;   /* the urls are https:// */
	/* health, per server: passive always (health_unhealthy consecutive
	 * failures mark a server down for health_interval_ms), active when
	 * has_health */
	int has_health;
	char *health_path;
	int health_interval_ms, health_timeout_ms, health_healthy, health_unhealthy;
};

/* Whether status is one of backend b's retry_on_status. */
static inline int sp_backend_retries_status(const struct sp_backend *b, int status)
{
	unsigned k = (unsigned)status - 400u; /* below 400 wraps to a large k */
	return k < 200 && (b->retry_status[k / 64] >> (k % 64) & 1);
}

struct sp_limits {
	int header_timeout_ms;    /* total deadline for a request head */
	int keepalive_timeout_ms; /* idle client keep-alive */
	int body_timeout_ms;      /* client body idle */
	int send_timeout_ms;      /* no progress writing to a client */
	int tunnel_idle_ms;       /* an upgraded connection silent both ways ends (0: never) */
	int drain_timeout_ms;     /* graceful stop */
	int max_connections;      /* client connections per process; accept waits past it */
	int max_request_line;     /* bytes of the request target → 414 */
	int max_header_bytes;     /* bytes of the header block → 431 */
	int max_headers;          /* header count → 431 */
	long long max_body_bytes; /* 0 = unlimited → 413 */
	int reject_escaped_slashes; /* a path with %2F, %5C or \\ → 400 */
};

struct sp_shadow_defaults {
	int max_in_flight;        /* mirrored exchanges at once, per process */
	long long max_body_bytes; /* bodies above this are not compared */
	int timeout_ms;           /* a shadow exchange is abandoned after this */
	char *diff_log;           /* NULL: differences are only counted */
	struct sp_where diff_log_at;
	int summary_interval_ms;  /* how often per-route summaries go to the diff log */
};

/* The admin API listener (admin.c). */
struct sp_admin_cfg {
	char *address;
	const char *file;
	int line;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char *token;      /* read from token_file at load; NULL: no auth */
	char *state_file; /* runtime route changes persist here; NULL: not persisted */
};

/* idle_spin_us's default: see run_loop in worker.c. */
#define SP_IDLE_SPIN_US 0

struct sp_config {
	atomic_int refs;
	struct sp_config *base; /* an overlay (sp_config_overlay): owns only its routes array */
	char *file;
	char **files; /* the included files' names, as shown, that settings point to */
	size_t nfiles;
	/* the other files the configuration reads (certificates, keys, CA files,
	 * the token file): a reload reads them again, as `user` */
	char **read_files;
	size_t nread_files;
	struct sp_listen *listen;
	size_t nlisten;
	int workers;
	int idle_spin_us; /* how long a busy worker polls before it sleeps (0: never) */
	int log_level;
	char *access_log; /* NULL = off, "-" = stderr */
	struct sp_where access_log_at;
	int log_query;    /* the access and diff logs carry the query string */
	/* peers believed about the client behind them (X-Forwarded-For, the
	 * PROXY header); none: every peer is the client */
	struct sp_cidr *trusted;
	size_t ntrusted;
	int trusted_headers; /* SP_FWD_*: what trusted peers' headers say is passed on */
	struct sp_backend *backends;
	size_t nbackends;
	int host_headers; /* a backend has host_header: a request keeps its client's Host */
	/* a request keeps its client's Host: host_headers, a backend's
	 * location_map, or $host, $http_host in a backend's header rules */
	int keep_client_host;
	int request_header_rules; /* a backend has request_headers: a request keeps its head without them */
	int default_backend;
	struct sp_route *routes;
	size_t nroutes;
	struct sp_route_index *route_index; /* the base's (overlays share it), or NULL */
	struct sp_limits limits;
	struct sp_shadow_defaults shadow;
	int has_admin;
	struct sp_admin_cfg admin;
	char *pid_file;
	struct sp_where pid_file_at;
	char *user; /* drop to this user after binding when started as root */
};

/* Where diagnostics go: "FILE:LINE: path: reason" lines. */
struct sp_diag {
	struct sp_buf text;
	int errors;
	int warnings;
};

void sp_diag_init(struct sp_diag *d);
/* One diagnostic per line of text (a buffer of '\n'-ended lines), without a line number. */
void sp_diag_add_lines(struct sp_diag *d, int is_error, const char *file, const struct sp_buf *text);
void sp_diag_deinit(struct sp_diag *d);
__attribute__((format(printf, 5, 6))) void sp_diag_add(struct sp_diag *d, int is_error,
						       const char *file, int line,
						       const char *fmt, ...);

/* Loads and checks the whole file. Returns a generation with one reference,
 * or NULL when there was any error (all of them are in diag). */
struct sp_config *sp_config_load(const char *path, struct sp_diag *diag);
/* The whole file at path, NUL-terminated (malloc'd), its length in *len
 * (when not NULL: a NUL inside shows), or NULL with the error in diag. */
char *sp_config_read(const char *path, size_t *len, struct sp_diag *diag);
/* The most sp_config_read takes (a configuration, a state file): past it,
 * an error rather than memory without bound. */
#define SP_FILE_MAX (16 << 20)
/* A copy of libconfig text (malloc'd; NULL without memory) in which every
 * integer literal that does not fit in 32 bits has the L suffix: libconfig
 * 1.5 silently wraps such a literal (4294967297 reads as 1), later versions
 * widen it. Strings and comments are left alone. Pure. */
char *sp_config_promote_ints(const char *text);
/* Parses in-memory text (tests, fuzzing); `name` stands for the file name. */
struct sp_config *sp_config_load_string(const char *text, const char *name, struct sp_diag *diag);

/* Errors for the files the start opens for writing (access_log,
 * shadow_defaults.diff_log, pid_file) that this process could not open:
 * `FILE:LINE: access_log: cannot open PATH: REASON`. Nothing is created: a
 * file that does not exist yet needs a directory this process can write.
 * For -t and the start only (a reload keeps the files open as they are). */
void sp_config_check_outputs(const struct sp_config *c, struct sp_diag *diag);

struct sp_config *sp_config_ref(struct sp_config *c);
/* A generation that shares everything with base (taking a reference) but a
 * copy of its routes array, whose scalar fields (a route's backend, its
 * rollout and shadow percents) the runtime's changes set. NULL: no memory. */
struct sp_config *sp_config_overlay(struct sp_config *base);
void sp_config_unref(struct sp_config **c);

int sp_backend_index(const struct sp_config *c, const char *name);
/* Whether a server of some backend of c has this URL (as written). */
int sp_config_lists_url(const struct sp_config *c, const char *url);
/* The route of that name, or NULL. */
const struct sp_route *sp_config_route(const struct sp_config *c, const char *name);
/* Whether ss is in 127.0.0.0/8 or is ::1. */
int sp_addr_is_loopback(const struct sockaddr_storage *ss);
/* Parses "host:port" or "[v6]:port" and resolves it to its first address.
 * Returns 0 or -1 with *why; *naddrs (when not NULL): how many addresses the
 * name has. */
int sp_parse_hostport(const char *s, int passive, struct sockaddr_storage *ss, socklen_t *len,
		      int *naddrs, const char **why);

#endif
