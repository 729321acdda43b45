/* Microbenchmark: the cost of routing and the rollout decision per request
 * with 200 routes (issue 6: under 1 µs). Builds a config with 200 routes of
 * mixed kinds, then times sp_decide over requests that hit early, late and
 * no routes. Prints ns per decision; exits 1 above the target. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "route.h"

#define NROUTES 200
#define NREQ 1000
#define ROUNDS 200

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(void)
{
	struct sp_buf text, scratch;
	struct sp_diag diag;
	sp_buf_init(&text);
	sp_buf_init(&scratch);
	sp_diag_init(&diag);
	sp_buf_adds(&text, "listen = ( { address = \"127.0.0.1:1\"; } );\n"
			   "backends = { legacy = { url = \"http://127.0.0.1:2\"; };"
			   " modern = { url = \"http://127.0.0.1:3\"; }; };\n"
			   "default_backend = \"legacy\";\nroutes = (\n");
	for (int i = 0; i < NROUTES; i++) {
		const char *kind = i % 4 == 0   ? "path_prefix = \"/svc%d/items\"; methods = [\"GET\", \"HEAD\"];"
				   : i % 4 == 1 ? "path = \"/svc%d/exact\";"
				   : i % 4 == 2 ? "path_prefix = \"/svc%d\"; headers = { X-Tenant = \"t1\"; };"
						: "path_regex = \"/svc%d/[0-9]+/detail\";";
		char match[256];
		snprintf(match, sizeof(match), kind, i);
		sp_buf_printf(&text,
			      "  { name = \"r%d\"; match = { %s }; backend = \"legacy\";"
			      " rollout = { backend = \"modern\"; percent = 25.0;"
			      " sticky = \"header:X-User-Id\"; }; }%s\n",
			      i, match, i + 1 < NROUTES ? "," : "");
	}
	sp_buf_adds(&text, ");\n");
	struct sp_config *c = sp_config_load_string(text.data, "bench.conf", &diag);
	if (!c) {
		fputs(diag.text.data, stderr);
		return 2;
	}
	static char paths[NREQ][64], users[NREQ][16];
	struct sp_hdr hdrs[NREQ][2];
	struct sp_reqview q[NREQ];
	struct sp_ip ip;
	sp_ip_parse("127.0.0.1", 9, &ip);
	for (int i = 0; i < NREQ; i++) {
		int r = (i * 37) % (NROUTES + 20); /* some miss every route */
		switch (r % 4) {
		case 0: snprintf(paths[i], sizeof(paths[i]), "/svc%d/items/%d", r, i); break;
		case 1: snprintf(paths[i], sizeof(paths[i]), "/svc%d/exact", r); break;
		case 2: snprintf(paths[i], sizeof(paths[i]), "/svc%d/x", r); break;
		default: snprintf(paths[i], sizeof(paths[i]), "/svc%d/%d/detail", r, i); break;
		}
		snprintf(users[i], sizeof(users[i]), "u%d", i);
		hdrs[i][0] = (struct sp_hdr){"X-User-Id", 9, users[i], strlen(users[i])};
		hdrs[i][1] = (struct sp_hdr){"X-Tenant", 8, "t1", 2};
		q[i] = (struct sp_reqview){"GET", paths[i], strlen(paths[i]), NULL, 0, hdrs[i], 2,
					   "127.0.0.1", &ip};
	}
	uint64_t rng = 1;
	struct sp_decision d;
	unsigned long matched = 0;
	double t0 = now_ns();
	for (int round = 0; round < ROUNDS; round++)
		for (int i = 0; i < NREQ; i++) {
			sp_decide(c->routes, c->nroutes, c->route_index, c->default_backend, &q[i],
				  &rng, &scratch, &d);
			matched += d.route != NULL;
		}
	double per = (now_ns() - t0) / ((double)ROUNDS * NREQ);
	printf("route matching + rollout decision, %d routes: %.0f ns per request "
	       "(%lu of %d matched a route) -> %s (target < 1000 ns)\n",
	       NROUTES, per, matched / ROUNDS, NREQ, per < 1000 ? "PASS" : "FAIL");
	sp_config_unref(&c);
	sp_buf_deinit(&text);
	sp_buf_deinit(&scratch);
	sp_diag_deinit(&diag);
	return per < 1000 ? 0 : 1;
}
