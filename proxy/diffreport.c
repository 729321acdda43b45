/* `strangler diff-report`: turns a diff log into what an SRE asks first —
 * how often the shadow agrees, how fast each side is, and which differences
 * dominate. Reads the log once, keeps per-route aggregates only. */
#include "diffreport.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "buf.h"

#define TOP_ROWS 10
#define EXAMPLES 3

/* One row of "top differences": a kind and a place, with array indexes
 * folded into "*" so /results/0/score and /results/3/score count together. */
struct group {
	char *label;
	size_t count;     /* diff lines showing it (once per line) */
	size_t last_line; /* the line that last counted it */
	char *ex[EXAMPLES];
	size_t nex;
};

struct lat {
	double *v;
	size_t n, cap;
};

/* One direction of a route: exchanges served by `primary`, mirrored to
 * `shadow`. Comparing legacy with modern and modern with legacy answer
 * different questions (a rollout shadowed to "@other" runs both, a flip
 * turns one into the other), so each gets its own counts, latency and top
 * differences. */
struct dir_agg {
	char *label; /* "primary -> shadow" */
	char *primary, *shadow;
	json_t *last; /* its entry in the latest summary line: its latencies are reported */
	size_t diff_lines;
	struct lat pms, sms; /* latencies of the diff lines, for logs without summary */
	struct group *groups;
	size_t ngroups, cap;
	json_t *index; /* label → position in groups */
};

struct route_agg {
	char *name;
	json_t *summary; /* the kept summary line with the most comparisons: its latencies */
	int split;       /* some kept summary splits its counts by direction */
	json_t *runs;    /* instance → {"last": its latest summary, "earlier": earlier runs' counts} */
	size_t diff_lines;
	struct dir_agg *dirs;
	size_t ndirs, cap;
	json_t *index; /* direction label → position in dirs */
};

struct report {
	const char *only; /* --route */
	struct route_agg *routes;
	size_t nroutes, cap;
	json_t *index; /* route name → position in routes */
	size_t seq;    /* lines read, over every file: a diff line's identity */
	const char *file; /* the file being read, for messages */
	size_t lineno;    /* in it */
	size_t not_json, unknown;
	char first_bad[2][320]; /* where the first line of each kind was skipped */
};

/* Room for item n in an array of size-byte elements: the (maybe moved) array,
 * or NULL when memory runs out (the old array is then still valid). */
static void *grow(void *p, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return p;
	size_t c = *cap ? *cap * 2 : 8;
	void *q = realloc(p, c * size);
	if (q)
		*cap = c;
	return q;
}

/* The position stored under key in index, adding next when absent; -1 when
 * memory runs out. */
static long long index_get(json_t *index, const char *key, size_t next, int *added)
{
	json_t *v = json_object_get(index, key);
	*added = !v;
	if (v)
		return json_integer_value(v);
	if (json_object_set_new(index, key, json_integer((json_int_t)next)) < 0)
		return -1;
	return (long long)next;
}

static struct route_agg *route_get(struct report *rp, const char *name)
{
	struct route_agg *r = grow(rp->routes, &rp->cap, rp->nroutes, sizeof(*r));
	if (!r)
		return NULL;
	rp->routes = r;
	int added;
	long long i = index_get(rp->index, name, rp->nroutes, &added);
	if (i < 0)
		return NULL;
	r = &rp->routes[i];
	if (!added)
		return r;
	*r = (struct route_agg){.name = strdup(name), .index = json_object(), .runs = json_object()};
	rp->nroutes++; /* counted before checking, so cleanup frees what was made */
	return r->name && r->index && r->runs ? r : NULL;
}

/* A direction's label, "primary -> shadow", in key ("?" for a name a line
 * lacks); -1 when memory runs out. */
static int dir_label(struct sp_buf *key, const char *primary, const char *shadow)
{
	sp_buf_reset(key);
	return sp_buf_printf(key, "%s -> %s", primary ? primary : "?", shadow ? shadow : "?");
}

