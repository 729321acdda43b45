/* Unit tests for proxy/health.c's per-server part: which server of a backend
 * a request goes to (sp_health_pick), how failures mark one server down, and
 * what the metrics see of a backend made of several servers. */
#include "unit.h"

#include <time.h>

#include "health.h"

/* Backend 0 has three servers; unhealthy = 2 failures; 100 ms between trials. */
#define THREE                                                                          \
	"listen = ( { address = \"127.0.0.1:8080\"; } );\n"                            \
	"backends = {\n"                                                               \
	"  legacy = { servers = [\"http://127.0.0.1:9001\", \"http://127.0.0.1:9002\", " \
	"\"http://127.0.0.1:9003\"];\n"                                                \
	"             health = { unhealthy = 2; interval_ms = 100; }; };\n"            \
	"  other = { url = \"http://127.0.0.1:9002\"; };\n"                             \
	"};\n"                                                                         \
	"default_backend = \"legacy\";\n"

struct fixture {
	struct sp_health_table *t;
	struct sp_config *c;
	const struct sp_backend *be;
};

/* A health table for the config text, backend 0 in f->be. */
static int load_fixture(void **state, const char *text)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->t = sp_health_table_new();
	f->c = unit_load_ok(text, NULL);
	assert_int_equal(sp_health_attach(f->t, f->c), 0);
	f->be = &f->c->backends[0];
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return load_fixture(state, THREE);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	sp_config_unref(&f->c);
	sp_health_table_free(&f->t);
	free(f);
	return 0;
}

static void fail_server(const struct sp_backend *be, size_t i, int times)
{
	for (int k = 0; k < times; k++)
		sp_health_report(be, &be->servers[i], 0);
}

static void test_round_robin(void **state)
{
	struct fixture *f = *state;
	struct sp_turn rr = {0};
	int seen[3] = {0, 0, 0};
	for (int k = 0; k < 9; k++) {
		int i = sp_health_pick(f->be, &rr, 0, NULL);
		assert_int_equal(i, k % 3); /* in order, each in turn */
		seen[i]++;
	}
	assert_int_equal(seen[0], 3);
	assert_int_equal(seen[2], 3);
	/* a counter past the end (the list got shorter) starts over */
	rr.next = 7;
	assert_int_equal(sp_health_pick(f->be, &rr, 0, NULL), 0);
}

static void test_down_server_skipped(void **state)
{
	struct fixture *f = *state;
	struct sp_turn rr = {0};
	fail_server(f->be, 1, 1); /* one failure: still up (unhealthy = 2) */
	assert_false(sp_health_server_view(&f->be->servers[1]).down);
	fail_server(f->be, 1, 1);
	assert_true(sp_health_server_view(&f->be->servers[1]).down);
	for (int k = 0; k < 6; k++)
		assert_int_equal(sp_health_pick(f->be, &rr, 0, NULL), k % 2 ? 2 : 0);
	/* the backend is up while one server is */
	struct sp_health_view v = sp_health_view(f->be);
	assert_false(v.down);
	assert_int_equal(v.transitions, 1);
	/* a success brings it back, and it takes its turn again */
	sp_health_report(f->be, &f->be->servers[1], 1);
	assert_false(sp_health_server_view(&f->be->servers[1]).down);
	rr.next = 1;
	assert_int_equal(sp_health_pick(f->be, &rr, 0, NULL), 1);
	assert_int_equal(sp_health_view(f->be).transitions, 2);
}

static void test_all_down_then_trial(void **state)
{
	struct fixture *f = *state;
	struct sp_turn rr = {0};
	for (size_t i = 0; i < 3; i++)
		fail_server(f->be, i, 2);
	assert_true(sp_health_view(f->be).down);
	assert_int_equal(sp_health_pick(f->be, &rr, 0, NULL), -1);
	/* another backend on one of the same servers shares its health (by URL) */
	assert_true(sp_health_view(&f->c->backends[1]).down);
	/* after interval_ms, one trial per server, each taken once */
	struct timespec pause = {0, 150 * 1000 * 1000};
	nanosleep(&pause, NULL);
	int got[3] = {0, 0, 0};
	for (int k = 0; k < 3; k++) {
		int i = sp_health_pick(f->be, &rr, 0, NULL);
		assert_in_range(i, 0, 2);
		got[i]++;
	}
	assert_int_equal(got[0] + got[1] + got[2], 3);
	assert_int_equal(got[0], 1);
	assert_int_equal(got[1], 1);
	assert_int_equal(sp_health_pick(f->be, &rr, 0, NULL), -1); /* trials spent */
}

