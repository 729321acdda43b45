/* Unit tests of proxy/diffreport.c: a known diff log (diff lines, summary
 * lines, malformed lines) gives a known report. */
#include "unit.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "diffreport.h"

#define T "\"time\":\"2026-11-26T23:10:00.123Z\""

/* A diff line of route with one request id, the primary and shadow
 * backends, latencies and differences. */
#define DIFFD(route, id, pb, sb, pms, sms, diffs)                                                  \
	"{" T ",\"type\":\"diff\",\"route\":\"" route "\",\"method\":\"GET\",\"path\":\"/x\","    \
	"\"request_id\":\"" id "\",\"primary\":{\"backend\":\"" pb "\",\"status\":200,\"ms\":" pms  \
	"},\"shadow\":{\"backend\":\"" sb "\",\"status\":200,\"ms\":" sms                           \
	"},\"differences\":[" diffs "]}\n"
/* legacy -> modern */
#define DIFF(route, id, pms, sms, diffs) DIFFD(route, id, "legacy", "modern", pms, sms, diffs)
#define JD(where, noise)                                                                           \
	"{\"kind\":\"json\",\"where\":\"" where "\",\"primary\":1,\"shadow\":2,\"noise\":" noise "}"
#define SD "{\"kind\":\"status\",\"where\":null,\"primary\":200,\"shadow\":500,\"noise\":false}"
#define HD "{\"kind\":\"header\",\"where\":\"ETag\",\"primary\":\"\\\"a\\\"\",\"shadow\":null,\"noise\":false}"
#define BD "{\"kind\":\"body\",\"where\":\"bytes@12\",\"primary\":\"x\",\"shadow\":\"y\",\"noise\":false}"

static const char known_log[] =
	/* users first: routes are sorted in the report */
	DIFF("users", "u1", "3.0", "30", SD)
	DIFF("search", "r1", "1", "2", JD("/results/0/score", "false") "," JD("/results/3/score", "false")
		"," JD("/took", "true"))
	DIFF("search", "r2", "1", "2", JD("/results/1/score", "false") "," SD)
	"this is not JSON\n"
	"{" T ",\"type\":\"summary\",\"route\":\"search\",\"mirrored\":10,\"compared\":10,"
	"\"identical\":5,\"different\":5,\"noise\":0,\"skipped\":{},\"shadow_errors\":0,"
	"\"shadow_timeouts\":0,\"primary_ms\":{\"p50\":7,\"p99\":7},\"shadow_ms\":{\"p50\":7,\"p99\":7}}\n"
	DIFF("search", "r3", "1", "2", JD("/results/2/score", "false") "," BD)
	DIFF("search", "r4", "1", "2", JD("/results/12/score", "false") "," HD "," JD("/results", "false"))
	DIFF("search", "r4", "1", "2", JD("/results/7/score", "false"))
	"\n"
	"{\"type\":\"diff\"\n"
	"[1,2]\n"
	"{\"type\":\"other\",\"route\":\"search\"}\n"
	DIFF("users", "u2", "5.0", "0.25", BD)
	"{" T ",\"type\":\"summary\",\"route\":\"search\",\"mirrored\":120,\"compared\":118,"
	"\"identical\":100,\"different\":18,\"noise\":2,\"skipped\":{\"budget\":1,"
	"\"body_too_large\":1,\"primary_incomplete\":0},\"shadow_errors\":0,\"shadow_timeouts\":1,"
	"\"primary_ms\":{\"p50\":1.1,\"p99\":4.2},\"shadow_ms\":{\"p50\":1.5,\"p99\":9.0}}\n";

/* The report of log (restricted to route unless NULL); the caller frees. */
static char *report(const char *log, size_t len, const char *route)
{
	FILE *in = fmemopen((void *)(uintptr_t)log, len, "r");
	assert_non_null(in);
	char *text = NULL;
	size_t tlen = 0;
	FILE *out = open_memstream(&text, &tlen);
	assert_non_null(out);
	assert_int_equal(sp_diff_report(in, out, route), 0);
	fclose(in);
	fclose(out);
	return text;
}

static void expect_has(const char *text, const char *want)
{
	if (!strstr(text, want))
		print_error("report lacks \"%s\":\n%s", want, text);
	assert_non_null(strstr(text, want));
}

static void expect_lacks(const char *text, const char *unwanted)
{
	if (strstr(text, unwanted))
		print_error("report has \"%s\":\n%s", unwanted, text);
	assert_null(strstr(text, unwanted));
}

