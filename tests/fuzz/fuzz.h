/* Shared by the fuzz harnesses: the libFuzzer entry point, a failing check
 * that says what broke, and a reader that takes control bytes off the input.
 * Header-only so each harness stays one file plus its link set. */
#ifndef SP_FUZZ_H
#define SP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant is a bug in proxy/: say which one, then abort() so both
 * libFuzzer and the replay runner treat it as a crash. */
#define FUZZ_CHECK(cond, ...)                                                                      \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);   \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

/* A check for a bug already reported can be silenced while fuzzing for other
 * bugs: SP_FUZZ_KNOWN=id,id... (README.md lists the ids). The replay suite
 * never sets it; inputs that need it live in crashes/, not in corpus/. */
static inline int fuzz_known(const char *id)
{
	const char *v = getenv("SP_FUZZ_KNOWN");
	size_t n = strlen(id);
	while (v && *v) {
		size_t len = strcspn(v, ",");
		if (len == n && strncmp(v, id, n) == 0)
			return 1;
		v += len + (v[len] == ',');
	}
	return 0;
}

/* glibc's regcomp needs memory exponential in nested repetitions ("a" then
 * 22 '+' takes 2.8 GB), and the proxy compiles path_regex as written
 * (regcomp-blowup). While that is known, inputs that could hold such a
 * pattern are skipped: a regex bound ("{" then a digit) or many repetition
 * operators. */
static inline int fuzz_regex_too_costly(const char *s, size_t n)
{
	size_t ops = 0;
	if (!fuzz_known("regcomp-blowup"))
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '{' && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '9')
			return 1;
		ops += s[i] == '+' || s[i] == '*' || s[i] == '?';
	}
	return ops > 12;
}

struct fuzz_in {
	const uint8_t *p;
	size_t n;
};

/* The next byte, or 0 once the input is used up (so short inputs still run). */
static inline uint8_t fuzz_byte(struct fuzz_in *in)
{
	if (in->n == 0)
		return 0;
	in->n--;
	return *in->p++;
}

#endif
