/* Fuzzes `strangler diff-report` (diffreport.c), which reads diff logs that
 * may come from other versions, other instances or other hands: any input
 * gives a report, never a crash, a sanitizer report or a leak (diffreport.h:
 * malformed lines are counted, never fatal).
 *
 * Input: byte 0 bit 0 restricts the report to route "r"; the rest is the
 * log, read as it is. (Reports are not compared across orders: example
 * request ids are the first ones seen, and logs without instances count a
 * counter going down as a restart.) */
#include <string.h>

#include "diffreport.h"
#include "fuzz.h"

static char *report(const uint8_t *a, size_t na, const uint8_t *b, size_t nb, const char *route)
{
	char *in = malloc(na + nb + 1), *text = NULL;
	size_t tlen = 0;
	FUZZ_CHECK(in != NULL, "out of memory");
	if (na)
		memcpy(in, a, na);
	if (nb)
		memcpy(in + na, b, nb);
	FILE *f = fmemopen(in, na + nb + 1, "r"); /* +1: fmemopen wants a size > 0 */
	FILE *out = open_memstream(&text, &tlen);
	FUZZ_CHECK(f && out, "cannot open memory streams");
	/* the trailing byte is a NUL: a line with a NUL in it, skipped as any other */
	in[na + nb] = '\n';
	int rc = sp_diff_report(f, out, route);
	fclose(f);
	fclose(out);
	free(in);
	FUZZ_CHECK(rc == 0, "sp_diff_report failed (%d) on input that is only text", rc);
	FUZZ_CHECK(text != NULL, "no report");
	return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	free(report(data + 1, size - 1, NULL, 0, data[0] & 1 ? "r" : NULL));
	return 0;
}