static void test_known_log(void **state)
{
	(void)state;
	char *t = report(known_log, strlen(known_log), NULL);
	/* the last summary line wins */
	expect_has(t, "route search: 118 compared, 100 identical (84.7 %), 18 different (15.3 %), "
		      "2 noise, 2 skipped (budget 1, body_too_large 1), 1 shadow timeout\n");
	/* summaries from before the split by direction: the route's latency */
	expect_has(t, "  latency p50/p99: primary 1.1/4.2 ms, shadow 1.5/9.0 ms\n"
		      "  legacy -> modern: 5 different exchanges logged\n");
	/* indexes fold into "*", each line counts once, r4 has two lines but one example */
	expect_has(t, "    top differences:\n"
		      "      json /results/*/score  5  e.g. r1, r2, r3\n"
		      "      body bytes             1  e.g. r3\n"
		      "      header ETag            1  e.g. r4\n"
		      "      json /results          1  e.g. r4\n"
		      "      status                 1  e.g. r2\n");
	expect_lacks(t, "/took"); /* noise is not a finding */
	expect_lacks(t, "5 compared");

	/* no summary: counted from the diff lines, latency from them too */
	expect_has(t, "\n\nroute users: 2 different exchanges logged (no summary line yet: how "
		      "many were compared and identical comes with the first one, every "
		      "summary_interval_ms)\n"
		      "  legacy -> modern: 2 different exchanges logged\n"
		      "    latency p50/p99 (differing exchanges only): primary legacy 3.0/5.0 ms, "
		      "shadow modern 0.25/30.0 ms\n"
		      "    top differences:\n"
		      "      body bytes  1  e.g. u2\n"
		      "      status      1  e.g. u1\n");
	assert_true(strstr(t, "route search") < strstr(t, "route users"));
	/* where the first skipped line is, to look at it */
	expect_has(t, "2 lines skipped: not JSON (the first at stdin:4)\n");
	/* [1,2], type other */
	expect_has(t, "2 lines skipped: not a diff or summary line (the first at stdin:11)\n");
	assert_int_equal(strncmp(t, "route search:", 13), 0);
	free(t);
}

/* Only all-digit segments fold into "*": an empty key ("" in {"": {...}})
 * is not an index, nor is "1a". */
static void test_only_digit_segments_fold(void **state)
{
	(void)state;
	static const char log[] = DIFF("r", "e1", "1", "1", JD("//v", "false"))
		DIFF("r", "e2", "1", "1", JD("/7/v", "false")) DIFF("r", "e3", "1", "1", JD("/1a/v", "false"));
	char *t = report(log, strlen(log), NULL);
	expect_has(t, "      json //v    1  e.g. e1\n");
	expect_has(t, "      json /*/v   1  e.g. e2\n");
	expect_has(t, "      json /1a/v  1  e.g. e3\n");
	free(t);
}

static void test_route_filter(void **state)
{
	(void)state;
	char *t = report(known_log, strlen(known_log), "users");
	expect_has(t, "route users: 2 different exchanges logged");
	expect_lacks(t, "route search");
	expect_lacks(t, "results");
	free(t);

	t = report(known_log, strlen(known_log), "nope");
	expect_has(t, "route nope: no diff or summary lines\n");
	free(t);
}

static void test_top_rows(void **state)
{
	(void)state;
	struct sp_buf log;
	sp_buf_init(&log);
	/* 12 kinds, /k0 most frequent; ties sort by name */
	for (int k = 0; k < 12; k++)
		for (int n = 0; n < (k == 0 ? 5 : 1) + (k == 11 ? 1 : 0); n++)
			sp_buf_printf(&log,
				      DIFF("r", "id%d", "1", "1", "{\"kind\":\"json\",\"where\":\"/k%02d\","
								  "\"primary\":1,\"shadow\":2,\"noise\":false}"),
				      n, k);
	char *t = report(log.data, log.len, NULL);
	expect_has(t, "route r: 17 different exchanges logged");
	expect_has(t, "    top differences:\n"
		      "      json /k00  5  e.g. id0, id1, id2\n"
		      "      json /k11  2  e.g. id0, id1\n"
		      "      json /k01  1  e.g. id0\n");
	expect_has(t, "      json /k08  1  e.g. id0\n"
		      "      (2 more kinds of difference)\n");
	expect_lacks(t, "/k09");
	expect_lacks(t, "skipped");
	free(t);
	sp_buf_deinit(&log);
}

