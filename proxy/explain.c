/* `strangler explain`: which route, sticky key, bucket and backend a request
 * would get, computed by the same pure functions the proxy uses, without
 * sending anything. */
#include "explain.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "override.h"
#include "h1.h"
#include "pathnorm.h"
#include "realip.h"
#include "rewrite.h"
#include "route.h"

/* "none", "header:X-User-Id", or "header:X-User-Id, then client_ip" */
static const char *sticky_text(const struct sp_rollout *ro, char *buf, size_t len)
{
	size_t at = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < ro->nsticky && at + 1 < len; i++) {
		char one[160];
		int w = snprintf(buf + at, len - at, "%s%s", i ? ", then " : "",
				 sp_sticky_text(&ro->sticky[i], one, sizeof(one)));
		at += w > 0 ? (size_t)w : 0;
	}
	return ro->nsticky ? buf : "none";
}

/* Fills headers from "-H 'Name: value'" arguments; returns -1 on a bad one. */
static int add_header(struct sp_hdr *h, const char *arg)
{
	const char *colon = strchr(arg, ':');
	if (!colon || colon == arg)
		return -1;
	const char *v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	/* blanks around a value are not part of it, as in h1.c */
	*h = (struct sp_hdr){arg, (size_t)(colon - arg), v, sp_value_len(v, strlen(v))};
	return 0;
}

/* The path backend b receives, when its path_rewrite changes it. */
static void print_rewrite(const struct sp_config *c, int b, const struct sp_reqview *q)
{
	const struct sp_backend *be = &c->backends[b];
	struct sp_buf out;
	sp_buf_init(&out);
	int k = sp_rewrite_path(be->rewrite, be->nrewrite, q->path, q->path_len, &out);
	if (k >= 0)
		printf("sent as:  %s%s%.*s to %s (its path_rewrite.[%d]: \"%s\" to \"%s\")\n",
		       out.data, q->query ? "?" : "", (int)q->query_len, q->query ? q->query : "",
		       be->name, k, be->rewrite[k].prefix, be->rewrite[k].to);
	sp_buf_deinit(&out);
}

/* Names of rules r: "set A, B; remove C" (values stay in the file: an API
 * key in a pasted output is a leak). */
static void print_rule_names(const char *label, const struct sp_hdr_rules *r, const char *extra)
{
	if (!sp_hdr_rules_any(r) && !extra)
		return;
	printf("%s", label);
	const char *sep = "";
	if (extra) {
		printf("%s", extra);
		sep = "; ";
	}
	for (size_t i = 0; i < r->nset; i++)
		printf("%s%s%s", i ? ", " : sep, i ? "" : "set ", r->set_name[i]);
	if (r->nset)
		sep = "; ";
	for (size_t i = 0; i < r->nremove; i++)
		printf("%s%s%s", i ? ", " : sep, i ? "" : "remove ", r->remove[i]);
	printf("\n");
}

/* What backend b changes of a request's and an answer's header fields. */
static void print_header_rules(const struct sp_config *c, int b)
{
	const struct sp_backend *be = &c->backends[b];
	char label[SP_NAME_MAX + 32], host[300];
	if (be->host_header)
		snprintf(host, sizeof(host), "Host %s (host_header)", be->host_header);
	snprintf(label, sizeof(label), "headers:  to %s: ", be->name);
	print_rule_names(label, &be->req_headers, be->host_header ? host : NULL);
	snprintf(label, sizeof(label), "answers:  from %s: ", be->name);
	print_rule_names(label, &be->resp_headers,
			 be->location_map ? "Location in the client's terms (location_rewrite)"
					  : NULL);
}

/* Everything backend b changes of what it is sent and what it answers. */
static void print_changes(const struct sp_config *c, int b, const struct sp_reqview *q)
{
	print_rewrite(c, b, q);
	print_header_rules(c, b);
}

/* The answer of a route that answers itself, its Location as this request
 * would have it (no request id: explain has none). */
/* What llhttp's strict mode refuses of a request's framing, which the
 * proxy answers 400 (in llhttp's words) before routing: explain has no
 * parser to ask. 0 or 400 with *why. */