/* The direction primary -> shadow of r. */
static struct dir_agg *dir_get(struct route_agg *r, const char *primary, const char *shadow,
			       struct sp_buf *key)
{
	if (dir_label(key, primary, shadow) < 0)
		return NULL;
	primary = primary ? primary : "?";
	shadow = shadow ? shadow : "?";
	struct dir_agg *d = grow(r->dirs, &r->cap, r->ndirs, sizeof(*d));
	if (!d)
		return NULL;
	r->dirs = d;
	int added;
	long long i = index_get(r->index, key->data, r->ndirs, &added);
	if (i < 0)
		return NULL;
	d = &r->dirs[i];
	if (!added)
		return d;
	*d = (struct dir_agg){.label = strdup(key->data), .primary = strdup(primary),
			      .shadow = strdup(shadow), .index = json_object()};
	r->ndirs++; /* counted before checking, so cleanup frees what was made */
	return d->label && d->primary && d->shadow && d->index ? d : NULL;
}

static struct group *group_get(struct dir_agg *r, const char *label)
{
	struct group *g = grow(r->groups, &r->cap, r->ngroups, sizeof(*g));
	if (!g)
		return NULL;
	r->groups = g;
	int added;
	long long i = index_get(r->index, label, r->ngroups, &added);
	if (i < 0)
		return NULL;
	g = &r->groups[i];
	if (!added)
		return g;
	*g = (struct group){.label = strdup(label)};
	r->ngroups++;
	return g->label ? g : NULL;
}

static int add_example(struct group *g, const char *id)
{
	if (g->nex == EXAMPLES)
		return 0;
	for (size_t i = 0; i < g->nex; i++)
		if (strcmp(g->ex[i], id) == 0)
			return 0;
	if (!(g->ex[g->nex] = strdup(id)))
		return -1;
	g->nex++;
	return 0;
}

static int lat_add(struct lat *l, const json_t *v)
{
	if (!json_is_number(v))
		return 0;
	double *p = grow(l->v, &l->cap, l->n, sizeof(*p));
	if (!p)
		return -1;
	l->v = p;
	l->v[l->n++] = json_number_value(v);
	return 0;
}

static int all_digits(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return n > 0;
}

/* Appends " " and the pointer with every all-digit segment replaced by "*",
 * so "/results/3/score" and "/results/0/score" make one row. A numeric object
 * key folds too: the pointer alone cannot tell it from an index. */
static int add_folded_pointer(struct sp_buf *b, const char *p)
{
	if (!*p)
		return sp_buf_adds(b, " (root)");
	if (sp_buf_addc(b, ' '))
		return -1;
	while (*p == '/') {
		size_t n = strcspn(p + 1, "/");
		int rc = all_digits(p + 1, n) ? sp_buf_adds(b, "/*") : sp_buf_add(b, p, n + 1);
		if (rc)
			return -1;
		p += n + 1;
	}
	return 0;
}

/* The row label: "json " and the folded pointer, "header Content-Type",
 * "body bytes" (the offset dropped: it varies per exchange), "status". */
static int make_label(struct sp_buf *b, const char *kind, const char *where)
{
	sp_buf_reset(b);
	if (sp_buf_adds(b, kind))
		return -1;
	if (!where)
		return 0;
	if (strcmp(kind, "json") == 0)
		return add_folded_pointer(b, where);
	size_t n = strcmp(kind, "body") == 0 ? strcspn(where, "@") : strlen(where);
	return sp_buf_addc(b, ' ') || sp_buf_add(b, where, n) ? -1 : 0;
}

static int add_diff_line(struct report *rp, struct route_agg *r, const json_t *j,
			 struct sp_buf *lab)
{
	const char *rid = json_string_value(json_object_get(j, "request_id"));
	const json_t *pri = json_object_get(j, "primary"), *sha = json_object_get(j, "shadow");
	const json_t *d;
	size_t i;
	struct dir_agg *dir = dir_get(r, json_string_value(json_object_get(pri, "backend")),
				      json_string_value(json_object_get(sha, "backend")), lab);
	if (!dir)
		return -1;
	r->diff_lines++;
	dir->diff_lines++;
	if (lat_add(&dir->pms, json_object_get(pri, "ms")) ||
	    lat_add(&dir->sms, json_object_get(sha, "ms")))
		return -1;
	json_array_foreach(json_object_get(j, "differences"), i, d) {
		const char *kind = json_string_value(json_object_get(d, "kind"));
		/* noise is what two primary answers also disagree on: not a finding */
		if (!kind || json_is_true(json_object_get(d, "noise")))
			continue;
		if (make_label(lab, kind, json_string_value(json_object_get(d, "where"))))
			return -1;
		struct group *g = group_get(dir, lab->data);
		if (!g)
			return -1;
		if (g->last_line == rp->seq)
			continue;
		g->last_line = rp->seq;
		g->count++;
		if (rid && add_example(g, rid))
			return -1;
	}
	return 0;
}