static void test_summary_edge_cases(void **state)
{
	(void)state;
	static const char log[] =
		"{\"type\":\"summary\",\"route\":\"idle\",\"mirrored\":3,\"compared\":0,"
		"\"identical\":0,\"different\":0,\"noise\":0,\"skipped\":{\"budget\":0},"
		"\"shadow_errors\":2,\"shadow_timeouts\":3,\"primary_ms\":{\"p50\":0,\"p99\":0},"
		"\"shadow_ms\":{\"p50\":0,\"p99\":0}}\n";
	char *t = report(log, strlen(log), NULL);
	assert_string_equal(t, "route idle: 0 compared, 0 identical, 0 different, 0 noise, 0 skipped, "
			       "2 shadow errors, 3 shadow timeouts\n");
	free(t);

	t = report("\n", 1, NULL); /* blank lines are not counted */
	assert_string_equal(t, "no diff or summary lines\n");
	free(t);
}

/* A log appended to across restarts holds several runs, each with counters
 * from zero: their last summaries add up (the report showed only the last
 * run's counts beside all runs' difference lines). */
static void test_runs_add_up(void **state)
{
	(void)state;
#define SUMMARY(m, c, i, d, b)                                                                      \
	"{\"type\":\"summary\",\"route\":\"r\",\"mirrored\":" m ",\"compared\":" c ",\"identical\":" i \
	",\"different\":" d ",\"noise\":0,\"skipped\":{\"budget\":" b "},\"shadow_errors\":0,"          \
	"\"shadow_timeouts\":0,\"primary_ms\":{\"p50\":1,\"p99\":2},\"shadow_ms\":{\"p50\":1,\"p99\":2}}\n"
	static const char log[] = SUMMARY("50", "50", "40", "10", "1") SUMMARY("100", "100", "70", "30", "2")
		/* restart */ SUMMARY("5", "5", "5", "0", "0") SUMMARY("10", "10", "8", "2", "1");
#undef SUMMARY
	char *t = report(log, strlen(log), NULL);
	expect_has(t, "route r: 110 compared, 78 identical (70.9 %), 32 different (29.1 %), 0 noise, "
		      "3 skipped (budget 3)");
	free(t);
}

/* A summary line of route r from instance inst, c mirrored and compared. */
#define ISUMMARY(inst, c, i, d)                                                                   \
	"{\"type\":\"summary\",\"route\":\"r\",\"instance\":\"" inst "\",\"mirrored\":" c          \
	",\"compared\":" c ",\"identical\":" i ",\"different\":" d ",\"noise\":0,\"skipped\":{},"    \
	"\"shadow_errors\":0,\"shadow_timeouts\":0,\"primary_ms\":{\"p50\":1,\"p99\":2},"            \
	"\"shadow_ms\":{\"p50\":1,\"p99\":2}}\n"

/* Differing exchanges logged after the last summary (a reload, a restart,
 * traffic since): said, not silently beside counts that lack them. */
static void test_diff_lines_after_the_last_summary(void **state)
{
	(void)state;
	static const char log[] = ISUMMARY("h:1:9", "4", "3", "1") DIFF("r", "a", "1", "1", SD)
		DIFF("r", "b", "1", "1", SD) DIFF("r", "c", "1", "1", SD);
	char *t = report(log, strlen(log), NULL);
	expect_has(t, "route r: 4 compared, 3 identical (75.0 %), 1 different (25.0 %)");
	expect_has(t, "\n  2 more differing exchanges logged after the last summary: not in these "
		      "counts yet (a summary comes every summary_interval_ms)\n");
	free(t);
	t = report(known_log, strlen(known_log), NULL);
	expect_lacks(t, "after the last summary");
	free(t);
}

/* Several instances' logs read together: each instance's last summary
 * counts, whatever the order of their lines (the counters going down from
 * one instance's line to another's read as restarts). */
static void test_instances_add_up(void **state)
{
	(void)state;
	static const char log[] = ISUMMARY("h:1:9", "4", "4", "0") ISUMMARY("h:2:9", "2", "1", "1")
		ISUMMARY("h:1:9", "6", "5", "1") ISUMMARY("h:2:9", "8", "6", "2")
		/* h:1 restarted: a new instance */ ISUMMARY("h:7:99", "3", "3", "0");
	char *t = report(log, strlen(log), NULL);
	expect_has(t, "route r: 17 compared, 14 identical (82.4 %), 3 different (17.6 %)");
	free(t);
}