static void test_shadow_pause(void **state)
{
	struct fixture *f = *state;
	struct sp_turn rr = {0};
	int paused = -1;
	/* server 0 stops answering shadows: shadows go to the others */
	for (int k = 0; k < 2; k++)
		sp_health_shadow_report(f->be, &f->be->servers[0], 0);
	assert_true(sp_health_server_view(&f->be->servers[0]).shadows_paused);
	assert_false(sp_health_view(f->be).shadows_paused);
	assert_int_equal(sp_health_pick(f->be, &rr, 1, &paused), 1);
	assert_int_equal(paused, 1);
	/* primaries still go to it */
	rr.next = 0;
	assert_int_equal(sp_health_pick(f->be, &rr, 0, &paused), 0);
	assert_int_equal(paused, 0);
	/* all paused: none for a shadow, and it says why */
	for (size_t i = 1; i < 3; i++)
		for (int k = 0; k < 2; k++)
			sp_health_shadow_report(f->be, &f->be->servers[i], 0);
	assert_true(sp_health_view(f->be).shadows_paused);
	assert_int_equal(sp_health_pick(f->be, &rr, 1, &paused), -1);
	assert_int_equal(paused, 1);
	/* server 0 down as well, its trial due: a shadow (paused there) leaves
	 * the trial to a request */
	fail_server(f->be, 0, 2);
	struct timespec pause = {0, 150 * 1000 * 1000};
	nanosleep(&pause, NULL); /* past interval_ms: the trials are due... */
	for (size_t i = 0; i < 3; i++) /* ...and the shadow pauses renewed */
		for (int k = 0; k < 2; k++)
			sp_health_shadow_report(f->be, &f->be->servers[i], 0);
	rr.next = 0;
	assert_int_equal(sp_health_pick(f->be, &rr, 1, &paused), -1);
	rr.next = 0;
	assert_int_equal(sp_health_pick(f->be, &rr, 0, NULL), 0); /* the trial, still there */
	/* all down: none, and not for want of answers */
	for (size_t i = 0; i < 3; i++)
		fail_server(f->be, i, 2);
	assert_int_equal(sp_health_pick(f->be, &rr, 1, &paused), -1);
	assert_int_equal(paused, 0);
}

/* Backend 0 weighs 5, 1, 1; backend 1 has two servers and a backup. */
#define WEIGHTED                                                                         \
	"listen = ( { address = \"127.0.0.1:8080\"; } );\n"                              \
	"backends = {\n"                                                                 \
	"  w = { servers = ( { url = \"http://127.0.0.1:9101\"; weight = 5; },\n"        \
	"                    \"http://127.0.0.1:9102\", \"http://127.0.0.1:9103\" );\n"   \
	"        health = { unhealthy = 1; interval_ms = 100; }; };\n"                    \
	"  bk = { servers = ( \"http://127.0.0.1:9201\", \"http://127.0.0.1:9202\",\n"    \
	"                     { url = \"http://127.0.0.1:9203\"; backup = true; } );\n"    \
	"         health = { unhealthy = 1; interval_ms = 100; }; };\n"                   \
	"};\n"                                                                           \
	"default_backend = \"w\";\n"

static int setup_weighted(void **state)
{
	return load_fixture(state, WEIGHTED);
}

