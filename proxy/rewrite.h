/* What one backend gets, and gives, differently from the others: the paths
 * it serves the public ones under (backends.NAME.path_rewrite) and the
 * header fields set or removed on its requests and answers
 * (request_headers, response_headers). Pure: no I/O. */
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

/* Header fields set (every field of that name replaced by one with this
 * value) and names removed, on the heads one backend's exchanges carry. */
struct sp_hdr_rules {
	char **set_name, **set_value;
	size_t nset;
	char **remove;
	size_t nremove;
};

#define SP_HDR_RULES_MAX 64

static inline int sp_hdr_rules_any(const struct sp_hdr_rules *r)
{
	return r->nset || r->nremove;
}

/* Applies r to a head the proxy serialised (a request or status line, then
 * "Name: value\r\n" lines, then "\r\n"): every field line whose name r sets
 * or removes goes (names case-insensitive), then the set fields are added
 * last, in the order written. Applying the same rules twice changes
 * nothing more. 0, or -1 (no memory, or not such a head: unchanged). */
int sp_hdr_rules_apply(const struct sp_hdr_rules *r, struct sp_buf *head);

void sp_hdr_rules_deinit(struct sp_hdr_rules *r);

#endif
