/* Unit tests of the guard's verdict (proxy/guard.c): pure functions of a
 * window's counter deltas. */
#include "unit.h"

#include <string.h>

#include "guard.h"

static struct sp_guard_cfg cfg(void)
{
	return (struct sp_guard_cfg){.enabled = 1, .max_error_rate = 1.0, .max_diff_rate = 2.0,
				     .max_p99_ratio = 1.5, .min_requests = 100, .window_s = 60};
}

static void test_error_rate(void **state)
{
	(void)state;
	struct sp_guard_cfg g = cfg();
	struct sp_guard_snapshot d = {0};
	char why[256] = "";
	d.roll.requests = 1000;
	d.roll.errors = 10; /* exactly 1 %: not above */
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 0);
	d.roll.errors = 11;
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 1);
	assert_non_null(strstr(why, "error rate 1.10 % of 1000 requests > max_error_rate 1.00 %"));
	/* exactly min_requests is enough for a verdict ("fewer than this give
	 * none", docs/configuration.md) */
	d.roll.requests = 100;
	d.roll.errors = 2;
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 1);
	d.roll.requests = 99; /* below min_requests: no verdict, however bad */
	d.roll.errors = 99;
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 0);
	g.max_error_rate = 0; /* no bound */
	d.roll.requests = 1000;
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 0);
}

static void test_diff_rate(void **state)
{
	(void)state;
	struct sp_guard_cfg g = cfg();
	struct sp_guard_snapshot d = {0};
	char why[256] = "";
	d.compared = 200;
	d.different = 4;
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 0);
	d.different = 5;
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 1);
	assert_non_null(strstr(why, "difference rate 2.50 % of 200 comparisons"));
	/* exactly min_requests comparisons give a verdict, one fewer none */
	d.compared = 100;
	d.different = 3;
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 1);
	d.compared = 99;
	d.different = 99;
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 0);
}

static void add(struct sp_guard_sample *s, double ms, uint64_t n)
{
	struct sp_hist h;
	memset(&h, 0, sizeof(h));
	for (uint64_t i = 0; i < n; i++)
		sp_hist_add(&h, ms);
	sp_hist_sum(&h, s->lat);
	s->requests += n;
}

static void test_p99_ratio(void **state)
{
	(void)state;
	struct sp_guard_cfg g = cfg();
	struct sp_guard_snapshot d;
	char why[256] = "";
	memset(&d, 0, sizeof(d));
	add(&d.base, 10.0, 200);
	add(&d.roll, 12.0, 200);
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 0);
	memset(&d, 0, sizeof(d));
	add(&d.base, 10.0, 200);
	add(&d.roll, 40.0, 200);
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 1);
	assert_non_null(strstr(why, "max_p99_ratio 1.50"));
	/* a ratio exactly at the bound is not above it */
	double pr = sp_hist_quantile(d.roll.lat, 0.99), pb = sp_hist_quantile(d.base.lat, 0.99);
	g.max_p99_ratio = pr / pb;
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 0);
	g.max_p99_ratio = pr / pb * 0.99;
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 1);
	g.max_p99_ratio = 1.5;
	/* the base side needs min_requests too */
	memset(&d, 0, sizeof(d));
	add(&d.base, 10.0, 50);
	add(&d.roll, 40.0, 200);
	assert_int_equal(sp_guard_check(&g, &d, why, sizeof(why)), 0);
}

static void test_next_step(void **state)
{
	(void)state;
	uint32_t steps[] = {100, 500, 2500, 10000};
	struct sp_guard_cfg g = cfg();
	struct sp_guard_snapshot d;
	memset(&d, 0, sizeof(d));
	d.roll.requests = (uint64_t)g.min_requests;
	g.steps_bp = steps;
	g.nsteps = 4;
	assert_int_equal(sp_guard_next_step(&g, 50, &d), 100);
	assert_int_equal(sp_guard_next_step(&g, 100, &d), 500);
	assert_int_equal(sp_guard_next_step(&g, 1000, &d), 2500);
	assert_int_equal(sp_guard_next_step(&g, 10000, &d), 0);
	/* 0 % is off: the operator starts the rollout, not the guard */
	assert_int_equal(sp_guard_next_step(&g, 0, &d), 0);
	/* no verdict on the rollout side, no step (it may be down, its users
	 * falling back); the base side's traffic does not count */
	d.roll.requests = (uint64_t)g.min_requests - 1;
	d.base.requests = 100000;
	assert_int_equal(sp_guard_next_step(&g, 100, &d), 0);
	d.roll.requests = (uint64_t)g.min_requests;
	g.nsteps = 0;
	assert_int_equal(sp_guard_next_step(&g, 100, &d), 0);
}

/* A saved trip holds a route's rollout at 0 %: only a well-formed entry may
 * (a number or an empty object marked the route tripped, with no reason). */
static void test_restore_takes_well_formed_entries_only(void **state)
{
	(void)state;
	struct sp_guards *g = sp_guards_new();
	json_t *saved = json_pack("{s:{s:s, s:s}, s:i, s:{}, s:{s:s}}", "good", "reason", "error rate",
				  "tripped_at", "2026-11-27T10:00:00Z", "number", 5, "empty", "half",
				  "reason", "x");
	sp_guards_restore(g, saved);
	assert_true(sp_guard_tripped(g, "good"));
	assert_false(sp_guard_tripped(g, "number"));
	assert_false(sp_guard_tripped(g, "empty"));
	assert_false(sp_guard_tripped(g, "half"));
	json_decref(saved);
	sp_guards_free(&g);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_rate),
		cmocka_unit_test(test_diff_rate),
		cmocka_unit_test(test_p99_ratio),
		cmocka_unit_test(test_next_step),
		cmocka_unit_test(test_restore_takes_well_formed_entries_only),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