static int blank(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
			return 0;
	return 1;
}

/* A counter: a non-negative integer, else 0 (a foreign or damaged line's
 * value: a negative or a real past 2^63 must not wrap the sums). */
static long long count_value(const json_t *v)
{
	json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;
	return n > 0 ? (long long)n : 0;
}

/* a + b of two counters, held at LLONG_MAX */
static long long count_add(long long a, long long b)
{
	return a > LLONG_MAX - b ? LLONG_MAX : a + b;
}

static long long count_of(const json_t *o, const char *key)
{
	return count_value(json_object_get(o, key));
}

/* The counters a summary line carries, "skipped" being an object of them. */
static const char *const counters[] = {"mirrored", "compared", "identical", "different",
				       "noise", "shadow_errors", "shadow_timeouts", "skipped"};

static int add_counts(json_t *into, const json_t *from);

/* Adds counter k (a number, or an object of them) into into; of two
 * strings (a direction's "since") the earlier stays. */
static int add_value(json_t *into, const char *k, const json_t *v)
{
	json_t *have = json_object_get(into, k);
	if (have && json_typeof(have) != json_typeof(v) &&
	    !(json_is_number(have) && json_is_number(v)))
		return 0; /* a foreign line's value of another kind: not ours to add */
	if (json_is_string(v)) {
		if (have && strcmp(json_string_value(have), json_string_value(v)) <= 0)
			return 0;
		return json_object_set(into, k, (json_t *)v);
	}
	if (json_is_object(v)) {
		if (!have && json_object_set_new(into, k, have = json_object()) < 0)
			return -1;
		return add_counts(have, v);
	}
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return 0;
	return json_object_set_new(into, k,
				   json_integer(count_add(count_value(v), count_value(have))));
}

static int add_counts(json_t *into, const json_t *from)
{
	const char *k;
	json_t *v;
	json_object_foreach((json_t *)from, k, v)
		if (add_value(into, k, v) < 0)
			return -1;
	return 0;
}

/* Adds a summary line's counters (and only those) into into. */
static int add_summary_counts(json_t *into, const json_t *summary)
{
	for (size_t i = 0; i < sizeof(counters) / sizeof(*counters); i++) {
		const json_t *v = json_object_get(summary, counters[i]);
		if (v && add_value(into, counters[i], v) < 0)
			return -1;
	}
	return 0;
}

/* The object under key k of o, added when absent; NULL when memory runs out. */
static json_t *child(json_t *o, const char *k)
{
	json_t *c = json_object_get(o, k);
	if (!c && (!(c = json_object()) || json_object_set_new(o, k, c) < 0))
		return NULL;
	return c;
}

/* Adds a summary line's counters into into, and those of each of its
 * directions into into's "dirs" (by label, with the earliest "since"). */
static int add_run_counts(json_t *into, const json_t *summary, struct sp_buf *key)
{
	const json_t *d;
	size_t i;
	if (add_summary_counts(into, summary) < 0)
		return -1;
	json_array_foreach(json_object_get(summary, "directions"), i, d) {
		const json_t *since = json_object_get(d, "since");
		if (dir_label(key, json_string_value(json_object_get(d, "primary")),
			      json_string_value(json_object_get(d, "shadow"))) < 0)
			return -1;
		json_t *dirs = child(into, "dirs"), *slot = dirs ? child(dirs, key->data) : NULL;
		if (!slot || add_summary_counts(slot, d) < 0 ||
		    (json_is_string(since) && add_value(slot, "since", since) < 0))
			return -1;
	}
	return 0;
}

/* Summaries carry percentiles, which do not add up: with several runs the
 * latency shown is one run's. */
#define LARGEST_RUN " (of the run with the most comparisons)"

/* Whether summary (or direction entry) a, rather than b, gives the latencies
 * reported: the one with more comparisons, so that reading several
 * instances' files in any order reports the same (summaries carry p50 and
 * p99, which cannot be added up). */
static int larger(const json_t *a, const json_t *b)
{
	if (!b)
		return 1;
	long long ca = count_of(a, "compared"), cb = count_of(b, "compared");
	if (ca != cb)
		return ca > cb;
	const char *ia = json_string_value(json_object_get(a, "instance"));
	const char *ib = json_string_value(json_object_get(b, "instance"));
	if (ia && ib && strcmp(ia, ib) != 0) /* a tie: the same pick in any order */
		return strcmp(ia, ib) < 0;
	return 1; /* the same run, or lines without instances: the later line */
}

