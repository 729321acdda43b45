/* Unit tests of proxy/override.c: what a state file must hold to be taken
 * as strangler's (anything else would be overwritten by the first change). */
#include "unit.h"

#include <jansson.h>

#include "override.h"

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
			    "not a strangler state: none of \"overrides\", \"audit\", \"guards\" in it");
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
	assert_string_equal(state_fault("{\"guards\": {\"orders\": 5}}"),
			    "guards.orders: must be an object with strings reason and tripped_at");
	assert_string_equal(state_fault("{\"guards\": {\"orders\": {\"reason\": 1, \"tripped_at\": \"x\"}}}"),
			    "guards.orders: must be an object with strings reason and tripped_at");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_state_written_by_strangler_is_accepted),
		cmocka_unit_test(test_foreign_or_misshapen_state_is_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
