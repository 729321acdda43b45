/* Unit tests of proxy/pacer.c: mirror starts spread at budget / mean time. */
#include "unit.h"

#include "pacer.h"

#define PRESUMED 5000.0 /* the shadow timeout: the mean presumed before any exchange ended */

/* Offers `count` starts, one every step_ms from t0; returns how many were
 * admitted. */
static int offer(struct sp_pacer *p, double t0, int count, double step_ms, int budget)
{
	int n = 0;
	for (int i = 0; i < count; i++)
		n += sp_pacer_admit(p, t0 + i * step_ms, budget, PRESUMED);
	return n;
}

static void test_before_a_first_exchange_the_worst_is_presumed(void **state)
{
	(void)state;
	struct sp_pacer p;
	sp_pacer_init(&p);
	/* a few at once, not a whole budget of new connections */
	assert_int_equal(offer(&p, 5.0, 1000, 0.0001, 256), SP_PACER_START_TOKENS);
	/* then 256 per 5 s (the timeout), 51 in a second, until an exchange ends */
	assert_in_range(offer(&p, 6.0, 10000, 0.1, 256), 50, 52);
	/* which ends it: a fast mirror is then taken at once */
	sp_pacer_done(&p, 0.3);
	assert_int_equal(offer(&p, 1010, 1000, 0.1, 256), 1000);
}

static void test_slow_mirror_is_paced_to_budget_over_mean(void **state)
{
	(void)state;
	struct sp_pacer p;
	sp_pacer_init(&p);
	sp_pacer_done(&p, 500); /* 256 slots held 500 ms each: 0.512 starts per ms */
	/* the start tokens first, then 512 per second */
	int first = offer(&p, 1000, 1000, 0.0001, 256);
	assert_int_equal(first, SP_PACER_START_TOKENS);
	int later = offer(&p, 1001, 100000, 0.01, 256);
	assert_in_range(later, 505, 515);
	/* one at a time: never two within 1.5 ms once the bucket is empty */
	int last = -1000;
	for (int i = 0; i < 20000; i++) {
		if (sp_pacer_admit(&p, 2001 + i * 0.1, 256, PRESUMED)) {
			assert_true(i - last >= 15);
			last = i;
		}
	}
}

static void test_fast_mirror_is_never_held_back(void **state)
{
	(void)state;
	struct sp_pacer p;
	sp_pacer_init(&p);
	for (int i = 0; i < 64; i++)
		sp_pacer_done(&p, 0.2);
	/* 100 starts per ms for a second: 0.2 ms exchanges, 256 slots: all go */
	assert_int_equal(offer(&p, 10, 100000, 0.01, 256), 100000);
}

static void test_bursts_below_the_sustainable_rate_are_mirrored_whole(void **state)
{
	(void)state;
	struct sp_pacer p;
	sp_pacer_init(&p);
	sp_pacer_done(&p, 50); /* 64 slots of 50 ms: 1.28 starts per ms sustained */
	assert_true(sp_pacer_admit(&p, 0, 64, PRESUMED));
	/* 20 requests at once every 100 ms: 200 per second, well below; the
	 * bucket (a budget: 64) takes each burst whole */
	for (int burst = 0; burst < 10; burst++)
		for (int i = 0; i < 20; i++)
			assert_true(sp_pacer_admit(&p, 100.0 * (burst + 1), 64, PRESUMED));
	/* a burst larger than the bucket: the bucket's worth goes */
	assert_int_equal(offer(&p, 2000, 100, 0, 64), 64);
}

static void test_mean_follows_a_mirror_that_turns_slow(void **state)
{
	(void)state;
	struct sp_pacer p;
	sp_pacer_init(&p);
	sp_pacer_done(&p, 1);
	for (int i = 0; i < 100; i++)
		sp_pacer_done(&p, 1000);
	assert_true(p.mean_ms > 990 && p.mean_ms <= 1000);
	/* 8 slots of one second: the start tokens, then one start per 125 ms */
	assert_int_equal(offer(&p, 50000, 100, 0.01, 8), 8);
	assert_int_equal(offer(&p, 50001, 1000, 1, 8), 8);
	/* a budget of one still lets one mirror through per mean time */
	struct sp_pacer q;
	sp_pacer_init(&q);
	sp_pacer_done(&q, 10);
	assert_int_equal(offer(&q, 100, 200, 0.5, 1), 10);
}

static void test_one_slow_exchange_does_not_stall_a_fast_mirror(void **state)
{
	(void)state;
	struct sp_pacer p;
	sp_pacer_init(&p);
	for (int i = 0; i < 20; i++)
		sp_pacer_done(&p, 10);
	/* one exchange that ran into a 5 s timeout moves the mean by 1/16 of
	 * the gap (10 -> 322 ms), not to 5 s: the pace drops to about 795
	 * starts a second (256 slots / 322 ms), not to 51 */
	sp_pacer_done(&p, 5000);
	assert_true(p.mean_ms > 321 && p.mean_ms < 323);
	assert_in_range(offer(&p, 1000, 100000, 0.01, 256), 780, 815);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_before_a_first_exchange_the_worst_is_presumed),
		cmocka_unit_test(test_slow_mirror_is_paced_to_budget_over_mean),
		cmocka_unit_test(test_fast_mirror_is_never_held_back),
		cmocka_unit_test(test_bursts_below_the_sustainable_rate_are_mirrored_whole),
		cmocka_unit_test(test_mean_follows_a_mirror_that_turns_slow),
		cmocka_unit_test(test_one_slow_exchange_does_not_stall_a_fast_mirror),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