/* Each direction of a summary line becomes one of the route's, and keeps
 * its largest entry for the latencies. */
static int note_directions(struct route_agg *r, const json_t *summary, struct sp_buf *key)
{
	const json_t *d;
	size_t i;
	json_array_foreach(json_object_get(summary, "directions"), i, d) {
		struct dir_agg *dir = dir_get(r, json_string_value(json_object_get(d, "primary")),
					      json_string_value(json_object_get(d, "shadow")), key);
		if (!dir)
			return -1;
		if (!larger(d, dir->last))
			continue;
		json_decref(dir->last);
		dir->last = json_incref((json_t *)d);
	}
	return 0;
}

/* A summary's counters run from its process's start, or from the reload that
 * brought the route in ("counters_since"). Lines carry the process's
 * "instance" (host:pid:start), so several instances' logs can be read
 * together: each run's (instance and since) summary with the highest counts
 * counts,
 * whatever the order the files are read in (rotated logs read newest first
 * give an instance's earlier summaries last). Lines without one (older logs)
 * are one instance, whose restarts show as a counter going down: the last
 * summary of each earlier run is kept in "earlier". */
static int add_summary(struct route_agg *r, json_t *j, struct sp_buf *key)
{
	const char *inst = json_string_value(json_object_get(j, "instance"));
	const char *since = json_string_value(json_object_get(j, "counters_since"));
	/* a route removed and brought back counts from zero again: a run of its own */
	sp_buf_reset(key);
	if (inst && (sp_buf_adds(key, inst) || (since && sp_buf_printf(key, " %s", since))))
		return -1;
	if (sp_buf_addc(key, '\0'))
		return -1;
	json_t *slot = json_object_get(r->runs, key->data);
	if (!slot && (!(slot = json_object()) || json_object_set_new(r->runs, key->data, slot) < 0))
		return -1;
	const json_t *last = json_object_get(slot, "last");
	int lower = last && (count_of(j, "mirrored") < count_of(last, "mirrored") ||
			     count_of(j, "compared") < count_of(last, "compared"));
	if (lower && inst)
		return 0; /* an earlier summary of the same run: the kept one includes it */
	if (lower) {
		json_t *earlier = child(slot, "earlier");
		if (!earlier || add_run_counts(earlier, last, key) < 0)
			return -1;
	}
	if (json_object_set(slot, "last", j) < 0)
		return -1;
	r->split |= json_object_get(j, "directions") != NULL;
	if (larger(j, r->summary)) {
		json_decref(r->summary);
		r->summary = json_incref(j);
	}
	return note_directions(r, j, key);
}

/* Counts a skipped line of kind k, keeping where the first one was. */
static void skip_line(struct report *rp, int k, size_t *count)
{
	if ((*count)++ == 0)
		snprintf(rp->first_bad[k], sizeof(rp->first_bad[k]), "%s:%zu", rp->file, rp->lineno);
}

static int process_line(struct report *rp, const char *line, size_t len, struct sp_buf *lab)
{
	if (blank(line, len))
		return 0;
	json_error_t err;
	json_t *j = json_loadb(line, len, JSON_ALLOW_NUL, &err);
	const char *type = json_string_value(json_object_get(j, "type"));
	const char *name = json_string_value(json_object_get(j, "route"));
	int is_diff = type && strcmp(type, "diff") == 0, rc = 0;
	if (!j) {
		skip_line(rp, 0, &rp->not_json);
		goto out;
	}
	if (!name || !type || (!is_diff && strcmp(type, "summary") != 0)) {
		skip_line(rp, 1, &rp->unknown);
		goto out;
	}
	if (rp->only && strcmp(name, rp->only) != 0)
		goto out;
	struct route_agg *r = route_get(rp, name);
	if (!r) {
		rc = -1;
	} else if (is_diff) {
		rc = add_diff_line(rp, r, j, lab);
	} else {
		rc = add_summary(r, j, lab);
	}
out:
	json_decref(j);
	return rc;
}

/* --- output ------------------------------------------------------------------ */

static void print_share(FILE *out, long long n, const char *what, long long of)
{
	fprintf(out, ", %lld %s", n, what);
	if (of > 0)
		fprintf(out, " (%.1f %%)", 100.0 * (double)n / (double)of);
}