/* The servers picked n times in a row, as letters: "aabac". */
static const char *picks(const struct sp_backend *be, struct sp_turn *t, int n, int for_shadow)
{
	static char out[64];
	for (int k = 0; k < n; k++) {
		int i = sp_health_pick(be, t, for_shadow, NULL);
		out[k] = i < 0 ? '-' : (char)('a' + i);
	}
	out[n] = '\0';
	return out;
}

static void test_weighted_sequence(void **state)
{
	struct fixture *f = *state;
	struct sp_turn t = {0};
	/* nginx's smooth weighted round-robin: the heavy server's share spread
	 * out, not five in a row */
	assert_string_equal(picks(f->be, &t, 14, 0), "aabacaaaabacaa");
	/* a down server's share goes to the others, by their weights */
	fail_server(f->be, 0, 1);
	memset(&t, 0, sizeof(t));
	assert_string_equal(picks(f->be, &t, 6, 0), "bcbcbc");
	/* its trial, when due, comes first; then it is down again (no answer
	 * yet) and the others go on */
	struct timespec pause = {0, 150 * 1000 * 1000};
	nanosleep(&pause, NULL);
	assert_string_equal(picks(f->be, &t, 3, 0), "abc");
	sp_health_report(f->be, &f->be->servers[0], 1); /* the trial answered */
	memset(&t, 0, sizeof(t));
	assert_string_equal(picks(f->be, &t, 7, 0), "aabacaa");
	/* all down: none */
	for (size_t i = 0; i < 3; i++)
		fail_server(f->be, i, 1);
	assert_string_equal(picks(f->be, &t, 2, 0), "--");
}

static void test_backup_only_when_the_others_cannot(void **state)
{
	struct fixture *f = *state;
	const struct sp_backend *bk = &f->c->backends[1];
	struct sp_turn t = {0};
	assert_true(bk->weighted);
	assert_string_equal(picks(bk, &t, 6, 0), "ababab");
	fail_server(bk, 0, 1);
	assert_string_equal(picks(bk, &t, 3, 0), "bbb");
	fail_server(bk, 1, 1);
	assert_string_equal(picks(bk, &t, 3, 0), "ccc"); /* now the backup */
	assert_false(sp_health_view(bk).down);        /* the backend is up */
	/* a primary's trial goes before the backup; answered, it is back */
	struct timespec pause = {0, 150 * 1000 * 1000};
	nanosleep(&pause, NULL);
	int first = sp_health_pick(bk, &t, 0, NULL), second = sp_health_pick(bk, &t, 0, NULL);
	assert_true((first == 0 && second == 1) || (first == 1 && second == 0));
	assert_string_equal(picks(bk, &t, 2, 0), "cc");
	sp_health_report(bk, &bk->servers[1], 1);
	assert_string_equal(picks(bk, &t, 3, 0), "bbb");
	/* shadows paused to the primaries, which are up: a shadow goes to no
	 * server, not to the backup (a backup stands in for servers that are
	 * down, and the pause is counted as such) */
	sp_health_report(bk, &bk->servers[0], 1);
	int paused = 0;
	sp_health_shadow_report(bk, &bk->servers[0], 0);
	sp_health_shadow_report(bk, &bk->servers[1], 0);
	assert_int_equal(sp_health_pick(bk, &t, 1, &paused), -1);
	assert_int_equal(paused, 1);
	assert_int_not_equal(sp_health_pick(bk, &t, 0, NULL), 2); /* requests: the primaries */
	/* one primary paused, the other down: still none */
	fail_server(bk, 1, 1);
	assert_int_equal(sp_health_pick(bk, &t, 1, &paused), -1);
	assert_int_equal(paused, 1);
	/* all down, the backup too: none */
	fail_server(bk, 0, 1);
	fail_server(bk, 2, 1);
	assert_true(sp_health_view(bk).down);
	assert_string_equal(picks(bk, &t, 2, 0), "--");
}

