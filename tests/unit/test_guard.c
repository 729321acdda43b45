/* Unit tests of the guard's verdict (proxy/guard.c): pure functions of a
 * window's counter deltas, and of the window that measures them. */
#include "unit.h"

#include <math.h>
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

/* A duration's bucket is the first whose bound holds it: ceil(4 * log2(ms /
 * 0.01)), as libm would compute it, from 10 µs (and below) to the last
 * bucket (and above). */
static void test_hist_buckets(void **state)
{
	(void)state;
	assert_int_equal(sp_hist_bucket(0.0), 0);
	assert_int_equal(sp_hist_bucket(-1.0), 0);
	assert_int_equal(sp_hist_bucket(0.01), 0);
	assert_int_equal(sp_hist_bucket(NAN), 0);
	assert_int_equal(sp_hist_bucket(0.02), 4);
	assert_int_equal(sp_hist_bucket(0.0201), 5);
	assert_int_equal(sp_hist_bucket(1e9), SP_LAT_BUCKETS - 1);
	assert_int_equal(sp_hist_bucket(INFINITY), SP_LAT_BUCKETS - 1);
	uint64_t x = 88172645463325252ull; /* xorshift: durations spread over the range */
	for (int i = 0; i < 200000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		double ms = 0.01 * pow(2.0, (double)(x % 1000000) / 1000000.0 * 26.0);
		double exact = 4.0 * log2(ms * 100.0);
		if (fabs(exact - round(exact)) < 1e-9)
			continue; /* on a bound: either side is right */
		int want = ms * 100.0 <= 1.0 ? 0 : (int)ceil(exact);
		want = want >= SP_LAT_BUCKETS ? SP_LAT_BUCKETS - 1 : want;
		assert_int_equal(sp_hist_bucket(ms), want);
		assert_true(ms <= sp_hist_bound_ms((unsigned)want) * (1 + 1e-12) ||
			    want == SP_LAT_BUCKETS - 1);
	}
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
	/* the rollout side sheds its users to the base side (down, or at
	 * max_conns): more than 1 % of them is no step, up to 1 % is */
	d.roll.requests = 9900;
	d.roll.fell_back = 101;
	assert_int_equal(sp_guard_next_step(&g, 100, &d), 0);
	d.roll.fell_back = 100;
	assert_int_equal(sp_guard_next_step(&g, 100, &d), 500);
	d.roll.fell_back = 0;
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

/* A reason longer than the trip keeps (a foreign or hand-edited file) is cut
 * between characters: cut inside one, it was text json_pack refuses, and
 * the trip vanished from the next state file written. */
static void test_a_long_reason_is_cut_between_characters(void **state)
{
	(void)state;
	char reason[601] = "";
	for (int i = 0; i < 300; i++)
		strcat(reason, "\xc3\xa9"); /* é */
	struct sp_guards *g = sp_guards_new();
	json_t *saved = json_pack("{s:{s:s, s:s}}", "r", "reason", reason, "tripped_at",
				  "2026-11-27T10:00:00Z");
	sp_guards_restore(g, saved);
	json_t *again = sp_guards_save(g);
	const char *kept = json_string_value(json_object_get(json_object_get(again, "r"), "reason"));
	assert_non_null(kept);
	assert_true(strlen(kept) > 200 && strlen(kept) % 2 == 0);
	assert_memory_equal(kept, reason, strlen(kept));
	json_decref(again);
	json_decref(saved);
	sp_guards_free(&g);
}

/* ---- the window ---- */

static struct sp_guard_snapshot at(uint64_t requests)
{
	struct sp_guard_snapshot s = {0};
	s.base.requests = s.roll.requests = s.compared = requests;
	s.roll.errors = requests / 10;
	s.roll.lat[2] = requests;
	return s;
}

static uint64_t push(struct sp_guard_window *w, uint64_t requests)
{
	struct sp_guard_snapshot now = at(requests), d;
	memset(&d, 0xff, sizeof(d));
	sp_guard_window_push(w, &now, &d);
	/* every counter is measured over the same span */
	assert_int_equal(d.base.requests, d.roll.requests);
	assert_int_equal(d.compared, d.roll.requests);
	assert_int_equal(d.roll.lat[2], d.roll.requests);
	assert_int_equal(d.roll.errors, requests / 10 - (requests - d.roll.requests) / 10);
	return d.roll.requests;
}

static void test_window_counts_the_last_window_s_ticks(void **state)
{
	(void)state;
	struct sp_guard_window w = {0};
	assert_int_equal(sp_guard_window_fit(&w, 3, 1), 0);
	/* from zero: the first ticks count everything since start-up */
	assert_int_equal(push(&w, 10), 10);
	assert_int_equal(push(&w, 20), 20);
	assert_int_equal(push(&w, 30), 30);
	/* then the last 3 ticks only: the oldest snapshot, not the newest */
	assert_int_equal(push(&w, 40), 30);
	assert_int_equal(push(&w, 45), 25);
	assert_int_equal(push(&w, 45), 15);
	assert_int_equal(push(&w, 45), 5);
	assert_int_equal(push(&w, 45), 0);
	assert_int_equal(push(&w, 145), 100);
	/* the same window again keeps what it holds */
	assert_int_equal(sp_guard_window_fit(&w, 3, 0), 0);
	assert_int_equal(push(&w, 145), 100);
	/* another window starts afresh, from the first snapshot taken */
	assert_int_equal(sp_guard_window_fit(&w, 2, 0), 0);
	assert_int_equal(push(&w, 200), 0);
	assert_int_equal(push(&w, 210), 10);
	assert_int_equal(push(&w, 230), 30);
	assert_int_equal(push(&w, 260), 50);
	sp_guard_window_free(&w);
	assert_null(w.ring);
}

static void test_window_without_zero_start(void **state)
{
	(void)state;
	struct sp_guard_window w = {0};
	/* a guard added by a reload: its counters did not start with it */
	assert_int_equal(sp_guard_window_fit(&w, 60, 0), 0);
	assert_int_equal(push(&w, 5000), 0);
	assert_int_equal(push(&w, 5007), 7);
	assert_int_equal(push(&w, 5010), 10);
	sp_guard_window_free(&w);
}

static void test_window_restarts(void **state)
{
	(void)state;
	struct sp_guard_window w = {0};
	assert_int_equal(sp_guard_window_fit(&w, 10, 1), 0);
	assert_int_equal(push(&w, 100), 100);
	assert_int_equal(push(&w, 200), 200);
	/* counters went back (the route was removed and came back): from now */
	assert_int_equal(push(&w, 30), 0);
	assert_int_equal(push(&w, 50), 20);
	/* a trip or a re-arm: fresh traffic only */
	sp_guard_window_restart(&w);
	assert_int_equal(push(&w, 60), 0);
	assert_int_equal(push(&w, 65), 5);
	sp_guard_window_free(&w);
}

/* Requests up and another counter down: the counters are another
 * backend's (the same route's, since a swap of its sides) or started
 * again; a delta over them would wrap to a huge count (an error rate far
 * over any bound, a p99 from nowhere). The window starts again instead. */
static void test_window_restarts_when_any_counter_went_back(void **state)
{
	(void)state;
	struct sp_guard_window w = {0};
	struct sp_guard_snapshot then = {0}, now = {0}, d;
	assert_int_equal(sp_guard_window_fit(&w, 60, 0), 0);
	uint64_t *fields[][2] = {
		{&then.roll.errors, &now.roll.errors},   {&then.base.errors, &now.base.errors},
		{&then.roll.fell_back, &now.roll.fell_back}, {&then.roll.lat[5], &now.roll.lat[5]},
		{&then.base.lat[0], &now.base.lat[0]},   {&then.different, &now.different},
	};
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		then = (struct sp_guard_snapshot){0};
		then.base.requests = then.roll.requests = then.compared = 100;
		*fields[i][0] = 10;
		now = then;
		now.base.requests = now.roll.requests = now.compared = 150;
		*fields[i][1] = 3;
		sp_guard_window_restart(&w);
		sp_guard_window_push(&w, &then, &d);
		sp_guard_window_push(&w, &now, &d);
		assert_int_equal(d.roll.requests, 0);
		assert_int_equal(d.roll.errors, 0);
		assert_int_equal(d.base.errors, 0);
		assert_int_equal(d.roll.fell_back, 0);
		assert_int_equal(d.roll.lat[5], 0);
		assert_int_equal(d.base.lat[0], 0);
		assert_int_equal(d.different, 0);
		/* and counts on from there */
		now.roll.requests += 7;
		sp_guard_window_push(&w, &now, &d);
		assert_int_equal(d.roll.requests, 7);
	}
	sp_guard_window_free(&w);
}