static void print_skipped(FILE *out, const json_t *skipped)
{
	const char *k;
	const json_t *v;
	long long total = 0;
	int first = 1;
	json_object_foreach((json_t *)skipped, k, v)
		total = count_add(total, count_value(v));
	fprintf(out, ", %lld skipped", total);
	json_object_foreach((json_t *)skipped, k, v) {
		long long n = count_value(v);
		if (n == 0)
			continue;
		fprintf(out, "%s%s %lld", first ? " (" : ", ", k, n);
		first = 0;
	}
	if (!first)
		fputc(')', out);
}

static void print_plural(FILE *out, long long n, const char *what)
{
	if (n)
		fprintf(out, ", %lld %s%s", n, what, n == 1 ? "" : "s");
}

/* "N compared, N identical (x %), …" and the end of the line. */
static void print_count_line(FILE *out, const json_t *s)
{
	long long compared = count_of(s, "compared");
	fprintf(out, "%lld compared", compared);
	print_share(out, count_of(s, "identical"), "identical", compared);
	print_share(out, count_of(s, "different"), "different", compared);
	fprintf(out, ", %lld noise", count_of(s, "noise"));
	print_skipped(out, json_object_get(s, "skipped"));
	print_plural(out, count_of(s, "shadow_errors"), "shadow error");
	print_plural(out, count_of(s, "shadow_timeouts"), "shadow timeout");
	fputc('\n', out);
}

/* A diff line per differing exchange: more lines than the summaries count
 * came after the last summary (the top differences include them). */
static void print_newer(FILE *out, const char *indent, long long newer)
{
	if (newer > 0)
		fprintf(out, "%s%lld more differing exchange%s logged after the last summary: not in "
			     "these counts yet (a summary comes every summary_interval_ms)\n",
			indent, newer, newer == 1 ? "" : "s");
}

/* Every instance's and every run's counters added up, each direction's under
 * "dirs"; NULL when memory runs out. */
static json_t *route_totals(const struct route_agg *r, struct sp_buf *key)
{
	json_t *s = json_object();
	const char *inst;
	json_t *slot;
	json_object_foreach(r->runs, inst, slot) {
		const json_t *earlier = json_object_get(slot, "earlier");
		if (!s || add_run_counts(s, json_object_get(slot, "last"), key) < 0 ||
		    (earlier && add_counts(s, earlier) < 0)) {
			json_decref(s);
			return NULL;
		}
	}
	return s;
}

static const char *fmt_ms(double v, char *buf, size_t len)
{
	/* one decimal reads well from 1 ms up; below that it would read 0.0 */
	snprintf(buf, len, v >= 1 || v == 0 ? "%.1f" : "%.2f", v);
	return buf;
}

static int cmp_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;
	return (a > b) - (a < b);
}

/* Nearest-rank percentile of l (sorted here); NAN when empty. */
static double percentile(struct lat *l, double p)
{
	if (l->n == 0)
		return NAN;
	qsort(l->v, l->n, sizeof(double), cmp_double);
	size_t rank = (size_t)ceil(p / 100.0 * (double)l->n);
	return l->v[rank > 0 ? rank - 1 : 0];
}

/* "primary legacy 0.08/0.19 ms" (backend NULL: "primary 0.08/0.19 ms"). */
static void print_pair(FILE *out, const char *side, const char *backend, double p50, double p99)
{
	char a[32], b[32];
	fprintf(out, "%s%s%s ", side, backend ? " " : "", backend ? backend : "");
	if (isnan(p50) || isnan(p99))
		fputs("n/a", out);
	else
		fprintf(out, "%s/%s ms", fmt_ms(p50, a, sizeof(a)), fmt_ms(p99, b, sizeof(b)));
}

static double num_at(const json_t *o, const char *k1, const char *k2)
{
	const json_t *v = json_object_get(json_object_get(o, k1), k2);
	return json_is_number(v) ? json_number_value(v) : NAN;
}

/* A latency line: v holds p50 and p99 of the primary, then of the shadow. */
static void print_latency(FILE *out, const char *indent, const char *what,
			  const struct dir_agg *d, const double v[4])
{
	fprintf(out, "%slatency p50/p99%s: ", indent, what);
	print_pair(out, "primary", d ? d->primary : NULL, v[0], v[1]);
	fputs(", ", out);
	print_pair(out, "shadow", d ? d->shadow : NULL, v[2], v[3]);
	fputc('\n', out);
}