static void test_weighted_shadow_pause(void **state)
{
	struct fixture *f = *state;
	struct sp_turn t = {0};
	int paused = 0;
	/* shadows to a do not answer: shadows go to b and c, requests to all */
	sp_health_shadow_report(f->be, &f->be->servers[0], 0);
	assert_string_equal(picks(f->be, &t, 4, 1), "bcbc");
	assert_int_equal(sp_health_pick(f->be, &t, 1, &paused), 1);
	assert_int_equal(paused, 1);
	memset(&t, 0, sizeof(t));
	assert_string_equal(picks(f->be, &t, 7, 0), "aabacaa");
	/* after interval_ms a shadow tries it once, before the turns */
	struct timespec pause = {0, 150 * 1000 * 1000};
	nanosleep(&pause, NULL);
	assert_string_equal(picks(f->be, &t, 3, 1), "a" "bc");
}

/* Backend 0: least_conn over weights 2, 1, 1 and a backup; backend 1 plain
 * round-robin over three servers. */
#define LEAST                                                                            \
	"listen = ( { address = \"127.0.0.1:8080\"; } );\n"                              \
	"backends = {\n"                                                                 \
	"  lc = { balance = \"least_conn\";\n"                                           \
	"         servers = ( { url = \"http://127.0.0.1:9301\"; weight = 2; },\n"        \
	"                     \"http://127.0.0.1:9302\", \"http://127.0.0.1:9303\",\n"      \
	"                     { url = \"http://127.0.0.1:9304\"; backup = true; } );\n"    \
	"         health = { unhealthy = 1; interval_ms = 60000; }; };\n"                 \
	"  rr = { servers = [\"http://127.0.0.1:9401\", \"http://127.0.0.1:9402\",\n"      \
	"                    \"http://127.0.0.1:9403\"];\n"                                \
	"         health = { unhealthy = 1; interval_ms = 60000; }; };\n"                 \
	"};\n"                                                                           \
	"default_backend = \"lc\";\n"

static int setup_least(void **state)
{
	return load_fixture(state, LEAST);
}

/* Picks n times, each pick holding a connection (busy), as letters. */
static const char *picks_held(const struct sp_backend *be, struct sp_turn *t, int n)
{
	static char out[64];
	for (int k = 0; k < n; k++) {
		int i = sp_health_pick(be, t, 0, NULL);
		out[k] = i < 0 ? '-' : (char)('a' + i);
		if (i >= 0)
			t->busy[i]++;
	}
	out[n] = '\0';
	return out;
}

/* The fewest connections in use for the weight wins; among equals, the
 * weighted turns; a backup only when the others are down. */
static void test_least_conn(void **state)
{
	struct fixture *f = *state;
	struct sp_turn t = {0};
	assert_true(f->be->least_conn);
	/* all idle: by weight (a takes two of four); each holds its connection,
	 * so the next ones go where fewest are held for the weight */
	assert_string_equal(picks_held(f->be, &t, 4), "abca");
	picks_held(f->be, &t, 4);
	assert_int_equal(t.busy[0], 4); /* held in proportion to the weights */
	assert_int_equal(t.busy[1], 2);
	assert_int_equal(t.busy[2], 2);
	/* b finishes its two: b takes the next two, not a */
	t.busy[1] = 0;
	assert_string_equal(picks_held(f->be, &t, 2), "bb");
	/* a slow server keeps its connections: the others take the requests */
	memset(&t, 0, sizeof(t));
	t.busy[0] = 10;
	assert_string_equal(picks(f->be, &t, 4, 0), "bcbc");
	/* down servers are left out; the backup only when all the others are */
	fail_server(f->be, 1, 1);
	fail_server(f->be, 2, 1);
	assert_string_equal(picks(f->be, &t, 2, 0), "aa");
	fail_server(f->be, 0, 1);
	assert_string_equal(picks(f->be, &t, 2, 0), "dd");
	fail_server(f->be, 3, 1);
	assert_string_equal(picks(f->be, &t, 2, 0), "--");
}

/* Every server down: the one to try all the same, as the balance would
 * choose among the servers that are not backups. */