/* A rotated log read newest first (`cat diffs.jsonl diffs.jsonl.1`): an
 * instance's counters go down, but it did not restart (its "instance" says
 * so); its highest summary already holds the earlier ones (they were counted
 * a second time, as a run before a restart). */
static void test_rotated_log_read_newest_first(void **state)
{
	(void)state;
	static const char log[] = ISUMMARY("h:1:9", "100", "90", "10") ISUMMARY("h:2:9", "8", "6", "2")
		/* diffs.jsonl.1 */ ISUMMARY("h:1:9", "20", "18", "2") ISUMMARY("h:1:9", "50", "45", "5")
		ISUMMARY("h:2:9", "2", "1", "1");
	char *t = report(log, strlen(log), NULL);
	expect_has(t, "route r: 108 compared, 96 identical (88.9 %), 12 different (11.1 %)");
	free(t);
}

/* A summary line of route r from a run of its counters (instance, since). */
#define RSUMMARY(inst, since, c)                                                                  \
	"{\"type\":\"summary\",\"route\":\"r\",\"instance\":\"" inst "\",\"counters_since\":\""  \
	since "\",\"mirrored\":" c ",\"compared\":" c ",\"identical\":" c ",\"different\":0,"        \
	"\"noise\":0,\"skipped\":{},\"shadow_errors\":0,\"shadow_timeouts\":0,"                    \
	"\"primary_ms\":{\"p50\":1,\"p99\":2},\"shadow_ms\":{\"p50\":1,\"p99\":2}}\n"

/* A route a reload removed and a later one brought back counts from zero in
 * the same process: each run's highest counts add up, in any order. */
static void test_route_back_after_a_reload(void **state)
{
	(void)state;
	static const char log[] = RSUMMARY("h:1:9", "2026-11-27T10:00:00.000Z", "40")
		RSUMMARY("h:1:9", "2026-11-27T10:00:00.000Z", "70")
		RSUMMARY("h:1:9", "2026-11-27T11:00:00.000Z", "5")
		RSUMMARY("h:1:9", "2026-11-27T11:00:00.000Z", "12")
		/* an earlier file read last */ RSUMMARY("h:1:9", "2026-11-27T10:00:00.000Z", "30");
	char *t = report(log, strlen(log), NULL);
	expect_has(t, "route r: 82 compared, 82 identical (100.0 %), 0 different (0.0 %)");
	free(t);
}

/* A summary line of route r with its directions (DIR ones). */
#define DSUMMARY(inst, since, c, i, d, dirs)                                                      \
	"{\"type\":\"summary\",\"route\":\"r\",\"instance\":\"" inst "\",\"counters_since\":\""  \
	since "\",\"mirrored\":" c ",\"compared\":" c ",\"identical\":" i ",\"different\":" d     \
	",\"noise\":0,\"skipped\":{},\"shadow_errors\":0,\"shadow_timeouts\":0,"                   \
	"\"primary_ms\":{\"p50\":5,\"p99\":5},\"shadow_ms\":{\"p50\":5,\"p99\":5},"              \
	"\"directions\":[" dirs "]}\n"
#define DIR(pb, sb, since, c, i, d, p50, s50)                                                     \
	"{\"primary\":\"" pb "\",\"shadow\":\"" sb "\",\"since\":\"" since "\",\"mirrored\":" c  \
	",\"compared\":" c ",\"identical\":" i ",\"different\":" d ",\"noise\":0,"               \
	"\"skipped\":{\"budget\":0},\"shadow_errors\":0,\"shadow_timeouts\":0,"                    \
	"\"primary_ms\":{\"p50\":" p50 ",\"p99\":" p50 "},\"shadow_ms\":{\"p50\":" s50          \
	",\"p99\":" s50 "}}"
#define T0 "2026-11-27T10:00:00.000Z"
#define T1 "2026-11-27T10:05:00.000Z"
#define MISSING "{\"kind\":\"json\",\"where\":\"/results/0\",\"primary\":{\"id\":1},\"shadow\":null,\"noise\":false}"
#define EXTRA "{\"kind\":\"json\",\"where\":\"/results/0\",\"primary\":null,\"shadow\":{\"id\":1},\"noise\":false}"