/* The latencies of a summary line, or of one of its directions. */
static void print_summary_latency(FILE *out, const char *indent, const char *what,
				  const struct dir_agg *d, const json_t *s)
{
	if (count_of(s, "compared") <= 0)
		return;
	double v[4] = {num_at(s, "primary_ms", "p50"), num_at(s, "primary_ms", "p99"),
		       num_at(s, "shadow_ms", "p50"), num_at(s, "shadow_ms", "p99")};
	print_latency(out, indent, what, d, v);
}

static int cmp_group(const void *x, const void *y)
{
	const struct group *a = x, *b = y;
	if (a->count != b->count)
		return a->count > b->count ? -1 : 1;
	return strcmp(a->label, b->label);
}

static void print_top(FILE *out, struct dir_agg *r)
{
	if (r->ngroups == 0)
		return;
	/* The index is not used after reading, so sorting in place is safe. */
	qsort(r->groups, r->ngroups, sizeof(*r->groups), cmp_group);
	size_t shown = r->ngroups < TOP_ROWS ? r->ngroups : TOP_ROWS;
	int lw = 0, cw = snprintf(NULL, 0, "%zu", r->groups[0].count);
	for (size_t i = 0; i < shown; i++)
		if ((int)strlen(r->groups[i].label) > lw)
			lw = (int)strlen(r->groups[i].label);
	fputs("    top differences:\n", out);
	for (size_t i = 0; i < shown; i++) {
		const struct group *g = &r->groups[i];
		fprintf(out, "      %-*s  %-*zu", lw, g->label, cw, g->count);
		for (size_t k = 0; k < g->nex; k++)
			fprintf(out, "%s%s", k ? ", " : "  e.g. ", g->ex[k]);
		fputc('\n', out);
	}
	if (r->ngroups > shown)
		fprintf(out, "      (%zu more kinds of difference)\n", r->ngroups - shown);
}

/* One direction: its counts (c, from the summaries, NULL when they do not
 * split by direction), latency and top differences. */
static void print_dir(FILE *out, const struct route_agg *r, struct dir_agg *d, const json_t *c)
{
	const char *since = json_string_value(json_object_get(c, "since"));
	fprintf(out, "  %s", d->label);
	if (since)
		fprintf(out, ", since %s", since);
	if (c) {
		fputs(": ", out);
		print_count_line(out, c);
		print_newer(out, "    ", (long long)d->diff_lines - count_of(c, "different"));
		print_summary_latency(out, "    ", json_object_size(r->runs) > 1 ? LARGEST_RUN : "",
				      d, d->last);
	} else {
		fprintf(out, ": %zu different exchange%s logged%s\n", d->diff_lines,
			d->diff_lines == 1 ? "" : "s",
			r->split ? ", not in the summaries' counts by direction (logged after the "
				   "last summary, or past the 4 directions a route counts apart)"
				 : "");
	}
	if (!r->summary && d->diff_lines > 0) {
		/* only what was logged: exchanges that differed */
		double v[4] = {percentile(&d->pms, 50), percentile(&d->pms, 99),
			       percentile(&d->sms, 50), percentile(&d->sms, 99)};
		print_latency(out, "    ", " (differing exchanges only)", d, v);
	}
	print_top(out, d);
}

static int cmp_dir(const void *x, const void *y)
{
	return strcmp(((const struct dir_agg *)x)->label, ((const struct dir_agg *)y)->label);
}

/* The route's line, then each direction's block. Summaries from before
 * they split by direction give the route's counts and latency only. */
static void print_route(FILE *out, struct route_agg *r, struct sp_buf *key)
{
	json_t *totals = NULL;
	int split = r->split;
	if (!r->summary) {
		fprintf(out, "route %s: %zu different exchanges logged (no summary line yet: how many "
			     "were compared and identical comes with the first one, every "
			     "summary_interval_ms)\n",
			r->name, r->diff_lines);
	} else if (!(totals = route_totals(r, key))) {
		fprintf(out, "route %s: out of memory\n", r->name);
		return;
	} else {
		fprintf(out, "route %s: ", r->name);
		print_count_line(out, totals);
	}
	if (r->summary && !split) {
		print_newer(out, "  ", (long long)r->diff_lines - count_of(totals, "different"));
		print_summary_latency(out, "  ",
				      r->ndirs > 1 ? " (all directions together)"
				      : json_object_size(r->runs) > 1 ? LARGEST_RUN : "",
				      NULL, r->summary);
	}
	/* The index is not used after reading, so sorting in place is safe. */
	if (r->ndirs > 1) /* qsort must not be given NULL, even with 0 */
		qsort(r->dirs, r->ndirs, sizeof(*r->dirs), cmp_dir);
	const json_t *dirs = json_object_get(totals, "dirs");
	for (size_t i = 0; i < r->ndirs; i++)
		print_dir(out, r, &r->dirs[i], split ? json_object_get(dirs, r->dirs[i].label) : NULL);
	json_decref(totals);
}