static void test_pick_when_all_are_down(void **state)
{
	struct fixture *f = *state;
	const struct sp_backend *rr = &f->c->backends[1];
	struct sp_turn t = {0}, r = {0};
	for (size_t i = 0; i < 4; i++)
		fail_server(f->be, i, 1);
	for (size_t i = 0; i < 3; i++)
		fail_server(rr, i, 1);
	char got[16];
	for (int k = 0; k < 8; k++)
		got[k] = (char)('a' + sp_health_pick_down(f->be, &t));
	got[8] = '\0';
	assert_string_equal(got, "abcaabca"); /* by weight, never the backup d */
	t.busy[0] = 5;                        /* least_conn still counts */
	assert_int_equal(sp_health_pick_down(f->be, &t), 1);
	for (int k = 0; k < 6; k++)
		got[k] = (char)('a' + sp_health_pick_down(rr, &r));
	got[6] = '\0';
	assert_string_equal(got, "abcabc"); /* in turn, as before */
}

/* A retry after a failed connection: an untried server, by the balance
 * (least_conn counts), up ones before a down one's trial, the backup last;
 * a round-robin backend in list order after the one that failed. */
static void test_retry_pick(void **state)
{
	struct fixture *f = *state;
	const struct sp_backend *rr = &f->c->backends[1];
	struct sp_turn t = {0}, r = {0};
	/* a (weight 2) failed; b is busier than c: c */
	t.busy[1] = 3;
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0, 0), 2);
	/* c busier now: b */
	t.busy[1] = 0;
	t.busy[2] = 3;
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0, 0), 1);
	/* a and b tried: c, however busy; all three tried: the backup d */
	assert_int_equal(sp_health_pick_retry(f->be, &t, 3u, 1), 2);
	assert_int_equal(sp_health_pick_retry(f->be, &t, 7u, 2), 3);
	assert_int_equal(sp_health_pick_retry(f->be, &t, 15u, 3), -1);
	/* round-robin: the next in the list, wrapping */
	assert_int_equal(sp_health_pick_retry(rr, &r, 1u << 1, 1), 2);
	assert_int_equal(sp_health_pick_retry(rr, &r, 1u << 2, 2), 0);
	/* b down (its trial not due for a minute): c, although b comes first
	 * after a in the list */
	fail_server(rr, 1, 1);
	assert_int_equal(sp_health_pick_retry(rr, &r, 1u << 0, 0), 2);
	fail_server(f->be, 1, 1);
	t.busy[2] = 0;
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0, 0), 2);
	/* only down ones left, none due: the backup, which is up; then none */
	fail_server(f->be, 2, 1);
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0, 0), 3);
	fail_server(f->be, 3, 1);
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0, 0), -1);
}

/* Retries by weight without least_conn; a down server's due trial only
 * once no server that is up is left, and taken then. */
static void test_retry_pick_weighted(void **state)
{
	struct fixture *f = *state;
	struct sp_turn t = {0};
	char got[8];
	/* a (weight 5) failed three times: b and c in turn, not b each time */
	for (int k = 0; k < 4; k++)
		got[k] = (char)('a' + sp_health_pick_retry(f->be, &t, 1u << 0, 0));
	got[4] = '\0';
	assert_string_equal(got, "bcbc");
	/* c failed: a by its weight, b its share (5:1) */
	memset(&t, 0, sizeof(t));
	for (int k = 0; k < 6; k++)
		got[k] = (char)('a' + sp_health_pick_retry(f->be, &t, 1u << 2, 2));
	got[6] = '\0';
	assert_string_equal(got, "aaabaa");
	/* b down, its trial due (interval_ms 100): c, which is up, first; the
	 * trial once c is tried too, and then it is taken */
	fail_server(f->be, 1, 1);
	struct timespec pause = {0, 150 * 1000 * 1000};
	nanosleep(&pause, NULL);
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0, 0), 2);
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0 | 1u << 2, 2), 1);
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0 | 1u << 2, 2), -1);
}