static int framing_error(const struct sp_hdr *h, size_t n, const char **why)
{
	size_t lengths = 0, codings = 0;
	for (size_t i = 0; i < n; i++) {
		if (sp_hdr_name_is(&h[i], "Transfer-Encoding"))
			codings++;
		if (!sp_hdr_name_is(&h[i], "Content-Length"))
			continue;
		size_t digits = 0;
		while (digits < h[i].value_len && h[i].value[digits] >= '0' && h[i].value[digits] <= '9')
			digits++;
		if (digits == 0 || digits < h[i].value_len) {
			*why = "Invalid character in Content-Length";
			return 400;
		}
		lengths++;
	}
	*why = lengths > 1 ? "Duplicate Content-Length"
	       : lengths && codings ? "Content-Length can't be present with Transfer-Encoding"
				    : NULL;
	return *why ? 400 : 0;
}

static void print_return(const struct sp_return *r, const struct sp_reqview *q,
			 struct sp_buf *scratch)
{
	struct sp_hdr_vars v;
	sp_return_vars(q, "http", NULL, &v);
	printf("answer:   %d %s (the route answers itself: return; no backend)\n", r->status,
	       sp_http_reason(r->status));
	sp_buf_reset(scratch);
	if (r->location && sp_return_location(r, &v, scratch) == 0)
		printf("location: %.*s%s\n", (int)scratch->len, scratch->data ? scratch->data : "",
		       strstr(r->location, "$host") && !sp_hdr_find(q->headers, q->nheaders, "Host")
			       ? " (no -H 'Host: ...' given: $host is empty here, the request's Host "
				 "in the proxy)"
			       : "");
	if (r->body && strcmp(q->method, "HEAD") != 0) /* a HEAD gets the head alone */
		printf("body:     %zu bytes, %s\n", r->body_len, r->content_type);
}

static void print_decision(const struct sp_config *c, const struct sp_reqview *q,
			   const struct sp_decision *d, struct sp_buf *scratch)
{
	char sbuf[160];
	if (!d->route) {
		printf("route:    (none: default_backend)\n");
	} else {
		printf("route:    %s (%s:%d)\n", d->route->name, d->route->file, d->route->line);
	}
	if (d->route && d->route->ret.status) {
		print_return(&d->route->ret, q, scratch);
		return;
	}
	const struct sp_backend *be = &c->backends[d->backend];
	if (d->route && d->rolled) {
		const struct sp_rollout *ro = &d->route->rollout;
		const char *key;
		size_t klen;
		printf("rollout:  %u.%02u%% to %s, cohort \"%s\", sticky %s\n", ro->percent_bp / 100,
		       ro->percent_bp % 100, c->backends[ro->backend].name, ro->cohort,
		       sticky_text(ro, sbuf, sizeof(sbuf)));
		if (d->sticky && sp_rollout_key(ro, q, scratch, &key, &klen)) {
			/* as a JSON string: a decoded %0A or %00 in it can neither
			 * break the line nor cut it */
			struct sp_buf shown;
			sp_buf_init(&shown);
			sp_buf_add_json_bytes(&shown, key, klen);
			printf("key:      \"%.*s\"", (int)shown.len, shown.data ? shown.data : "");
			sp_buf_deinit(&shown);
			if (ro->nsticky > 1)
				printf(" (%s)", sp_sticky_text(&ro->sticky[d->sticky - 1], sbuf,
							       sizeof(sbuf)));
			printf("\n");
			printf("bucket:   %u (rollout side when below %u)\n", d->bucket, ro->percent_bp);
		} else {
			if (ro->set_cookie)
				printf("key:      (absent: strangler draws one and the answer sets "
				       "cookie %s to it: the side is random once, then sticky)\n",
				       ro->sticky[ro->nsticky - 1].name);
			else
				printf("key:      (absent: the side is chosen at random per request)\n");
			printf("backend:  %s with probability %u.%02u%%, else %s\n",
			       c->backends[ro->backend].name, ro->percent_bp / 100,
			       ro->percent_bp % 100, c->backends[d->route->backend].name);
			print_changes(c, ro->backend, q);
			print_changes(c, d->route->backend, q);
			return;
		}
	}
	printf("backend:  %s (", be->name);
	for (size_t i = 0; i < be->nservers; i++) {
		const struct sp_server *sv = &be->servers[i];
		printf("%s%s", i ? ", " : "", sv->url);
		if (sv->weight != 1) /* as nginx writes them */
			printf(" weight=%d", sv->weight);
		if (sv->backup)
			printf(" backup");
	}
	printf(")%s", be->least_conn ? " least_conn" : "");
	if (be->max_conns)
		printf(" max_conns=%d", be->max_conns);
	if (be->queue_max)
		printf(" queue=%d/%dms", be->queue_max, be->queue_timeout_ms);
	for (int st = 400, n = 0; st < 600; st++)
		if (sp_backend_retries_status(be, st))
			printf("%s%d", n++ ? "," : " retry_on_status=", st);
	if (be->per_try_timeout_ms)
		printf(" per_try_timeout_ms=%d", be->per_try_timeout_ms);
	if (be->slow_start_ms)
		printf(" slow_start_ms=%d", be->slow_start_ms);
	printf("\n");
	print_changes(c, d->backend, q);
}