/* A rollout shadowed to "@other" mirrors both ways: legacy's answers
 * compared with modern's, and modern's with legacy's. Each direction has its
 * counts, latencies (named by backend) and differences; the same bug reads
 * "shadow":null one way and "primary":null the other, and the latencies of
 * the two sides are not mixed (they were added up per route). */
static void test_directions_apart(void **state)
{
	(void)state;
	static const char log[] =
		DIFFD("r", "a1", "legacy", "modern", "1", "9", MISSING)
		DIFFD("r", "a2", "legacy", "modern", "1", "9", MISSING)
		DIFFD("r", "b1", "modern", "legacy", "9", "1", EXTRA)
		DSUMMARY("h:1:9", T0, "30", "27", "3",
			 DIR("legacy", "modern", T0, "28", "26", "2", "1", "9") ","
			 DIR("modern", "legacy", T1, "2", "1", "1", "9", "1"));
	char *t = report(log, strlen(log), NULL);
	expect_has(t, "route r: 30 compared, 27 identical (90.0 %), 3 different (10.0 %), 0 noise, "
		      "0 skipped\n"
		      "  legacy -> modern, since " T0 ": 28 compared, 26 identical (92.9 %), "
		      "2 different (7.1 %), 0 noise, 0 skipped\n"
		      "    latency p50/p99: primary legacy 1.0/1.0 ms, shadow modern 9.0/9.0 ms\n"
		      "    top differences:\n"
		      "      json /results/*  2  e.g. a1, a2\n"
		      "  modern -> legacy, since " T1 ": 2 compared, 1 identical (50.0 %), "
		      "1 different (50.0 %), 0 noise, 0 skipped\n"
		      "    latency p50/p99: primary modern 9.0/9.0 ms, shadow legacy 1.0/1.0 ms\n"
		      "    top differences:\n"
		      "      json /results/*  1  e.g. b1\n");
	expect_lacks(t, "5.0"); /* the route's latency mixes both ways */
	free(t);

	/* the route filter keeps both directions */
	t = report(log, strlen(log), "r");
	expect_has(t, "  modern -> legacy, since " T1 ": 2 compared");
	free(t);
}

/* After a flip (a reload makes modern the primary and legacy the shadow),
 * the route's counters go on (40 compared across the flip), but each
 * direction says since when it runs: "since the flip, 20 compared, 5
 * different" reads off the new direction. Several instances add up per
 * direction, the earliest since kept. */
static void test_flip_counts_since(void **state)
{
	(void)state;
	static const char log[] =
		DSUMMARY("h:1:9", T0, "20", "20", "0", DIR("legacy", "modern", T0, "20", "20", "0", "1", "1"))
		DSUMMARY("h:1:9", T0, "40", "35", "5",
			 DIR("legacy", "modern", T0, "20", "20", "0", "1", "1") ","
			 DIR("modern", "legacy", T1, "20", "15", "5", "1", "1"))
		DSUMMARY("h:2:9", T0, "3", "3", "0", DIR("modern", "legacy", "2026-11-27T10:04:00.000Z",
							   "3", "3", "0", "1", "1"));
	char *t = report(log, strlen(log), NULL);
	expect_has(t, "route r: 43 compared, 38 identical (88.4 %), 5 different (11.6 %)");
	expect_has(t, "  legacy -> modern, since " T0 ": 20 compared, 20 identical (100.0 %)");
	expect_has(t, "  modern -> legacy, since 2026-11-27T10:04:00.000Z: 23 compared, "
		      "18 identical (78.3 %), 5 different (21.7 %)");
	free(t);
}

/* Differing exchanges logged after the last summary are said per direction,
 * and a direction no summary has yet shows what was logged. */
