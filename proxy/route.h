/* Routes: what a request must look like to match, and where it goes. The
 * router and the rollout decision are pure functions of a config and a
 * request view. */
#ifndef SP_ROUTE_H
#define SP_ROUTE_H

#include <regex.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "http.h"
#include "realip.h"
#include "respond.h"

/* name = value condition; value "*" means "present with any value". */
struct sp_kv {
	char *name;
	char *value;
	int any;
};

struct sp_match {
	/* the request's Host without its port, in lower case: exactly this, or,
	 * written "*.example.com", any name below example.com; NULL: any */
	char *host;
	char *path;        /* exact, or NULL */
	char *path_prefix; /* segment-aware prefix, or NULL */
	size_t prefix_len;
	char *path_regex;  /* source text, or NULL */
	regex_t regex;     /* compiled as written; must match the whole path */
	char *regex_prefix; /* literal text every match starts with, or NULL */
	size_t regex_prefix_len;
	char **methods;
	size_t nmethods;
	struct sp_kv *headers;
	size_t nheaders;
	struct sp_kv *query;
	size_t nquery;
	/* the client's address (after trusted_proxies or a PROXY header) is in
	 * one of these blocks; none: any client */
	struct sp_cidr *client_ip;
	size_t nclient_ip;
};

enum sp_sticky_kind {
	SP_STICKY_NONE,
	SP_STICKY_HEADER,
	SP_STICKY_COOKIE,
	SP_STICKY_QUERY,
	SP_STICKY_CLIENT_IP,
};

struct sp_sticky {
	enum sp_sticky_kind kind;
	char *name; /* header, cookie or query name */
};

/* The most keys a rollout's sticky list names (the first the request has
 * decides: a user id, else a cookie, else the client's address). */
#define SP_STICKY_MAX 4

/* A guarded rollout: bounds on the rollout side, checked over a window by the
 * main process; crossing one drops the percent to 0 until re-armed. Steps
 * raise the percent over time while the guard holds. 0 disables a bound. */
struct sp_guard_cfg {
	int enabled;
	double max_error_rate;  /* % of 5xx answers on the rollout side */
	double max_diff_rate;   /* % of shadow comparisons that differ */
	double max_p99_ratio;   /* rollout side p99 / base side p99 */
	int min_requests;       /* below this many in the window, no verdict */
	int window_s;
	uint32_t *steps_bp;     /* ascending percents in basis points */
	size_t nsteps;
	int step_interval_s;
};

struct sp_rollout {
	int backend;          /* index into the config's backends */
	uint32_t percent_bp;  /* basis points: 0..10000 */
	struct sp_sticky sticky[SP_STICKY_MAX]; /* in order; nsticky 0: random */
	size_t nsticky;
	char *cohort;         /* defaults to the route name */
	char *shadow_salt;    /* cohort + "/shadow": the shadow sample's own salt */
	struct sp_guard_cfg guard;
	/* set_cookie: a request without the sticky cookie gets a key drawn for
	 * it, and the answer sets the cookie (sticky kind cookie only), with
	 * these attributes ("; Path=/; Max-Age=...; HttpOnly; SameSite=Lax" and
	 * a Domain; Secure is the exchange's) */
	int set_cookie;
	int cookie_max_age_s;
	char *cookie_path, *cookie_domain; /* domain NULL: none (the host alone) */
	char *cookie_attrs;
};

/* What to compare between the primary's and the shadow's answers; mirrors
 * struct sp_cmp_rules (compare.h) without depending on it. */
struct sp_shadow_cfg {
	int backend;          /* index, or SP_SHADOW_OTHER */
	uint32_t percent_bp;
	char **methods;       /* mirrored methods (default GET, HEAD, OPTIONS) */
	size_t nmethods;
	char **headers;       /* compared headers */
	size_t nheaders;
	char **ignore_json;   /* JSON Pointers, '*' segments allowed */
	size_t nignore;
	char **redact_json;   /* pointers whose values never reach the diff log */
	size_t nredact;
	int body;             /* enum sp_cmp_body */
	int noise_samples;    /* 0 or 1: second request to the primary to find noise */
};

#define SP_SHADOW_OTHER (-2) /* "@other": the rollout side that did not serve */

/* Route and backend names: at most SP_NAME_CHARS characters, so at most
 * SP_NAME_MAX bytes with the NUL (what the per-name counters hold). */
#define SP_NAME_CHARS 64
#define SP_NAME_MAX (SP_NAME_CHARS * 4 + 1)
/* The name counters and metrics give the default backend's traffic. */
#define SP_DEFAULT_ROUTE "(default)"

struct sp_route {
	char *name;
	const char *file; /* the main file or an included one (the config keeps the name) */
	int line;
	int index; /* position in the config's routes */
	struct sp_match match;
	int backend; /* -1 for a route that answers itself (ret) */
	struct sp_return ret;
	int has_rollout;
	struct sp_rollout rollout;
	int has_shadow;
	struct sp_shadow_cfg shadow;
	int response_timeout_ms; /* for its requests instead of their backend's (0: theirs) */
	long long max_body_bytes; /* instead of limits.max_body_bytes (0: no limit; -1: that one) */
	long long counters_since_ms; /* unix ms: when the route (by name) came into the running
					configuration, its counters with it (the runtime sets it) */
};