static int cmp_route(const void *x, const void *y)
{
	return strcmp((*(struct route_agg *const *)x)->name, (*(struct route_agg *const *)y)->name);
}

static void print_skipped_lines(FILE *out, size_t n, const char *why, const char *first)
{
	if (n)
		fprintf(out, "%zu line%s skipped: %s (%s%s)\n", n, n == 1 ? "" : "s", why,
			n == 1 ? "" : "the first at ", first);
}

static int print_report(struct report *rp, FILE *out)
{
	struct route_agg **order = malloc((rp->nroutes + 1) * sizeof(*order));
	struct sp_buf key;
	if (!order)
		return -1;
	sp_buf_init(&key);
	for (size_t i = 0; i < rp->nroutes; i++)
		order[i] = &rp->routes[i];
	qsort(order, rp->nroutes, sizeof(*order), cmp_route);
	for (size_t i = 0; i < rp->nroutes; i++) {
		if (i)
			fputc('\n', out);
		print_route(out, order[i], &key);
	}
	if (rp->nroutes == 0)
		fprintf(out, "%s%s%sno diff or summary lines\n", rp->only ? "route " : "",
			rp->only ? rp->only : "", rp->only ? ": " : "");
	print_skipped_lines(out, rp->not_json, "not JSON", rp->first_bad[0]);
	print_skipped_lines(out, rp->unknown, "not a diff or summary line", rp->first_bad[1]);
	sp_buf_deinit(&key);
	free(order);
	return 0;
}

/* Writes text to out with the bytes a terminal would act on shown as \xNN
 * instead: C0 controls but the line ends, DEL, and C1 controls (U+0080 to
 * U+009F, bytes C2 80 to C2 9F in UTF-8). Route names, pointers and request
 * ids come from backends' answers and other people's files. */
static void write_shown(FILE *out, const char *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)t[i];
		if ((c < 0x20 && c != '\n') || c == 0x7f)
			fprintf(out, "\\x%02x", c);
		else if (c == 0xc2 && i + 1 < n && (unsigned char)t[i + 1] >= 0x80 &&
			 (unsigned char)t[i + 1] <= 0x9f)
			fprintf(out, "\\xc2\\x%02x", (unsigned char)t[++i]);
		else
			fputc(c, out);
	}
}

static void dir_deinit(struct dir_agg *d)
{
	for (size_t k = 0; k < d->ngroups; k++) {
		free(d->groups[k].label);
		for (size_t e = 0; e < d->groups[k].nex; e++)
			free(d->groups[k].ex[e]);
	}
	free(d->groups);
	free(d->label);
	free(d->primary);
	free(d->shadow);
	free(d->pms.v);
	free(d->sms.v);
	json_decref(d->last);
	json_decref(d->index);
}

static void report_deinit(struct report *rp)
{
	for (size_t i = 0; i < rp->nroutes; i++) {
		struct route_agg *r = &rp->routes[i];
		for (size_t k = 0; k < r->ndirs; k++)
			dir_deinit(&r->dirs[k]);
		free(r->dirs);
		free(r->name);
		json_decref(r->summary);
		json_decref(r->runs);
		json_decref(r->index);
	}
	free(rp->routes);
	json_decref(rp->index);
}

/* Reads one stream into rp: 0, -1 when memory runs out, -2 on a read error
 * (said, naming the file). */
static int read_stream(struct report *rp, FILE *in, const char *name, struct sp_buf *lab)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int rc = 0;
	rp->file = name;
	rp->lineno = 0;
	while (rc == 0 && (n = getline(&line, &cap, in)) >= 0) {
		rp->seq++;
		rp->lineno++;
		rc = process_line(rp, line, (size_t)n, lab);
	}
	if (rc == 0 && ferror(in)) {
		fprintf(stderr, "strangler diff-report: cannot read %s: %s\n", name, strerror(errno));
		rc = -2;
	}
	free(line);
	return rc;
}