static void test_directions_after_the_last_summary(void **state)
{
	(void)state;
	static const char log[] =
		DSUMMARY("h:1:9", T0, "4", "3", "1", DIR("legacy", "modern", T0, "4", "3", "1", "1", "1"))
		DIFFD("r", "a1", "legacy", "modern", "1", "1", SD)
		DIFFD("r", "a2", "legacy", "modern", "1", "1", SD)
		DIFFD("r", "b1", "modern", "legacy", "1", "1", SD);
	char *t = report(log, strlen(log), NULL);
	expect_has(t, "  legacy -> modern, since " T0 ": 4 compared, 3 identical (75.0 %), 1 "
		      "different (25.0 %), 0 noise, 0 skipped\n"
		      "    1 more differing exchange logged after the last summary: not in these "
		      "counts yet (a summary comes every summary_interval_ms)\n");
	expect_has(t, "  modern -> legacy: 1 different exchange logged, not in the summaries' "
		      "counts by direction (logged after the last summary, or past the 4 "
		      "directions a route counts apart)\n");
	free(t);

	/* summaries from before the split: the route's latency says it mixes */
	static const char old[] = ISUMMARY("h:1:9", "4", "3", "1")
		DIFFD("r", "a1", "legacy", "modern", "1", "1", SD)
		DIFFD("r", "b1", "modern", "legacy", "1", "1", SD);
	t = report(old, strlen(old), NULL);
	expect_has(t, "route r: 4 compared, 3 identical (75.0 %), 1 different (25.0 %), 0 noise, "
		      "0 skipped\n"
		      "  1 more differing exchange logged after the last summary: not in these "
		      "counts yet (a summary comes every summary_interval_ms)\n"
		      "  latency p50/p99 (all directions together): primary 1.0/2.0 ms, shadow "
		      "1.0/2.0 ms\n"
		      "  legacy -> modern: 1 different exchange logged\n");
	expect_has(t, "  modern -> legacy: 1 different exchange logged\n");
	free(t);
}

/* Several instances' summaries in either order give the same report: the
 * latencies (percentiles, which do not add up) of the run with the most
 * comparisons, said to be one run's; and an old-format file read last does
 * not hide the other's split by direction. */
static void test_several_runs_in_any_order(void **state)
{
	(void)state;
	static const char big[] = DSUMMARY("h:1:9", T0, "100", "99", "1",
					   DIR("legacy", "modern", T0, "100", "99", "1", "1", "2"));
	static const char small[] = ISUMMARY("h:2:9", "10", "10", "0");
	static const char small_slow[] =
		"{\"type\":\"summary\",\"route\":\"r\",\"instance\":\"h:2:9\",\"mirrored\":10,"
		"\"compared\":10,\"identical\":10,\"different\":0,\"noise\":0,\"skipped\":{},"
		"\"shadow_errors\":0,\"shadow_timeouts\":0,\"primary_ms\":{\"p50\":900,\"p99\":900},"
		"\"shadow_ms\":{\"p50\":900,\"p99\":900}}\n";
	char ab[1024], ba[1024];
	snprintf(ab, sizeof(ab), "%s%s%s", big, small, small_slow);
	snprintf(ba, sizeof(ba), "%s%s%s", small_slow, small, big);
	char *t1 = report(ab, strlen(ab), NULL), *t2 = report(ba, strlen(ba), NULL);
	assert_string_equal(t1, t2);
	expect_has(t1, "route r: 110 compared, 109 identical");
	expect_has(t1, "  legacy -> modern, since " T0 ": 100 compared, 99 identical (99.0 %), "
		       "1 different (1.0 %)");
	expect_has(t1, "    latency p50/p99 (of the run with the most comparisons): primary legacy "
		       "1.0/1.0 ms, shadow modern 2.0/2.0 ms");
	expect_lacks(t1, "900");
	free(t1);
	free(t2);
}

/* A counter of another kind in a foreign line (a string beside numbers, an
 * object beside a number) is ignored, in either order: it crashed the
 * report (strcmp of a number's NULL string). */
static void test_counters_of_another_kind(void **state)
{
	(void)state;
	static const char num[] = ISUMMARY("h:1:9", "3", "3", "0");
	static const char str[] =
		"{\"type\":\"summary\",\"route\":\"r\",\"instance\":\"h:2:9\",\"mirrored\":\"3\","
		"\"compared\":{\"a\":1},\"identical\":3,\"different\":0,\"noise\":0,\"skipped\":5}\n";
	char a[1024], b[1024];
	snprintf(a, sizeof(a), "%s%s", num, str);
	snprintf(b, sizeof(b), "%s%s", str, num);
	char *t = report(a, strlen(a), NULL);
	expect_has(t, "route r: 3 compared, 6 identical");
	free(t);
	t = report(b, strlen(b), NULL);
	expect_has(t, "route r: ");
	free(t);
}