/* max_conns = 2 over two servers and a backup. */
#define CAPPED                                                                           \
	"listen = ( { address = \"127.0.0.1:8080\"; } );\n"                              \
	"backends = {\n"                                                                 \
	"  cap = { max_conns = 2;\n"                                                     \
	"          servers = ( \"http://127.0.0.1:9501\", \"http://127.0.0.1:9502\",\n"      \
	"                      { url = \"http://127.0.0.1:9503\"; backup = true; } );\n"   \
	"          health = { unhealthy = 1; interval_ms = 60000; }; };\n"                \
	"};\n"                                                                           \
	"default_backend = \"cap\";\n"

static int setup_capped(void **state)
{
	return load_fixture(state, CAPPED);
}

/* A shadow leaves a quarter of max_conns, one at least, to requests: with
 * max_conns = 1 no shadow is ever sent, with 2 one, with 4 three, with 200
 * 150; a request may take every slot. */
static void test_shadows_leave_slots_to_requests(void **state)
{
	struct fixture *f = *state;
	static const struct {
		int max_conns;
		unsigned shadows;
	} cases[] = {{1, 0}, {2, 1}, {3, 2}, {4, 3}, {7, 6}, {8, 6}, {200, 150}};
	for (size_t k = 0; k < sizeof(cases) / sizeof(*cases); k++) {
		struct sp_turn t = {0};
		f->c->backends[0].max_conns = cases[k].max_conns; /* f->be */
		for (t.busy[0] = 0; sp_health_has_room(f->be, &t, 0, 1); t.busy[0]++)
			;
		assert_int_equal(t.busy[0], cases[k].shadows);
		assert_true(sp_health_has_room(f->be, &t, 0, 0));
		t.busy[0] = (unsigned)cases[k].max_conns;
		assert_false(sp_health_has_room(f->be, &t, 0, 0));
		/* a shadow's pick passes over the server a request would take */
		t.busy[0] = t.busy[1] = t.busy[2] = cases[k].shadows;
		assert_int_equal(sp_health_pick(f->be, &t, 1, NULL), -1);
		assert_int_not_equal(sp_health_pick(f->be, &t, 0, NULL), -1);
	}
}

/* A server with max_conns connections in use is passed over like a down
 * one: the others, then the backup; none when all are at it. */
static void test_max_conns(void **state)
{
	struct fixture *f = *state;
	struct sp_turn t = {0};
	assert_int_equal(f->be->max_conns, 2);
	assert_string_equal(picks_held(f->be, &t, 4), "abab");
	assert_false(sp_health_has_room(f->be, &t, 0, 0));
	assert_true(sp_health_has_room(f->be, &t, 2, 0));
	assert_string_equal(picks_held(f->be, &t, 3), "cc-"); /* the backup, then none */
	t.busy[1] = 1;                                       /* one of b's ends */
	assert_string_equal(picks_held(f->be, &t, 2), "b-");
	/* all down: the one to try all the same has room, or there is none */
	for (size_t i = 0; i < 3; i++)
		fail_server(f->be, i, 1);
	memset(&t, 0, sizeof(t));
	t.busy[0] = 2;
	assert_int_equal(sp_health_pick_down(f->be, &t), 1);
	assert_int_equal(sp_health_pick_down(f->be, &t), 1);
	t.busy[1] = 2;
	assert_int_equal(sp_health_pick_down(f->be, &t), -1); /* never the backup */
	/* a retry passes over a full server: a failed, b full: the backup c */
	struct sp_health_table *fresh = sp_health_table_new();
	struct sp_config *c = unit_load_ok(CAPPED, NULL);
	assert_int_equal(sp_health_attach(fresh, c), 0);
	memset(&t, 0, sizeof(t));
	t.busy[1] = 2;
	assert_int_equal(sp_health_pick_retry(&c->backends[0], &t, 1u << 0, 0), 2);
	t.busy[1] = 1;
	assert_int_equal(sp_health_pick_retry(&c->backends[0], &t, 1u << 0, 0), 1);
	sp_config_unref(&c);
	sp_health_table_free(&fresh);
	/* a up again but at max_conns, b down: the backend is busy, not gone:
	 * none (503), never the server known to be down */
	sp_health_report(f->be, &f->be->servers[0], 1);
	memset(&t, 0, sizeof(t));
	t.busy[0] = 2;
	assert_int_equal(sp_health_pick(f->be, &t, 0, NULL), -1);
	assert_int_equal(sp_health_pick_down(f->be, &t), -1);
}

