/* How two answers to the same request differ: status, chosen headers and the
 * body (JSON-aware, after undoing gzip/deflate). Pure: plain structs in, a
 * list of differences out, so unit tests and fuzzers reach every rule. */
#ifndef SP_COMPARE_H
#define SP_COMPARE_H

#include <jansson.h>
#include <stddef.h>

#include "buf.h"
#include "http.h"

enum sp_cmp_body {
	SP_CMP_AUTO,  /* JSON when both Content-Types are JSON, else bytes */
	SP_CMP_JSON,  /* JSON; bytes (with a note) when either side does not parse */
	SP_CMP_BYTES, /* byte for byte after Content-Encoding is undone */
	SP_CMP_NONE,  /* bodies are not compared */
};

/* What a route compares. Borrowed by sp_compare; owned by the config. */
struct sp_cmp_rules {
	char **headers; /* header names compared (names case-insensitive, values exact) */
	size_t nheaders;
	char **ignore;  /* RFC 6901 JSON Pointers skipped, with their subtrees;
			 * a segment "*" matches any key or array index */
	size_t nignore;
	enum sp_cmp_body body;
	/* a body that decompresses past this many bytes is not compared
	 * (sp_cmp_note_too_large); 0: SP_CMP_INFLATE_MAX */
	size_t max_decoded;
};

/* One answer. Everything is borrowed for the duration of sp_compare. */
struct sp_cmp_side {
	int status;
	const struct sp_hdr *headers;
	size_t nheaders;
	const char *body; /* as received: may be gzip/deflate per Content-Encoding */
	size_t body_len;
};

enum sp_diff_kind { SP_DIFF_STATUS, SP_DIFF_HEADER, SP_DIFF_BODY, SP_DIFF_JSON };

/* All strings are owned by the result (sp_cmp_result_deinit frees them). */
struct sp_diff {
	enum sp_diff_kind kind;
	/* status: NULL; header: the configured name; json: the JSON Pointer
	 * (RFC 6901 escaped, "" for the root; past SP_CMP_WHERE_MAX bytes cut
	 * and ended by "…"); body: "bytes@OFFSET", the first
	 * offset where the (decoded) bodies differ. */
	char *where;
	/* JSON text of each side's value, NULL when the side has none. Values
	 * whose text passes SP_CMP_VALUE_MAX bytes become a JSON string holding
	 * the first SP_CMP_VALUE_MAX bytes of that text (cut on a UTF-8
	 * boundary) followed by "…"; body diffs describe each side as
	 * "N bytes: <first 64 bytes>…", or, when the first difference lies
	 * past byte 48, "N bytes, from byte S: …<64 bytes>…" from 16 bytes
	 * before it. Reals are shown at 15 digits when that gives them back
	 * exactly, else at 17. */
	char *primary;
	char *shadow;
	int noise; /* set by sp_cmp_mark_noise */
};

struct sp_cmp_result {
	struct sp_diff *diffs;
	size_t ndiffs;
	/* Static string or NULL: why the comparison was partial or fell back
	 * (the first such reason when there are several). */
	const char *note;
};

#define SP_CMP_MAX_DIFFS 50
#define SP_CMP_VALUE_MAX 200
#define SP_CMP_WHERE_MAX 512
#define SP_CMP_BODY_PREFIX 64
#define SP_CMP_INFLATE_MAX (8u << 20)

/* Notes, compared by pointer when it matters (STYLE.md 8). */
extern const char sp_cmp_note_too_many[];     /* "more than 50 differences" */
extern const char sp_cmp_note_too_large[];    /* "decompressed body too large: not compared" */
extern const char sp_cmp_note_wide_ints[];     /* numbers compared to double precision */
extern const char sp_cmp_note_primary_undecodable[];
extern const char sp_cmp_note_shadow_undecodable[];
extern const char sp_cmp_note_primary_not_json[];
extern const char sp_cmp_note_shadow_not_json[];
extern const char sp_cmp_note_neither_json[];

/* Compares primary (what the client got) with shadow (the mirror's answer).
 * out needs no initialisation; it is always left valid for
 * sp_cmp_result_deinit. Returns 0, or -1 when memory runs out (out empty). */
int sp_compare(const struct sp_cmp_rules *rules, const struct sp_cmp_side *primary,
	       const struct sp_cmp_side *shadow, struct sp_cmp_result *out);

/* Marks each diff of r whose kind and where also occur in noise (a
 * comparison of two primary answers to the same request) with noise = 1.
 * Body diffs match on kind alone: their offset says nothing stable (see
 * sp_cmp_body_noise). Returns how many diffs of r are not noise. */
size_t sp_cmp_mark_noise(struct sp_cmp_result *r, const struct sp_cmp_result *noise);

/* Whether the bodies of primary and shadow differ only as two answers of
 * the primary do (sample): the shadow's (decoded) body is the sample's, or,
 * split into tokens (runs between blanks and value punctuation: a
 * timestamp or a number is one), all three have as many and wherever the
 * shadow's token differs from the primary's, the sample's does too. A body
 * difference that is not is real, whatever the sample's own differences. */
int sp_cmp_body_noise(const struct sp_cmp_rules *rules, const struct sp_cmp_side *primary,
		      const struct sp_cmp_side *shadow, const struct sp_cmp_side *sample);

void sp_cmp_result_deinit(struct sp_cmp_result *r);

/* True when pointer has as many segments as pattern and each segment is
 * equal or the pattern's is "*". Both are RFC 6901 escaped text. */
int sp_json_pointer_match(const char *pattern, const char *pointer);
/* 15 when "%.15g" gives back every real in v exactly (0.1, not
 * 0.10000000000000001), else 17: the JSON_REAL_PRECISION to show v with. */
int sp_json_real_precision(const json_t *v);

/* "auto", "json", "bytes" or "none" → 0 with *out set, else -1. */
int sp_cmp_body_parse(const char *s, enum sp_cmp_body *out);
const char *sp_cmp_kind_name(enum sp_diff_kind kind);

/* Appends r's diffs to b as a JSON array of
 * {"kind":"json","where":"/a/0","primary":..,"shadow":..,"noise":false}
 * (noise diffs only when include_noise). primary/shadow are already JSON.
 * Returns 0, or -1 when memory runs out (b is then as it was). */
int sp_cmp_diffs_json(const struct sp_cmp_result *r, int include_noise, struct sp_buf *b);

#endif
