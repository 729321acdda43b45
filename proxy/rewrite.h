/* Path rewriting per backend (backends.NAME.path_rewrite): where a backend
 * serves the public paths routes match, when it does not serve them under
 * the same names. Pure: no I/O. */
#ifndef SP_REWRITE_H
#define SP_REWRITE_H

#include <stddef.h>

#include "buf.h"

/* A rule: a path under prefix (pathnorm.h's sp_path_has_prefix) has that
 * prefix replaced with to. Both are normalised paths. */
struct sp_rewrite {
	char *prefix;
	size_t prefix_len;
	char *to;
	size_t to_len;
};

#define SP_REWRITE_MAX 64

/* The path a backend with rules r[0..n) receives for normalised path: the
 * first rule whose prefix covers it applies. Returns the rule's index, with
 * out holding the new path (NUL-terminated, normalised); -1 when no rule
 * applies (path goes as it is; out untouched); -2 out of memory. */
int sp_rewrite_path(const struct sp_rewrite *r, size_t n, const char *path, size_t len,
		    struct sp_buf *out);

/* Frees r[0..n) and the array; *r is NULL after. */
void sp_rewrite_free(struct sp_rewrite **r, size_t n);

#endif