/* What the router sees of a request. Everything is borrowed. */
struct sp_reqview {
	const char *method;
	const char *path; /* normalised */
	size_t path_len;
	const char *query; /* raw, without '?', or NULL */
	size_t query_len;
	const struct sp_hdr *headers;
	size_t nheaders;
	const char *client_ip; /* as text: the client_ip sticky key */
	const struct sp_ip *client_addr; /* the same, for match.client_ip; NULL: unknown */
};

int sp_route_matches(const struct sp_route *r, const struct sp_reqview *q);
/* A part of route r that has nothing to do, which the file's loader and an
 * admin PATCH warn about: its rollout to the route's own backend, its
 * shadow to it (without a rollout: a request is never shadowed to the
 * backend that served it, and with one the other side's are). */
int sp_route_rollout_idle(const struct sp_route *r);
int sp_route_shadow_idle(const struct sp_route *r);
#define SP_ROLLOUT_IDLE "same backend as the route; the rollout changes nothing"
#define SP_SHADOW_IDLE \
	"the route's own backend: nothing is mirrored (a request is never shadowed to the " \
	"backend that served it)"
/* Copies the decoded value of query parameter name into out (its first; with
 * nonempty, its first that is not empty); returns 1 when there is one. */
int sp_query_get(const char *qs, size_t len, const char *name, int nonempty, struct sp_buf *out);
/* An index of routes by the first path segment they require, so a request
 * is tried only against the routes its path could match (and those without
 * such a segment), in file order. Built once per configuration of at least
 * SP_ROUTE_INDEX_MIN routes (below, trying each costs less than the look
 * up); NULL otherwise, or when out of memory: the router then tries every
 * route. */
#define SP_ROUTE_INDEX_MIN 8
struct sp_route_index;
struct sp_route_index *sp_route_index_build(const struct sp_route *routes, size_t n);
void sp_route_index_free(struct sp_route_index *ix);

/* First matching route in order, or NULL (the default backend applies).
 * ix: the index built for these n routes (then n is not read), or NULL to
 * try every route. */
const struct sp_route *sp_router_match(const struct sp_route *routes, size_t n,
				       const struct sp_route_index *ix, const struct sp_reqview *q);
/* True when every request that matches `later` also matches `earlier`, so
 * `later` can never be chosen. Conservative: false when unsure. */
int sp_route_covers(const struct sp_route *earlier, const struct sp_route *later);

/* Parses "header:NAME", "cookie:NAME", "query:NAME" or "client_ip".
 * Returns 0, or -1 with *why set. out->name is malloc'd (caller owns). */
int sp_sticky_parse(const char *spec, struct sp_sticky *out, const char **why);
/* The key as written ("header:X-User-Id", "client_ip"; "" for none), in buf
 * of len bytes; returns buf. */
const char *sp_sticky_text(const struct sp_sticky *st, char *buf, size_t len);

/* FNV-1a 32-bit over cohort ":" key, the documented rollout hash. */
uint32_t sp_rollout_hash(const char *cohort, const char *key, size_t key_len);
/* hash % 10000: the bucket compared with percent_bp. */
uint32_t sp_rollout_bucket(const char *cohort, const char *key, size_t key_len);

/* Finds the sticky key of a request. Returns 1 and sets *key and *len (which may
 * point into scratch) when present, 0 when absent or no sticky is set. */
int sp_sticky_key(const struct sp_sticky *s, const struct sp_reqview *q, struct sp_buf *scratch,
		  const char **key, size_t *len);
/* The first of the rollout's sticky keys the request has: 1 + its index in
 * ro->sticky, with *key and *len set as above; 0 when it has none. */
int sp_rollout_key(const struct sp_rollout *ro, const struct sp_reqview *q, struct sp_buf *scratch,
		   const char **key, size_t *len);

/* Hex digits of a key strangler draws for rollout.set_cookie. */
#define SP_ASSIGNED_KEY 16

struct sp_decision {
	const struct sp_route *route; /* NULL: default backend */
	int backend;
	int rolled;       /* a rollout applied to this route */
	int sticky;       /* the bucket came from rollout.sticky[sticky - 1] (0: random) */
	uint32_t bucket;  /* valid when rolled */
	int to_rollout;   /* the request goes to the rollout backend */
	/* rollout.set_cookie: the key drawn for a request without the cookie,
	 * which its answer sets ("": none) */
	char assigned[SP_ASSIGNED_KEY + 1];
};

/* Routes the request and applies the route's rollout. rng is a caller-owned
 * xorshift state used when there is no sticky key. */
void sp_decide(const struct sp_route *routes, size_t n, const struct sp_route_index *ix,
	       int default_backend, const struct sp_reqview *q, uint64_t *rng,
	       struct sp_buf *scratch, struct sp_decision *out);

/* A decision whose route's rollout draws a key (rollout.set_cookie) takes
 * the key made of these random bytes (hex), and the side that key's bucket
 * gives: for keys from a generator no answer can reveal (sp_decide's rng
 * also makes request ids). */
void sp_decide_assign(const uint8_t random[SP_ASSIGNED_KEY / 2], struct sp_decision *out);

uint64_t sp_rng_next(uint64_t *state);

void sp_route_deinit(struct sp_route *r);

#endif
