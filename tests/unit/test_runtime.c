/* proxy/runtime.c: when the memory a crowd of connections leaves behind
 * goes back to the system (sp_runtime_trim_due). */
#include "unit.h"

#include "runtime.h"

/* open, and whether a trim is due then, second after second. */
struct step {
	size_t open;
	int due;
};

static void run(const struct step *s, size_t n)
{
	struct sp_runtime rt = {0};
	for (size_t i = 0; i < n; i++) {
		int due = sp_runtime_trim_due(&rt, s[i].open, s[i].open);
		if (due != s[i].due)
			print_error("step %zu: %zu open: due %d\n", i, s[i].open, due);
		assert_int_equal(due, s[i].due);
	}
}

static void test_no_crowd_no_trim(void **state)
{
	(void)state;
	static const struct step s[] = {{100, 0}, {255, 0}, {0, 0}, {3, 0}, {0, 0}};
	run(s, NELEM(s));
}

static void test_a_crowd_is_followed_down(void **state)
{
	(void)state;
	static const struct step s[] = {
		{2000, 0}, {1500, 0}, {1000, 1}, /* half the peak */
		{600, 0},  {400, 1},  {100, 1},	 /* each halving */
		{0, 1},				 /* the last hundred too */
		{0, 0},	   {5, 0},    {0, 0},	 /* then quiet */
	};
	run(s, NELEM(s));
}

/* A crowd that leaves in a few large steps: the last of them, below
 * SP_TRIM_FROM, still gets its trim (it did not: its memory stayed). */
static void test_the_last_of_a_crowd_is_trimmed_too(void **state)
{
	(void)state;
	static const struct step s[] = {{2000, 0}, {1000, 1}, {200, 1}, {0, 1}, {0, 0}};
	run(s, NELEM(s));
	/* a few left: no trim for each of them */
	static const struct step f[] = {{2000, 0}, {10, 1}, {0, 0}, {2, 0}, {1, 0}, {0, 0}};
	run(f, NELEM(f));
	/* a new crowd after that starts over */
	static const struct step g[] = {{300, 0}, {100, 1}, {40, 1}, {10, 1}, {0, 0}};
	run(g, NELEM(g));
}

/* After a crowd, a small load that comes and goes is no crowd leaving: it
 * is not trimmed at each of its falls. */
static void test_a_small_swinging_load_is_not_trimmed(void **state)
{
	(void)state;
	static const struct step s[] = {{2000, 0}, {45, 1}, {20, 1}, {45, 0}, {20, 0},
					{45, 0}, {20, 0}, {0, 0}};
	run(s, NELEM(s));
}

/* A crowd that came and went between two looks (2,000 connections within
 * a second): its peak, which the workers keep, is counted, and its memory
 * goes back (it was not: the look saw 3 open, then 0). */
static void test_a_crowd_between_two_looks_is_trimmed(void **state)
{
	(void)state;
	static const size_t seen[][3] = {/* open, peak since the last look, due */
					 {3, 3, 0}, {0, 2000, 1}, {0, 0, 0}, {0, 0, 0},
					 /* one more, seen at 900: below half its peak */
					 {900, 2000, 1}, {0, 900, 1}, {0, 0, 0}};
	struct sp_runtime rt = {0};
	for (size_t i = 0; i < NELEM(seen); i++)
		if (sp_runtime_trim_due(&rt, seen[i][0], seen[i][1]) != (int)seen[i][2])
			fail_msg("look %zu: %zu open, peak %zu: due should be %zu", i, seen[i][0],
				 seen[i][1], seen[i][2]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_crowd_no_trim),
		cmocka_unit_test(test_a_crowd_is_followed_down),
		cmocka_unit_test(test_the_last_of_a_crowd_is_trimmed_too),
		cmocka_unit_test(test_a_small_swinging_load_is_not_trimmed),
		cmocka_unit_test(test_a_crowd_between_two_looks_is_trimmed),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
