/* Fuzzes configuration loading: any text either loads into a consistent
 * generation with no errors, or is refused with every problem reported as a
 * "fuzz.conf:LINE: ..." line; nothing crashes or leaks either way.
 *
 * Input: configuration text (cut at the first NUL, as a C string is). Texts
 * with libconfig's @include are skipped: they would read other files. Host
 * names resolve through fake_resolver.c, never through DNS. */
#include <string.h>
#include <strings.h>

#include "config.h"
#include "fuzz.h"

#define NAME "fuzz.conf"

static int has_include(const char *text)
{
	for (const char *p = text; (p = strchr(p, '@')) != NULL; p++)
		if (strncasecmp(p, "@include", 8) == 0)
			return 1;
	return 0;
}

/* Each line names the file; as many lines as diagnostics, and no control
 * characters (a value quoted from the file must not break tools that read one
 * error per line, nor write escape sequences to a terminal). */
static void check_diag(const struct sp_diag *d)
{
	const char *p = d->text.data ? d->text.data : "";
	int lines = 0;
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		FUZZ_CHECK(strncmp(p, NAME ":", sizeof(NAME)) == 0,
			   "diagnostic line without the file name: \"%.*s\"", (int)len, p);
		for (size_t i = 0; i < len; i++)
			FUZZ_CHECK((unsigned char)p[i] >= 0x20 && p[i] != 0x7f,
				   "control character 0x%02x in \"%.*s\"", (unsigned char)p[i],
				   (int)len, p);
		lines++;
		p += len + (nl != NULL);
	}
	FUZZ_CHECK(lines == d->errors + d->warnings, "%d lines for %d errors and %d warnings:\n%s",
		   lines, d->errors, d->warnings, d->text.data ? d->text.data : "");
}

static int backend_ok(const struct sp_config *c, int b)
{
	return b >= 0 && (size_t)b < c->nbackends;
}

/* A generation that loaded is one the proxy can run with no further checks. */
static void check_config(const struct sp_config *c)
{
	FUZZ_CHECK(c->nlisten >= 1 && c->nbackends >= 1, "%zu listen, %zu backends", c->nlisten,
		   c->nbackends);
	FUZZ_CHECK(backend_ok(c, c->default_backend), "default backend %d", c->default_backend);
	FUZZ_CHECK(c->workers >= 1, "%d workers", c->workers);
	for (size_t i = 0; i < c->nlisten; i++)
		FUZZ_CHECK(c->listen[i].address && c->listen[i].addrlen > 0, "listen %zu", i);
	for (size_t i = 0; i < c->nbackends; i++) {
		const struct sp_backend *b = &c->backends[i];
		FUZZ_CHECK(b->name && b->nservers >= 1 && b->nservers <= SP_SERVERS_MAX,
			   "backend %zu: %zu servers", i, b->nservers);
		for (size_t k = 0; k < b->nservers; k++) {
			const struct sp_server *sv = &b->servers[k];
			FUZZ_CHECK(sv->url && sv->host && sv->hostport && sv->addrlen > 0,
				   "backend %zu server %zu incomplete", i, k);
		}
	}
	for (size_t i = 0; i < c->nroutes; i++) {
		const struct sp_route *r = &c->routes[i];
		FUZZ_CHECK(r->name && *r->name && r->index == (int)i, "route %zu name/index", i);
		FUZZ_CHECK(backend_ok(c, r->backend), "route %s backend %d", r->name, r->backend);
		if (r->match.path_prefix)
			FUZZ_CHECK(r->match.prefix_len == strlen(r->match.path_prefix) &&
					   r->match.prefix_len > 0,
				   "route %s prefix", r->name);
		if (r->has_rollout) {
			FUZZ_CHECK(backend_ok(c, r->rollout.backend), "route %s rollout backend %d",
				   r->name, r->rollout.backend);
			FUZZ_CHECK(r->rollout.percent_bp <= 10000, "route %s rollout %u bp",
				   r->name, r->rollout.percent_bp);
			FUZZ_CHECK(r->rollout.cohort && *r->rollout.cohort, "route %s cohort",
				   r->name);
			FUZZ_CHECK(r->rollout.nsticky <= SP_STICKY_MAX, "route %s: %zu sticky keys",
				   r->name, r->rollout.nsticky);
			for (size_t k = 0; k < r->rollout.nsticky; k++) {
				const struct sp_sticky *st = &r->rollout.sticky[k];
				FUZZ_CHECK((st->kind == SP_STICKY_CLIENT_IP && k + 1 == r->rollout.nsticky) ||
						   (st->kind != SP_STICKY_NONE &&
						    st->kind != SP_STICKY_CLIENT_IP && st->name && *st->name),
					   "route %s sticky key %zu", r->name, k);
			}
			FUZZ_CHECK(!r->rollout.set_cookie ||
					   (r->rollout.nsticky &&
					    r->rollout.sticky[r->rollout.nsticky - 1].kind ==
						    SP_STICKY_COOKIE),
				   "route %s set_cookie without its cookie", r->name);
		}
		if (r->has_shadow) {
			const struct sp_shadow_cfg *s = &r->shadow;
			FUZZ_CHECK(backend_ok(c, s->backend) ||
					   (s->backend == SP_SHADOW_OTHER && r->has_rollout),
				   "route %s shadow backend %d", r->name, s->backend);
			FUZZ_CHECK(s->percent_bp <= 10000 && s->body >= 0 && s->body <= 3 &&
					   s->nmethods > 0,
				   "route %s shadow", r->name);
		}
		for (size_t j = 0; j < c->nroutes; j++)
			(void)sp_route_covers(&c->routes[j], r);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	if (has_include(text) || fuzz_regex_too_costly(text, size)) {
		free(text);
		return 0;
	}
	struct sp_diag d;
	sp_diag_init(&d);
	struct sp_config *c = sp_config_load_string(text, NAME, &d);
	check_diag(&d);
	FUZZ_CHECK((c != NULL) == (d.errors == 0), "config %p with %d errors:\n%s", (void *)c,
		   d.errors, d.text.data ? d.text.data : "");
	if (c) {
		check_config(c);
		struct sp_config *ref = sp_config_ref(c);
		sp_config_unref(&ref);
		sp_config_unref(&c);
		FUZZ_CHECK(c == NULL, "unref leaves the pointer set");
	}
	sp_diag_deinit(&d);
	free(text);
	return 0;
}
