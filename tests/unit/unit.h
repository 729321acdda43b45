/* Helpers shared by the unit tests: cmocka's include order, header literals,
 * request views and loading configs from strings. Header-only (static inline)
 * so each test file stays one executable. */
#ifndef SP_TEST_UNIT_H
#define SP_TEST_UNIT_H

/* cmocka.h needs these first. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "config.h"
#include "http.h"
#include "route.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* A header from two string literals (lengths exclude the NUL). */
#define HDR(n, v) {(n), sizeof(n) - 1, (v), sizeof(v) - 1}

/* The file name every config test loads under, so messages read "test.conf:LINE: ...". */
#define TEST_CONF "test.conf"

/* A request view with the path and query borrowed from C strings; its
 * parsed address (match.client_ip) is held until the next call. */
static inline struct sp_reqview unit_req(const char *method, const char *path, const char *query,
					 const struct sp_hdr *h, size_t nh, const char *client_ip)
{
	static struct sp_ip addr;
	int known = client_ip && sp_ip_parse(client_ip, strlen(client_ip), &addr) == 0;
	struct sp_reqview q = {method, path, strlen(path), query, query ? strlen(query) : 0,
			       h, nh, client_ip, known ? &addr : NULL};
	return q;
}

/* Loads text that must be valid; prints the diagnostics and fails otherwise.
 * The caller owns the result (sp_config_unref). */
static inline struct sp_config *unit_load_ok(const char *text, int *warnings)
{
	struct sp_diag d;
	sp_diag_init(&d);
	struct sp_config *c = sp_config_load_string(text, TEST_CONF, &d);
	if (!c || d.errors)
		print_error("config unexpectedly rejected:\n%s\n---\n%s", d.text.data ? d.text.data : "",
			    text);
	if (warnings)
		*warnings = d.warnings;
	int errors = d.errors;
	sp_diag_deinit(&d);
	assert_non_null(c);
	assert_int_equal(errors, 0);
	return c;
}

/* True when text holds want as a whole line; a want ending in '*' only has to
 * start a line (for messages that end with libc's wording). */
static inline int unit_has_line(const char *text, const char *want)
{
	size_t wl = strlen(want);
	int prefix = wl > 0 && want[wl - 1] == '*';
	if (prefix)
		wl--;
	for (const char *p = text; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t ll = nl ? (size_t)(nl - p) : strlen(p);
		if ((prefix ? ll >= wl : ll == wl) && memcmp(p, want, wl) == 0)
			return 1;
		p = nl ? nl + 1 : NULL;
	}
	return 0;
}

/* True when text holds each of msgs as a line (unit_has_line); says which not. */
static inline int unit_has_lines(const char *text, const char *const *msgs, size_t n)
{
	int ok = 1;
	for (size_t i = 0; i < n; i++) {
		if (!unit_has_line(text, msgs[i])) {
			print_error("missing line: %s\n", msgs[i]);
			ok = 0;
		}
	}
	return ok;
}

/* Loads text, which must fail with exactly nerrors errors (any number when
 * negative), each of msgs a line of the diagnostics. */
static inline void unit_rejected(const char *text, int nerrors, const char *const *msgs, size_t n,
			   int line)
{
	struct sp_diag d;
	sp_diag_init(&d);
	struct sp_config *c = sp_config_load_string(text, TEST_CONF, &d);
	const char *out = d.text.data ? d.text.data : "";
	int ok = unit_has_lines(out, msgs, n) && c == NULL && (nerrors < 0 || d.errors == nerrors);
	if (!ok)
		print_error("test line %d: config %s with %d errors, diagnostics:\n%s---\n%s\n", line,
			    c ? "LOADED" : "rejected", d.errors, out, text);
	sp_config_unref(&c);
	sp_diag_deinit(&d);
	assert_true(ok);
}

#define MSGS(...) ((const char *const[]){__VA_ARGS__})
/* REJECTED(text, number of errors, expected lines...) */
#define REJECTED(text, nerr, ...) \
	unit_rejected((text), (nerr), MSGS(__VA_ARGS__), NELEM(MSGS(__VA_ARGS__)), __LINE__)

/* Index of the route called name in c (fails the test when absent). */
static inline const struct sp_route *unit_route(const struct sp_config *c, const char *name)
{
	for (size_t i = 0; i < c->nroutes; i++)
		if (c->routes[i].name && strcmp(c->routes[i].name, name) == 0)
			return &c->routes[i];
	print_error("no route named \"%s\"\n", name);
	fail();
	return NULL;
}

#endif