static char *write_temp(const char *text)
{
	char *path = strdup("/tmp/test_diffreport.XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

/* What sp_diff_report_files writes, and its stderr, for files. */
static char *report_files(const char *const *files, size_t n, int want, char **err)
{
	char *text = NULL;
	size_t tlen = 0;
	FILE *out = open_memstream(&text, &tlen);
	char *errpath = write_temp("");
	int saved = dup(2), fd = open(errpath, O_WRONLY | O_TRUNC);
	assert_true(saved >= 0 && fd >= 0);
	fflush(stderr);
	dup2(fd, 2);
	int rc = sp_diff_report_files(files, n, NULL, out, NULL);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	close(fd);
	fclose(out);
	assert_int_equal(rc, want);
	FILE *e = fopen(errpath, "r");
	*err = calloc(1, 4096);
	assert_true(e && *err);
	size_t got = fread(*err, 1, 4095, e);
	(*err)[got] = 0;
	fclose(e);
	unlink(errpath);
	free(errpath);
	return text;
}

/* Several files are one stream in the given order (they were a usage
 * error); a file that cannot be read is named, and no report is printed. */
static void test_several_files(void **state)
{
	(void)state;
	char *a = write_temp(ISUMMARY("a:1:1", "4", "1", "3") "junk\n");
	char *b = write_temp(ISUMMARY("b:2:2", "4", "1", "3") DIFF("r", "x", "1", "1", SD));
	const char *both[] = {a, b}, *missing[] = {a, "/nonexistent/diffs.jsonl", b};
	char *err;
	char *t = report_files(both, 2, 0, &err);
	expect_has(t, "route r: 8 compared, 2 identical (25.0 %), 6 different (75.0 %)");
	expect_has(t, "  legacy -> modern: 1 different exchange logged\n");
	assert_non_null(strstr(t, "1 line skipped: not JSON (") && strstr(t, a));
	assert_string_equal(err, "");
	free(t);
	free(err);

	t = report_files(missing, 3, 1, &err);
	assert_string_equal(t, "");
	assert_string_equal(err, "strangler diff-report: cannot open /nonexistent/diffs.jsonl: "
				 "No such file or directory\n");
	free(t);
	free(err);

	const char *dir[] = {a, "/tmp"};
	t = report_files(dir, 2, 1, &err);
	assert_string_equal(t, "");
	assert_string_equal(err, "strangler diff-report: cannot read /tmp: Is a directory\n");
	free(t);
	free(err);

	char *two[] = {"diff-report", a, "--route", "r", b};
	assert_int_equal(sp_diff_report_main(5, two), 0);
	unlink(a);
	unlink(b);
	free(a);
	free(b);
}

static void test_main(void **state)
{
	(void)state;
	char *usage_only[] = {"diff-report"};
	char *bad_opt[] = {"diff-report", "log", "--bogus"};
	char *no_name[] = {"diff-report", "log", "--route"};
	char *missing[] = {"diff-report", "/nonexistent/diff.log"};
	assert_int_equal(sp_diff_report_main(1, usage_only), 2);
	assert_int_equal(sp_diff_report_main(3, bad_opt), 2);
	assert_int_equal(sp_diff_report_main(3, no_name), 2);
	assert_int_equal(sp_diff_report_main(2, missing), 1);

	char path[] = "/tmp/test_diffreport.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, known_log, strlen(known_log)), (ssize_t)strlen(known_log));
	close(fd);
	char *ok[] = {"diff-report", path, "--route=users"};
	assert_int_equal(sp_diff_report_main(3, ok), 0);
	char *dir[] = {"diff-report", "/tmp"};
	assert_int_equal(sp_diff_report_main(2, dir), 1);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_known_log),
		cmocka_unit_test(test_route_filter),
		cmocka_unit_test(test_only_digit_segments_fold),
		cmocka_unit_test(test_top_rows),
		cmocka_unit_test(test_summary_edge_cases),
		cmocka_unit_test(test_runs_add_up),
		cmocka_unit_test(test_instances_add_up),
		cmocka_unit_test(test_route_back_after_a_reload),
		cmocka_unit_test(test_diff_lines_after_the_last_summary),
		cmocka_unit_test(test_rotated_log_read_newest_first),
		cmocka_unit_test(test_directions_apart),
		cmocka_unit_test(test_flip_counts_since),
		cmocka_unit_test(test_directions_after_the_last_summary),
		cmocka_unit_test(test_several_files),
		cmocka_unit_test(test_several_runs_in_any_order),
		cmocka_unit_test(test_counters_of_another_kind),
		cmocka_unit_test(test_main),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