static FILE *open_input(const char *file)
{
	FILE *in = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
	if (!in)
		fprintf(stderr, "strangler diff-report: cannot open %s: %s\n", file, strerror(errno));
	return in;
}

int sp_diff_report_files(const char *const *files, size_t nfiles, FILE *in, FILE *out,
			 const char *route)
{
	struct report rp = {.only = route, .index = json_object()};
	struct sp_buf lab;
	int rc = rp.index ? 0 : -1;
	/* the files read, by device and inode: one named twice (a.jsonl and
	 * ./a.jsonl, a glob and a name) is read once, or its differences would
	 * count twice */
	struct stat *seen = calloc(nfiles ? nfiles : 1, sizeof(*seen));
	size_t nseen = 0;
	sp_buf_init(&lab);
	if (!seen)
		rc = -1;
	for (size_t i = 0; rc == 0 && i < nfiles; i++) {
		FILE *f = in ? in : open_input(files[i]);
		struct stat st;
		int again = 0;
		if (!f) {
			rc = -2;
			break;
		}
		if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode)) {
			for (size_t j = 0; j < nseen && !again; j++)
				again = seen[j].st_dev == st.st_dev && seen[j].st_ino == st.st_ino;
			if (!again)
				seen[nseen++] = st;
		}
		if (again)
			fprintf(stderr, "strangler diff-report: %s: the same file as one named "
					"before: read once\n", files[i]);
		else
			rc = read_stream(&rp, f, strcmp(files[i], "-") == 0 ? "stdin" : files[i],
					 &lab);
		if (f != in && f != stdin)
			fclose(f);
	}
	free(seen);
	char *text = NULL;
	size_t len = 0;
	FILE *mem = rc == 0 ? open_memstream(&text, &len) : NULL;
	if (rc == 0 && !mem)
		rc = -1;
	if (rc == 0) {
		rc = print_report(&rp, mem);
		if (fclose(mem) != 0)
			rc = -1;
		else if (rc == 0)
			write_shown(out, text, len);
	}
	free(text);
	if (rc == -1)
		fprintf(stderr, "strangler diff-report: out of memory\n");
	sp_buf_deinit(&lab);
	report_deinit(&rp);
	return rc < 0 ? (rc == -1 ? -1 : 1) : 0;
}

int sp_diff_report(FILE *in, FILE *out, const char *route)
{
	const char *name = "-";
	return sp_diff_report_files(&name, 1, in, out, route) == 0 ? 0 : -1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: strangler diff-report FILE... [--route NAME]\n"
		   "\n"
		   "  FILE          a diff log (shadow_defaults.diff_log), or - for stdin; several\n"
		   "                files (instances, rotated logs) are read as one, in any order\n"
		   "  --route NAME  only this route\n"
		   "  --            what follows is a file, even one named -x\n");
}

int sp_diff_report_main(int argc, char **argv)
{
	const char *route = NULL;
	const char **files = calloc((size_t)argc, sizeof(*files));
	size_t nfiles = 0;
	int rc = 2;
	if (!files) {
		fprintf(stderr, "strangler diff-report: out of memory\n");
		return 1;
	}
	int options = 1; /* until "--": what follows it is a file, whatever its name */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (options && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)) {
			usage(stdout);
			rc = 0;
			goto out;
		}
		if (options && strcmp(a, "--") == 0) {
			options = 0;
		} else if (options && strcmp(a, "--route") == 0 && i + 1 < argc && argv[i + 1][0]) {
			route = argv[++i];
		} else if (options && strncmp(a, "--route=", 8) == 0 && a[8]) {
			route = a + 8;
		} else if (!options || a[0] != '-' || strcmp(a, "-") == 0) {
			files[nfiles++] = a;
		} else {
			fprintf(stderr, "strangler diff-report: %s: %s\n", a,
				strcmp(a, "--route") == 0 || strcmp(a, "--route=") == 0
					? "needs a route name"
					: "unknown option");
			goto usage;
		}
	}
	if (nfiles == 0) {
		fprintf(stderr, "strangler diff-report: no diff log named\n");
		goto usage;
	}
	rc = sp_diff_report_files(files, nfiles, NULL, stdout, route) == 0 ? 0 : 1;
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "strangler diff-report: cannot write the report\n");
		rc = 1;
	}
	goto out;
usage:
	usage(stderr);
out:
	free(files);
	return rc;
}