#define EXPLAIN_USAGE                                                                      \
	"usage: strangler explain [-c FILE] [-H 'Name: value']... [--client-ip ADDR] METHOD " \
	"TARGET\n"

int sp_explain_main(int argc, char **argv)
{
	const char *file = "conf/strangler.conf", *client_ip = "127.0.0.1";
	struct sp_hdr headers[64];
	size_t nheaders = 0;
	int opt, rc = 1;
	static const struct option longopts[] = {{"client-ip", required_argument, NULL, 'a'},
						 {"help", no_argument, NULL, 'h'},
						 {NULL, 0, NULL, 0}};
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:H:h", longopts, NULL)) != -1) {
		if (opt == 'h') {
			printf("%s", EXPLAIN_USAGE);
			return 0;
		} else if (opt == 'c') {
			file = optarg;
		} else if (opt == 'a') {
			client_ip = optarg;
		} else if (opt == 'H' && nheaders < 64 && add_header(&headers[nheaders], optarg) == 0) {
			nheaders++;
		} else if (opt == 'H') {
			fprintf(stderr, "explain: -H \"%s\": a header is 'Name: value' (at most 64)\n",
				optarg);
			return 2;
		} else {
			fprintf(stderr, "%s", EXPLAIN_USAGE);
			return 2;
		}
	}
	if (argc - optind != 2) {
		fprintf(stderr, "%s", EXPLAIN_USAGE);
		return 2;
	}
	/* the address as the proxy writes it (an IPv4-mapped one as IPv4): the
	 * client_ip key hashes that text, match.client_ip tests the address */
	struct sp_ip addr;
	char addr_text[INET6_ADDRSTRLEN];
	if (sp_ip_parse(client_ip, strlen(client_ip), &addr) < 0) {
		fprintf(stderr, "explain: --client-ip \"%s\": not an IPv4 or IPv6 address\n",
			client_ip);
		return 2;
	}
	sp_ip_text(&addr, addr_text);
	const char *method = argv[optind], *target = argv[optind + 1];
	struct sp_diag diag;
	struct sp_buf path, scratch;
	sp_diag_init(&diag);
	sp_buf_init(&path);
	sp_buf_init(&scratch);
	struct sp_config *c = sp_config_load(file, &diag);
	if (c) { /* the runtime changes saved beside the file apply, as they do when it runs */
		struct sp_config *saved = sp_state_apply_saved(c, file, &diag);
		sp_config_unref(&c);
		c = saved; /* NULL: a state file the start would stop on */
	}
	fputs(diag.text.data ? diag.text.data : "", stderr);
	if (!c)
		goto out;
	/* the target as the proxy takes it: llhttp refuses bytes outside
	 * visible ASCII, then sp_split_target (http.c) drops a fragment and an
	 * absolute-form authority, and normalises the path */
	/* the proxy's verdict in its order (sp_request_verdict): the version
	 * (PRI opens HTTP/2), CONNECT, then the target */
	if (strcmp(method, "PRI") == 0 || strcmp(method, "CONNECT") == 0) {
		int http2 = method[0] == 'P';
		printf("request:  %s %s\nanswer:   %d (%s)\n", method, target, http2 ? 505 : 405,
		       http2 ? SP_H1_NO_HTTP2 : "CONNECT is not supported");
		rc = 0;
		goto out;
	}
	if (!sp_h1_method_known(method)) {
		printf("request:  %s %s\nanswer:   501 (a method the parser does not know; methods "
		       "are case-sensitive)\n", method, target);
		rc = 0;
		goto out;
	}
	size_t tlen = strlen(target);
	while (*target == ' ') /* blanks a shell quote may have kept */
		target++, tlen--;
	while (tlen && target[tlen - 1] == ' ')
		tlen--;
	for (size_t i = 0; i < tlen; i++)
		if ((unsigned char)target[i] <= ' ' || (unsigned char)target[i] >= 0x7f) {
			printf("request:  %s %.*s\nanswer:   400 (a character the request line does not "
			       "allow)\n", method, (int)tlen, target);
			rc = 0;
			goto out;
		}
	const char *query;
	size_t qlen;
	int prc = sp_split_target(method, target, tlen, &path, &query, &qlen);
	if (prc != SP_PATH_OK || (c->limits.reject_escaped_slashes &&
				  sp_path_has_escaped_slash(path.data, path.len))) {
		printf("request:  %s %.*s\nanswer:   400 (%s)\n", method, (int)tlen, target,
		       prc != SP_PATH_OK ? sp_path_strerror(prc) : SP_PATH_ESCAPED_SLASH_WHY);
		rc = 0;
		goto out;
	}
	/* the header checks as the proxy makes them on HTTP/1.1 (a bad or a
	 * second Host is a 400 before routing); without -H 'Host: ...', as for
	 * a request with some valid Host */
	struct sp_hdr checked[65];
	const char *why;
	memcpy(checked, headers, nheaders * sizeof(*headers));
	size_t nchecked = nheaders;
	if (!sp_hdr_find(headers, nheaders, "Host"))
		checked[nchecked++] = (struct sp_hdr){"Host", 4, "explain.invalid", 15};
	int st = sp_http_check_request(checked, nchecked, 1, &why);
	if (!st)
		st = framing_error(headers, nheaders, &why);
	/* an absolute-form target's host is the request's Host (routing by
	 * host reads it), with or without -H 'Host: ...' */
	if (!st)
		st = sp_http_absolute_host(target, tlen, headers, &nheaders, 64, &why);
	if (st) {
		printf("request:  %s %.*s\nanswer:   %d (%s)\n", method, (int)tlen, target, st, why);
		rc = 0;
		goto out;
	}
	/* a trusted peer's X-Forwarded-For names the client, as in the proxy */
	struct sp_ip peer = addr;
	int forwarded = c->ntrusted && sp_cidr_has(c->trusted, c->ntrusted, &addr) &&
			sp_realip_xff(c->trusted, c->ntrusted, headers, nheaders, &addr) > 0;
	if (forwarded)
		sp_ip_text(&addr, addr_text);
	struct sp_reqview q = {method, path.data, path.len, query, qlen, headers, nheaders, addr_text,
			       &addr};
	struct sp_decision d;
	uint64_t rng = 1;
	sp_decide(c->routes, c->nroutes, c->route_index, c->default_backend, &q, &rng, &scratch, &d);
	printf("request:  %s %.*s\n", method, (int)tlen, target);
	printf("path:     %s\n", path.data);
	if (forwarded) {
		char peer_text[INET6_ADDRSTRLEN];
		sp_ip_text(&peer, peer_text);
		printf("client:   %s (X-Forwarded-For: %s is a trusted proxy)\n", addr_text, peer_text);
	}
	print_decision(c, &q, &d, &scratch);
	rc = 0;
out:
	sp_config_unref(&c);
	sp_buf_deinit(&path);
	sp_buf_deinit(&scratch);
	sp_diag_deinit(&diag);
	return rc;
}