/* Every server down, and active checks deciding when each is back (no
 * trial request): a request sent to one all the same that fails goes on to
 * the next not tried, in list order, then none. */
static void test_retry_when_all_are_down(void **state)
{
	struct fixture *f = *state;
	struct sp_turn t = {0};
	for (size_t i = 0; i < 3; i++) {
		fail_server(f->be, i, 2);
		atomic_store(&f->be->servers[i].health->active, 1);
	}
	assert_false(sp_health_usable(f->be, &f->be->servers[1]));
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0, 0), 1);
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0 | 1u << 1, 1), 2);
	assert_int_equal(sp_health_pick_retry(f->be, &t, 7, 2), -1);
	/* one up: only it (the others' trials are the checks') */
	sp_health_report(f->be, &f->be->servers[2], 1);
	atomic_store(&f->be->servers[2].health->down, 0);
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0, 0), 2);
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0 | 1u << 2, 0), -1);
}

#define SLOW                                                                            \
	"listen = ( { address = \"127.0.0.1:8080\"; } );\n"                             \
	"backends = {\n"                                                                \
	"  s = { servers = [\"http://127.0.0.1:9001\", \"http://127.0.0.1:9002\"];\n"      \
	"        slow_start_ms = 1000; };\n"                                            \
	"};\n"                                                                          \
	"default_backend = \"s\";\n"

