/* Shared helpers for the modules that parse their own config sections
 * (config.c dispatches; route_conf.c parses routes). Internal to config loading. */
#ifndef SP_CONFIG_PARSE_H
#define SP_CONFIG_PARSE_H

#include <libconfig.h>
#include <limits.h>

#include "config.h"

/* Where libconfig 1.5 looks for an @include: the main file's directory
 * (config_set_include_dir), which it puts in front of every include path. */
struct cfgp_includes {
	char shown[PATH_MAX]; /* that directory as the main file was named ("." for none) */
	char real[PATH_MAX];  /* its real path, given to libconfig */
	char up[PATH_MAX];    /* "../" from real up to "/": an absolute path in the
			       * main file is rewritten below it */
};

struct sp_loader {
	struct sp_diag *diag;
	const char *file;
	struct sp_config *cfg;
	int errors_before; /* the diag may already hold errors from elsewhere */
	const struct cfgp_includes *inc;
	char where[2 * PATH_MAX]; /* cfgp_file's answer */
};

#define ERR(L, S, ...) sp_diag_add((L)->diag, 1, cfgp_file(L, S), cfgp_line(S), __VA_ARGS__)
#define WARN(L, S, ...) sp_diag_add((L)->diag, 0, cfgp_file(L, S), cfgp_line(S), __VA_ARGS__)

int cfgp_line(const config_setting_t *s);
/* The file a setting was read from: the main file's name, or an included
 * file's named as the user would find it (valid until the next call). */
const char *cfgp_file(struct sp_loader *L, const config_setting_t *s);
/* The same name, kept by the configuration (for what is reported after
 * loading: routes, listeners); the main file's name when memory runs out. */
const char *cfgp_src_file(struct sp_loader *L, const config_setting_t *s);
/* Reports every member of group s whose name is not in known (NULL-terminated). */
/* The group `key` of parent (whose path is ppath), with its own path
 * ("ppath.key") written into path: NULL when it is absent, or when it is not
 * a group, reported with example ("{ samples = 1; }") as how to write it.
 * Its keys are the caller's to check (cfgp_check_keys). */
const config_setting_t *cfgp_group(struct sp_loader *L, const config_setting_t *parent,
				   const char *key, const char *ppath, const char *example,
				   char *path, size_t len);
void cfgp_check_keys(struct sp_loader *L, const config_setting_t *s, const char *path,
		     const char *const *known);
int cfgp_want_type(struct sp_loader *L, const config_setting_t *s, const char *path, int type,
		   const char *what);
/* A float, int or int64 setting's value; NAN for any other type. */
double cfgp_number(const config_setting_t *s);
/* Characters in s, or -1 (*bad, when not NULL, the offset of the first byte
 * at fault) when s is not UTF-8 text: an invalid, overlong or surrogate
 * sequence, or, unless controls, a control character. Pure. */
long cfgp_text_chars(const char *s, int controls, size_t *bad);
/* Optional string member: a malloc'd copy (caller owns), NULL when absent,
 * not a string or not UTF-8 text (reported: it may reach the API's JSON).
 * *where is the setting or NULL. */
char *cfgp_str(struct sp_loader *L, const config_setting_t *g, const char *key, const char *path,
	       const config_setting_t **where);
/* The same for a file name, any bytes but NUL. */
char *cfgp_path(struct sp_loader *L, const config_setting_t *g, const char *key, const char *path,
		const config_setting_t **where);
void cfgp_int(struct sp_loader *L, const config_setting_t *g, const char *key, const char *path,
	      long long lo, long long hi, long long *out);
void cfgp_int_field(struct sp_loader *L, const config_setting_t *g, const char *key,
		    const char *path, long long lo, long long hi, int *field);
/* Optional boolean member: 1 with *out set, 0 when absent, -1 when not a
 * boolean (reported "PATH.KEY: must be true or false"; *out untouched). */
int cfgp_bool(struct sp_loader *L, const config_setting_t *g, const char *key, const char *path,
	      int *out);
/* Member key of g when it is a list of UTF-8 strings (or, with one_ok, a
 * string alone); NULL when absent, or when not (reported as "shown: must be
 * [a list of ]example", or at the entry that is not text). */
const config_setting_t *cfgp_strings(struct sp_loader *L, const config_setting_t *g,
				     const char *key, const char *shown, const char *example,
				     int one_ok);
/* A list of address blocks at member key ("10.0.0.0/8", "2001:db8::/32",
 * "192.0.2.7"), 1-256 of them, into *out (caller owns) and *n; path is its
 * parent's ("" at the top). Nothing when absent. */
struct sp_cidr;
void cfgp_cidr_list(struct sp_loader *L, const config_setting_t *g, const char *key,
		    const char *path, struct sp_cidr **out, size_t *n);
/* A backend named by member key: its index, or -1 (reported when given). */
int cfgp_backend_ref(struct sp_loader *L, const config_setting_t *g, const char *key,
		     const char *path, int required);

/* route_conf.c */
void sp_load_routes(struct sp_loader *L, const config_setting_t *root);
/* Optional path member, which must be written normalised (pathnorm.h): a
 * malloc'd copy, or NULL (reported: "is not normalised and <else_>"). */
char *cfgp_norm_path(struct sp_loader *L, const config_setting_t *g, const char *key,
		     const char *path, const char *else_);

/* rewrite.c: backends.NAME.path_rewrite into *rules (*n of them; caller
 * owns, sp_rewrite_free). */
struct sp_rewrite;
void sp_load_path_rewrite(struct sp_loader *L, const config_setting_t *backend, const char *path,
			  struct sp_rewrite **rules, size_t *n);
/* backends.NAME.request_headers (response: .response_headers) into *r. */
struct sp_hdr_rules;
void sp_load_hdr_rules(struct sp_loader *L, const config_setting_t *backend, const char *path,
		       int response, struct sp_hdr_rules *r);

/* respond.c: routes.[i].return into *r; 1 when the route has one (reported
 * when bad), 0 when not. */
struct sp_return;
int sp_load_return(struct sp_loader *L, const config_setting_t *route, const char *path,
		   struct sp_return *r);

#endif
