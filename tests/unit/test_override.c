/* Unit tests of proxy/override.c: what a state file must hold to be taken
 * as strangler's (anything else would be overwritten by the first change). */
#include "unit.h"

#include <jansson.h>

#include "override.h"

/* A config with backend legacy and the other backends given, and one route
 * on legacy with the settings given. */
#define ONE_ROUTE(backends, name, settings)                                                  \
	"listen = ( { address = \"127.0.0.1:8080\"; } );\n"                                       \
	"backends = { legacy = { url = \"http://127.0.0.1:9001\"; }; " backends " };\n"          \
	"default_backend = \"legacy\";\n"                                                        \
	"routes = ( { name = \"" name "\"; backend = \"legacy\"; " settings " } );\n"

/* sp_state_check of the JSON text: NULL when accepted, else its reason. */
static const char *state_fault(const char *text)
{
	static char why[256];
	json_error_t err;
	json_t *j = json_loads(text, JSON_DECODE_ANY, &err);
	assert_non_null(j);
	int rc = sp_state_check(j, why, sizeof(why));
	json_decref(j);
	return rc == 0 ? NULL : why;
}

static void test_state_written_by_strangler_is_accepted(void **state)
{
	(void)state;
	assert_null(state_fault("{}"));
	assert_null(state_fault("{\"overrides\": {}, \"audit\": [], \"guards\": {}}"));
	assert_null(state_fault("{\"overrides\": {\"orders\": {\"rollout\": {\"percent\": 0}}}, "
				"\"guards\": {\"orders\": {\"reason\": \"error rate\", "
				"\"tripped_at\": \"2026-11-27T10:00:00Z\"}}, "
				"\"audit\": [{\"route\": \"orders\"}]}"));
	/* a percent out of range is the build's to skip, with a warning */
	assert_null(state_fault("{\"overrides\": {\"orders\": {\"rollout\": {\"percent\": 250}}}}"));
}

static void test_foreign_or_misshapen_state_is_refused(void **state)
{
	(void)state;
	assert_string_equal(state_fault("[1, 2, 3]"), "not a strangler state: a JSON array, not an object");
	assert_string_equal(state_fault("\"x\""), "not a strangler state: a JSON value, not an object");
	assert_string_equal(state_fault("{\"name\": \"my-app\", \"version\": \"1.0.0\"}"),
			    "not a strangler state: none of \"overrides\", \"audit\", \"guards\", "
			    "\"drained\" in it");
	assert_string_equal(state_fault("{\"overrides\": [\"orders\"]}"),
			    "overrides: must be an object (route name: change)");
	assert_string_equal(state_fault("{\"overrides\": {\"orders\": 5}}"),
			    "overrides.orders: must be an object such as {\"rollout\": {\"percent\": 50}}");
	assert_string_equal(state_fault("{\"overrides\": {}, \"audit\": {}}"),
			    "audit: must be an array of changes");
	assert_string_equal(state_fault("{\"overrides\": {}, \"audit\": [{}, 1]}"),
			    "audit.[1]: must be an object (a change)");
	assert_string_equal(state_fault("{\"guards\": []}"),
			    "guards: must be an object (route name: trip)");
	assert_string_equal(state_fault("{\"drained\": {}}"), "drained: must be an array of server URLs");
	assert_string_equal(state_fault("{\"drained\": [\"http://a\", \"\"]}"),
			    "drained.[1]: must be a server's URL");
	assert_string_equal(state_fault("{\"guards\": {\"orders\": 5}}"),
			    "guards.orders: must be an object with strings reason and tripped_at");
	assert_string_equal(state_fault("{\"guards\": {\"orders\": {\"reason\": 1, \"tripped_at\": \"x\"}}}"),
			    "guards.orders: must be an object with strings reason and tripped_at");
}

/* A PATCH's percent is named as sent: %g printed 100.0000001 as 100. */
static void test_patch_errors_name_the_value_sent(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(
		ONE_ROUTE("modern = { url = \"http://127.0.0.1:9002\"; };",
			  "r", "rollout = { backend = \"modern\"; percent = 5.0; };"), NULL);
	char err[256];
	json_t *patch = json_pack("{s:{s:f}}", "rollout", "percent", 100.0000001);
	assert_int_equal(sp_override_check(c, "r", patch, err, sizeof(err)), 400);
	assert_string_equal(err, "rollout.percent: 100.0000001: must be between 0 and 100");
	json_decref(patch);
	patch = json_pack("{s:{s:f}}", "rollout", "percent", 12.3456789);
	assert_int_equal(sp_override_check(c, "r", patch, err, sizeof(err)), 400);
	assert_string_equal(err, "rollout.percent: 12.3456789: at most two decimals");
	json_decref(patch);
	sp_config_unref(&c);
}

/* An override the build skipped (its backend removed by a reload) was still
 * shown as the route's override, as if in force. */
static void test_a_skipped_override_is_shown_as_skipped(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(ONE_ROUTE("", "users", ""), NULL);
	json_t *ov = json_pack("{s:s}", "backend", "canary");
	json_t *j = sp_route_json(c, &c->routes[0], ov);
	assert_true(json_is_null(json_object_get(j, "override")));
	json_t *skipped = json_object_get(j, "override_skipped");
	assert_true(json_equal(json_object_get(skipped, "override"), ov));
	assert_string_equal(json_string_value(json_object_get(skipped, "reason")),
			    "backend: unknown backend \"canary\"");
	json_decref(j);
	json_decref(ov);
	ov = json_pack("{s:s}", "backend", "legacy");
	j = sp_route_json(c, &c->routes[0], ov);
	assert_true(json_equal(json_object_get(j, "override"), ov));
	assert_null(json_object_get(j, "override_skipped"));
	json_decref(j);
	json_decref(ov);
	sp_config_unref(&c);
}

/* The note names the admin API path to use: with the route's name
 * percent-encoded, as the API reads it ("a b/c" sent as written got 400). */
static void test_a_masked_setting_names_the_path_to_follow_the_file(void **state)
{
	(void)state;
	struct sp_config *c = unit_load_ok(
		ONE_ROUTE("modern = { url = \"http://127.0.0.1:9002\"; };", "a b/c~é",
			  "rollout = { backend = \"modern\"; percent = 10.0; };"),
		NULL);
	json_t *ov = json_pack("{s:{s:{s:f}}}", "a b/c~é", "rollout", "percent", 50.0);
	struct sp_buf notes;
	sp_buf_init(&notes);
	assert_int_equal(sp_override_apply(c, ov, &notes), 1);
	assert_non_null(notes.data);
	assert_non_null(strstr(notes.data, "(DELETE /api/routes/a%20b%2Fc~%C3%A9/override to "
					   "follow the file)"));
	sp_buf_deinit(&notes);
	json_decref(ov);
	sp_config_unref(&c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_state_written_by_strangler_is_accepted),
		cmocka_unit_test(test_foreign_or_misshapen_state_is_refused),
		cmocka_unit_test(test_patch_errors_name_the_value_sent),
		cmocka_unit_test(test_a_skipped_override_is_shown_as_skipped),
		cmocka_unit_test(test_a_masked_setting_names_the_path_to_follow_the_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