static void test_window_over_an_hour_keeps_a_stride(void **state)
{
	(void)state;
	struct sp_guard_window w = {0};
	static const int windows[] = {1, 3600, 3601, 7200, 86400, 604800};
	for (size_t i = 0; i < sizeof(windows) / sizeof(windows[0]); i++) {
		assert_int_equal(sp_guard_window_fit(&w, windows[i], 1), 0);
		assert_true(w.len <= 3601);
		assert_true((w.len - 1) * w.stride <= (size_t)windows[i]);
		assert_true(w.len * w.stride > (size_t)windows[i]);
	}
	/* two hours: one snapshot every 2 ticks; the window spans 7,200 ticks,
	 * or 7,201 between two snapshots */
	assert_int_equal(sp_guard_window_fit(&w, 7200, 1), 0);
	assert_int_equal(w.stride, 2);
	for (uint64_t n = 1; n <= 7200; n++)
		assert_int_equal(push(&w, n), n);
	for (uint64_t n = 7201; n <= 20000; n++) {
		uint64_t d = push(&w, n);
		assert_true(d == 7200 || d == 7201);
	}
	sp_guard_window_free(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error_rate),
		cmocka_unit_test(test_diff_rate),
		cmocka_unit_test(test_hist_buckets),
		cmocka_unit_test(test_p99_ratio),
		cmocka_unit_test(test_next_step),
		cmocka_unit_test(test_restore_takes_well_formed_entries_only),
		cmocka_unit_test(test_a_long_reason_is_cut_between_characters),
		cmocka_unit_test(test_window_counts_the_last_window_s_ticks),
		cmocka_unit_test(test_window_without_zero_start),
		cmocka_unit_test(test_window_restarts),
		cmocka_unit_test(test_window_restarts_when_any_counter_went_back),
		cmocka_unit_test(test_window_over_an_hour_keeps_a_stride),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