static int setup_slow(void **state)
{
	return load_fixture(state, SLOW);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* slow_start_ms: a server back for a quarter of it takes a quarter of its
 * weight (at least 1 hundredth), all of it once the time has passed; a
 * server given back its requests after a drain starts again. */
static void test_slow_start(void **state)
{
	struct fixture *f = *state;
	struct sp_server *a = &f->be->servers[0], *b = &f->be->servers[1];
	int64_t now = mono_ms();
	assert_true(f->be->weighted);
	atomic_store(&a->health->back_at_ms, 0); /* long up */
	atomic_store(&b->health->back_at_ms, now - 250);
	assert_int_equal(sp_health_weight_now(f->be, 0, now), 100);
	assert_int_equal(sp_health_weight_now(f->be, 1, now), 25);
	assert_int_equal(sp_health_weight_now(f->be, 1, now - 250), 1);
	assert_int_equal(sp_health_weight_now(f->be, 1, now + 750), 100);
	assert_int_equal(sp_health_weight_now(f->be, 1, now - 1000), 100); /* a clock gone back */
	struct sp_turn t = {0};
	int got[2] = {0, 0};
	for (int k = 0; k < 100; k++)
		got[sp_health_pick(f->be, &t, 0, NULL)]++;
	assert_in_range(got[1], 17, 24); /* 25 / 125 of them, a little less as time passes */
	/* drained, then given back: no requests, then a slow start afresh */
	atomic_store(&b->health->back_at_ms, 0);
	assert_int_equal(sp_health_set_drained(f->t, b->url, 1), 0);
	assert_true(sp_health_drained(b));
	assert_false(sp_health_has_room(f->be, &t, 1, 0));
	memset(&t, 0, sizeof(t));
	assert_string_equal(picks(f->be, &t, 4, 0), "aaaa");
	assert_int_equal(sp_health_pick_retry(f->be, &t, 1u << 0, 0), -1);
	/* up but drained: the backend is busy, not gone (a 503, not a down server) */
	fail_server(f->be, 0, 3);
	assert_int_equal(sp_health_pick_down(f->be, &t), -1);
	/* all down: the one to try all the same is not the drained one */
	fail_server(f->be, 1, 3);
	assert_int_equal(sp_health_pick_down(f->be, &t), 0);
	assert_int_equal(sp_health_pick_down(f->be, &t), 0);
	assert_int_equal(sp_health_set_drained(f->t, b->url, 0), 0);
	assert_in_range(sp_health_weight_now(f->be, 1, mono_ms()), 1, 10);
	/* a drain of a URL the configuration no longer lists is dropped */
	assert_int_equal(sp_health_set_drained(f->t, "http://127.0.0.1:1", 1), 0);
	assert_int_equal(sp_health_prune_drained(f->t, f->c), 1);
	assert_int_equal(sp_health_prune_drained(f->t, f->c), 0);
}

/* A retry as answer_retries makes it: when it fits, spent. */
static int take(struct sp_retry_budget *b, int64_t now, int percent, int min)
{
	if (!sp_retry_budget_fits(b, now, percent, min))
		return 0;
	sp_retry_budget_spend(b);
	return 1;
}

/* retry_on_status's budget: min_per_s in each second whatever the share,
 * percent of the answers of the last two seconds beyond it, and counts that
 * move on with the seconds. */
static void test_retry_budget(void **state)
{
	(void)state;
	struct sp_retry_budget b = {0};
	int64_t t = 5000000;
	int n = 0;
	for (int i = 0; i < 10; i++) {
		sp_retry_budget_answer(&b, t);
		n += take(&b, t, 20, 3);
	}
	assert_int_equal(n, 3); /* the floor: 10 answers give 20 % = 2 */
	/* many answers: 20 % of them */
	for (int i = 0; i < 490; i++)
		sp_retry_budget_answer(&b, t + 10);
	n = 0;
	for (int i = 0; i < 200; i++)
		n += take(&b, t + 10, 20, 3);
	assert_int_equal(n, 100 - 3); /* 500 answers: 100 retries, 3 taken before */
	/* a second later the last second still counts, but the floor is this
	 * second's own; two seconds later nothing of it counts */
	n = 0;
	for (int i = 0; i < 10; i++)
		n += take(&b, t + 1000, 20, 3);
	assert_int_equal(n, 3);
	assert_true(sp_retry_budget_fits(&b, t + 3000, 0, 1));
	/* fits does not count: only spend does */
	struct sp_retry_budget f = {0};
	for (int i = 0; i < 5; i++)
		assert_true(sp_retry_budget_fits(&f, t, 0, 1));
	sp_retry_budget_spend(&f);
	assert_false(sp_retry_budget_fits(&f, t, 0, 1));
	/* percent 0 with min 0: never; percent 100: one retry an answer */
	struct sp_retry_budget z = {0};
	sp_retry_budget_answer(&z, t);
	assert_false(take(&z, t, 0, 0));
	assert_true(take(&z, t, 100, 0));
	assert_false(take(&z, t, 100, 0));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retry_budget),
		cmocka_unit_test_setup_teardown(test_round_robin, setup, teardown),
		cmocka_unit_test_setup_teardown(test_down_server_skipped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_down_then_trial, setup, teardown),
		cmocka_unit_test_setup_teardown(test_shadow_pause, setup, teardown),
		cmocka_unit_test_setup_teardown(test_weighted_sequence, setup_weighted, teardown),
		cmocka_unit_test_setup_teardown(test_backup_only_when_the_others_cannot,
						setup_weighted, teardown),
		cmocka_unit_test_setup_teardown(test_weighted_shadow_pause, setup_weighted, teardown),
		cmocka_unit_test_setup_teardown(test_least_conn, setup_least, teardown),
		cmocka_unit_test_setup_teardown(test_pick_when_all_are_down, setup_least, teardown),
		cmocka_unit_test_setup_teardown(test_retry_pick, setup_least, teardown),
		cmocka_unit_test_setup_teardown(test_retry_pick_weighted, setup_weighted, teardown),
		cmocka_unit_test_setup_teardown(test_max_conns, setup_capped, teardown),
		cmocka_unit_test_setup_teardown(test_shadows_leave_slots_to_requests, setup_capped,
						teardown),
		cmocka_unit_test_setup_teardown(test_slow_start, setup_slow, teardown),
		cmocka_unit_test_setup_teardown(test_retry_when_all_are_down, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
