/* Config loading: libconfig text → one checked, immutable sp_config. Every
 * problem is reported as "FILE:LINE: setting.path: reason" and all of them are
 * collected before giving up. */
#include "config.h"
#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <libconfig.h>
#include <math.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "buf.h"
#include "config_parse.h"
#include "log.h"


void sp_diag_init(struct sp_diag *d)
{
	sp_buf_init(&d->text);
	d->errors = 0;
	d->warnings = 0;
}

void sp_diag_deinit(struct sp_diag *d)
{
	sp_buf_deinit(&d->text);
}

void sp_diag_add_lines(struct sp_diag *d, int is_error, const char *file, const struct sp_buf *text)
{
	if (!text->data) /* nothing (and no pointer to count from) */
		return;
	for (const char *p = text->data, *end = p + text->len, *nl; p < end; p = nl + 1) {
		nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			nl = end;
		sp_diag_add(d, is_error, file, 0, "%.*s", (int)(nl - p), p);
	}
}

void sp_diag_add(struct sp_diag *d, int is_error, const char *file, int line, const char *fmt, ...)
{
	va_list ap, again;
	char small[1024], *msg = small;
	va_start(ap, fmt);
	va_copy(again, ap);
	int n = vsnprintf(small, sizeof(small), fmt, ap);
	/* a value quoted from the file can be long (a 1025-character pattern):
	 * the reason after it must not be cut off */
	if (n >= (int)sizeof(small) && !(msg = malloc((size_t)n + 1)))
		msg = small;
	else if (msg != small)
		vsnprintf(msg, (size_t)n + 1, fmt, again);
	va_end(again);
	va_end(ap);
	/* one diagnostic, one line: values quoted from the file may hold
	 * control characters */
	for (char *p = msg; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (line > 0)
		sp_buf_printf(&d->text, "%s:%d: %s%s\n", file, line, is_error ? "" : "warning: ", msg);
	else
		sp_buf_printf(&d->text, "%s: %s%s\n", file, is_error ? "" : "warning: ", msg);
	if (msg != small)
		free(msg);
	if (is_error)
		d->errors++;
	else
		d->warnings++;
}

int cfgp_line(const config_setting_t *s)
{
	return s ? (int)config_setting_source_line(s) : 0;
}

/* An included file's name as libconfig gives it (as written in the
 * @include, absolute ones of the main file rewritten below inc->up), named
 * as the user would find it: below the main file's directory. */
static const char *include_shown(const struct cfgp_includes *inc, const char *file, char *buf,
				 size_t len)
{
	size_t up = strlen(inc->up);
	if (up && strncmp(file, inc->up, up) == 0)
		snprintf(buf, len, "/%s", file + up);
	else if (file[0] == '/' || strcmp(inc->shown, ".") == 0)
		snprintf(buf, len, "%s", file);
	else
		snprintf(buf, len, "%s/%s", inc->shown, file);
	return buf;
}

const char *cfgp_file(struct sp_loader *L, const config_setting_t *s)
{
	const char *f = s ? config_setting_source_file(s) : NULL;
	if (!f || !L->inc)
		return L->file;
	return include_shown(L->inc, f, L->where, sizeof(L->where));
}

const char *cfgp_src_file(struct sp_loader *L, const config_setting_t *s)
{
	struct sp_config *c = L->cfg;
	const char *f = cfgp_file(L, s);
	if (c->file && strcmp(f, c->file) == 0)
		return c->file;
	for (size_t i = 0; i < c->nfiles; i++)
		if (strcmp(c->files[i], f) == 0)
			return c->files[i];
	char **grown = realloc(c->files, (c->nfiles + 1) * sizeof(*grown));
	if (grown)
		c->files = grown;
	char *copy = grown ? strdup(f) : NULL;
	if (!copy)
		return c->file;
	c->files[c->nfiles++] = copy;
	return copy;
}

static struct sp_where where_of(struct sp_loader *L, const config_setting_t *s)
{
	return s ? (struct sp_where){cfgp_src_file(L, s), cfgp_line(s)} : (struct sp_where){NULL, 0};
}

const config_setting_t *cfgp_group(struct sp_loader *L, const config_setting_t *parent,
				   const char *key, const char *ppath, const char *example,
				   char *path, size_t len)
{
	const config_setting_t *g = config_setting_get_member(parent, key);
	if (!g)
		return NULL;
	snprintf(path, len, "%s.%s", ppath, key);
	if (config_setting_is_group(g))
		return g;
	ERR(L, g, "%s: must be a group: %s", path, example);
	return NULL;
}

/* Reports every member of group s whose name is not in known (NULL-terminated). */
void cfgp_check_keys(struct sp_loader *L, const config_setting_t *s, const char *path,
		       const char *const *known)
{
	int n = config_setting_length(s);
	for (int i = 0; i < n; i++) {
		const config_setting_t *m = config_setting_get_elem(s, (unsigned)i);
		const char *name = config_setting_name(m);
		int ok = 0;
		for (const char *const *k = known; *k && !ok; k++)
			ok = strcmp(*k, name) == 0;
		if (!ok)
			ERR(L, m, "%s%s%s: unknown setting", path, *path ? "." : "", name);
	}
}

int cfgp_want_type(struct sp_loader *L, const config_setting_t *s, const char *path, int type,
		     const char *what)
{
	int t = config_setting_type(s);
	if (t == type || (type == CONFIG_TYPE_FLOAT && (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64)))
		return 1;
	if (type == CONFIG_TYPE_INT && t == CONFIG_TYPE_INT64)
		return 1;
	ERR(L, s, "%s: must be %s", path, what);
	return 0;
}

long cfgp_text_chars(const char *s, int controls, size_t *bad)
{
	const unsigned char *p = (const unsigned char *)s, *at;
	long n = 0;
	while (*p) {
		unsigned c = *(at = p++), need, min;
		if (c < 0x80) {
			if (!controls && (c < 0x20 || c == 0x7f))
				goto fail;
			n++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			need = 1, min = 0x80, c &= 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			need = 2, min = 0x800, c &= 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			need = 3, min = 0x10000, c &= 0x07;
		else
			goto fail;
		for (; need; need--, p++) {
			if ((*p & 0xc0) != 0x80)
				goto fail;
			c = c << 6 | (*p & 0x3f);
		}
		if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
			goto fail;
		n++;
	}
	return n;
fail:
	if (bad)
		*bad = (size_t)(at - (const unsigned char *)s);
	return -1;
}

static char *str_member(struct sp_loader *L, const config_setting_t *g, const char *key,
			const char *path, const config_setting_t **where, int text)
{
	char full[256];
	size_t bad;
	const config_setting_t *s = config_setting_get_member(g, key);
	if (where)
		*where = s;
	if (!s)
		return NULL;
	snprintf(full, sizeof(full), "%s%s%s", path, *path ? "." : "", key);
	if (!cfgp_want_type(L, s, full, CONFIG_TYPE_STRING, "a string"))
		return NULL;
	const char *v = config_setting_get_string(s);
	if (text && cfgp_text_chars(v, 1, &bad) < 0) {
		ERR(L, s, "%s: must be UTF-8 text (byte 0x%02x at offset %zu is not): save the file "
			  "as UTF-8", full, (unsigned char)v[bad], bad);
		return NULL;
	}
	return strdup(v);
}

char *cfgp_str(struct sp_loader *L, const config_setting_t *g, const char *key, const char *path,
	       const config_setting_t **where)
{
	return str_member(L, g, key, path, where, 1);
}

char *cfgp_path(struct sp_loader *L, const config_setting_t *g, const char *key, const char *path,
		const config_setting_t **where)
{
	return str_member(L, g, key, path, where, 0);
}

/* A file the process writes (a log, the pid file, the state file): as
 * cfgp_path, and an empty name is refused, hint saying what to write
 * instead. */
static char *out_path(struct sp_loader *L, const config_setting_t *g, const char *key,
		      const char *path, const config_setting_t **where, const char *hint)
{
	char *v = cfgp_path(L, g, key, path, where);
	if (v && !*v)
		ERR(L, *where, "%s%s%s: must be a path%s", path, *path ? "." : "", key, hint);
	return v;
}

double cfgp_number(const config_setting_t *s)
{
	switch (config_setting_type(s)) {
	case CONFIG_TYPE_FLOAT:
		return config_setting_get_float(s);
	case CONFIG_TYPE_INT:
		return config_setting_get_int(s);
	case CONFIG_TYPE_INT64:
		return (double)config_setting_get_int64(s);
	default:
		return NAN;
	}
}

/* Optional integer member within [lo, hi]; *out is untouched when absent. */
void cfgp_int(struct sp_loader *L, const config_setting_t *g, const char *key, const char *path,
		    long long lo, long long hi, long long *out)
{
	char full[256];
	const config_setting_t *s = config_setting_get_member(g, key);
	if (!s)
		return;
	snprintf(full, sizeof(full), "%s%s%s", path, *path ? "." : "", key);
	if (!cfgp_want_type(L, s, full, CONFIG_TYPE_INT, "an integer"))
		return;
	long long v = config_setting_get_int64(s);
	if (config_setting_type(s) == CONFIG_TYPE_INT)
		v = config_setting_get_int(s);
	if (v < lo || v > hi) {
		ERR(L, s, "%s: must be between %lld and %lld", full, lo, hi);
		return;
	}
	*out = v;
}

void cfgp_int_field(struct sp_loader *L, const config_setting_t *g, const char *key,
			  const char *path, long long lo, long long hi, int *field)
{
	long long v = *field;
	cfgp_int(L, g, key, path, lo, hi, &v);
	*field = (int)v;
}

int cfgp_bool(struct sp_loader *L, const config_setting_t *g, const char *key, const char *path,
	      int *out)
{
	const config_setting_t *s = config_setting_get_member(g, key);
	if (!s)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
		ERR(L, s, "%s%s%s: must be true or false", path, *path ? "." : "", key);
		return -1;
	}
	*out = config_setting_get_bool(s);
	return 1;
}

int sp_parse_hostport(const char *s, int passive, struct sockaddr_storage *ss, socklen_t *len,
		      int *naddrs, const char **why)
{
	char host[256];
	const char *port;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':') {
			*why = "IPv6 addresses are written \"[::1]:8080\"";
			return -1;
		}
		if ((size_t)(close - s - 1) >= sizeof(host)) {
			*why = "host too long";
			return -1;
		}
		memcpy(host, s + 1, (size_t)(close - s - 1));
		host[close - s - 1] = '\0';
		port = close + 2;
	} else {
		const char *colon = strrchr(s, ':');
		if (!colon || strchr(s, ':') != colon) {
			*why = "must be \"host:port\" (IPv6 as \"[::1]:8080\")";
			return -1;
		}
		if ((size_t)(colon - s) >= sizeof(host)) {
			*why = "host too long";
			return -1;
		}
		memcpy(host, s, (size_t)(colon - s));
		host[colon - s] = '\0';
		port = colon + 1;
	}
	/* digits only: strtol would also take " 80" and "+80" */
	long p = strlen(port) <= 5 && port[strspn(port, "0123456789")] == '\0' ? atol(port) : 0;
	if (p < 1 || p > 65535) {
		*why = "port must be a number between 1 and 65535";
		return -1;
	}
	/* getaddrinfo takes inet_aton's shorthands, another address than the
	 * one written: 127.0.0.010 is 127.0.0.8, 10.0.5 is 10.0.0.5 */
	struct in_addr v4;
	unsigned char any[sizeof(struct in6_addr)];
	if (strpbrk(host, " \t")) {
		*why = "a blank in the host";
		return -1;
	}
	if (*host && inet_aton(host, &v4) && inet_pton(AF_INET, host, any) != 1) {
		*why = "not an IPv4 address as written: four numbers 0-255 without leading zeros "
		       "(the system would read 127.0.0.010 as 127.0.0.8, 10.0.5 as 10.0.0.5)";
		return -1;
	}
	if (passive && inet_pton(AF_INET6, host, any) == 1 &&
	    IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)any)) {
		*why = "an IPv4-mapped IPv6 address: strangler's IPv6 sockets take IPv6 only; "
		       "write the IPv4 address (127.0.0.1:8080)";
		return -1;
	}
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	if (passive)
		hints.ai_flags = AI_PASSIVE;
	int rc = getaddrinfo(*host && strcmp(host, "*") ? host : NULL, port, &hints, &res);
	if (rc != 0 || !res) {
		*why = rc == EAI_NONAME ? "host name does not resolve" : gai_strerror(rc);
		return -1;
	}
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	if (naddrs) {
		*naddrs = 0;
		for (const struct addrinfo *a = res; a; a = a->ai_next)
			++*naddrs;
	}
	freeaddrinfo(res);
	return 0;
}

/* Remembers a file the configuration reads (sp_config.read_files). */
static void note_read_file(struct sp_loader *L, const char *file)
{
	struct sp_config *c = L->cfg;
	if (!file)
		return;
	for (size_t i = 0; i < c->nread_files; i++)
		if (strcmp(c->read_files[i], file) == 0)
			return;
	char **v = realloc(c->read_files, (c->nread_files + 1) * sizeof(*v));
	if (!v)
		return; /* only a warning is lost */
	c->read_files = v;
	if ((v[c->nread_files] = strdup(file)) != NULL)
		c->nread_files++;
}

static int load_cert(struct sp_loader *L, const config_setting_t *g, const char *path,
		     struct sp_tls_cert *c)
{
	const config_setting_t *w1, *w2;
	c->certificate = cfgp_path(L, g, "certificate", path, &w1);
	c->private_key = cfgp_path(L, g, "private_key", path, &w2);
	if (!w1)
		ERR(L, g, "%s.certificate: required", path);
	if (!w2)
		ERR(L, g, "%s.private_key: required", path);
	note_read_file(L, c->certificate);
	note_read_file(L, c->private_key);
	return c->certificate && c->private_key ? 0 : -1;
}

/* Reports a TLS load failure at the setting it names, a member of group g
 * whose path is path (at g itself when no file is to blame, or when the file
 * is the default one: ca_file left out means the system store). */
static void tls_error(struct sp_loader *L, const config_setting_t *g, const char *path,
		      const struct sp_tls_error *err)
{
	const char *name = err->setting;
	const config_setting_t *s = name ? config_setting_get_member(g, name) : NULL;
	ERR(L, s ? s : g, "%s%s%s: %s", path, name ? "." : "", name ? name : "", err->reason);
}

/* Warns at group g's setting key (a certificate file) when bad is set: the
 * certificate is outside its validity period (why). */
static void warn_validity(struct sp_loader *L, const config_setting_t *g, const char *path,
			  const char *key, const char *file, int bad, const char *why)
{
	if (bad)
		WARN(L, config_setting_get_member(g, key), "%s.%s: \"%s\": %s; peers will refuse it",
		     path, key, file, why);
}

/* tls = { certificate; private_key; } or { certificates = ( {...}, ... ); },
 * with min_version = "TLSv1.2" (default) or "TLSv1.3". */
static void load_listen_tls(struct sp_loader *L, const config_setting_t *e, const char *lpath,
			    struct sp_listen *l)
{
	static const char *const keys[] = {"certificate", "private_key", "certificates",
					   "min_version", NULL};
	static const char *const ckeys[] = {"certificate", "private_key", NULL};
	char path[96], cpaths[16][128];
	struct sp_tls_cert certs[16];
	const config_setting_t *groups[16]; /* each entry's group, for its errors */
	struct sp_tls_error err;
	char why[96];
	size_t n = 0;
	int min = TLS1_2_VERSION, ok = 1;
	const config_setting_t *t =
		cfgp_group(L, e, "tls", lpath, "{ certificate = \"...\"; private_key = \"...\"; }",
			   path, sizeof(path));
	if (!t)
		return;
	cfgp_check_keys(L, t, path, keys);
	memset(certs, 0, sizeof(certs));
	const config_setting_t *list = config_setting_get_member(t, "certificates");
	if (config_setting_get_member(t, "certificate") || config_setting_get_member(t, "private_key")) {
		groups[n] = t;
		snprintf(cpaths[n], sizeof(cpaths[n]), "%s", path);
		ok &= load_cert(L, t, path, &certs[n++]) == 0;
	}
	if (list && !config_setting_is_list(list)) {
		ERR(L, list, "%s.certificates: must be a list: ( { certificate = ...; private_key = ...; } )",
		    path);
		ok = 0;
	}
	for (int i = 0; list && config_setting_is_list(list) && i < config_setting_length(list); i++) {
		const config_setting_t *g = config_setting_get_elem(list, (unsigned)i);
		char cpath[sizeof(cpaths[0])];
		snprintf(cpath, sizeof(cpath), "%s.certificates.[%d]", path, i);
		if (!config_setting_is_group(g) || n == 16) {
			ERR(L, g, "%s: must be a group (at most 16 certificates)", cpath);
			ok = 0;
			continue;
		}
		cfgp_check_keys(L, g, cpath, ckeys);
		groups[n] = g;
		memcpy(cpaths[n], cpath, sizeof(cpath));
		ok &= load_cert(L, g, cpath, &certs[n++]) == 0;
	}
	if (n == 0 && ok) {
		ERR(L, t, "%s: a certificate and private_key are required", path);
		ok = 0;
	}
	const config_setting_t *where;
	char *mv = cfgp_str(L, t, "min_version", path, &where);
	if (mv && strcmp(mv, "TLSv1.3") == 0)
		min = TLS1_3_VERSION;
	else if (mv && strcmp(mv, "TLSv1.2") != 0) {
		ERR(L, where, "%s.min_version: \"%s\": must be \"TLSv1.2\" or \"TLSv1.3\"", path, mv);
		ok = 0;
	}
	free(mv);
	if (ok && !(l->tls = sp_tls_server_new(certs, n, min, &err)))
		tls_error(L, groups[err.entry], cpaths[err.entry], &err);
	for (size_t i = 0; l->tls && i < n; i++)
		warn_validity(L, groups[i], cpaths[i], "certificate", certs[i].certificate,
			      sp_tls_server_validity(l->tls, i, time(NULL), why, sizeof(why)), why);
	for (size_t i = 0; i < n; i++) {
		free(certs[i].certificate);
		free(certs[i].private_key);
	}
}

static void load_listen(struct sp_loader *L, const config_setting_t *root)
{
	static const char *const keys[] = {"address", "tls", "proxy_protocol", NULL};
	const config_setting_t *ls = config_setting_get_member(root, "listen");
	if (!ls) {
		sp_diag_add(L->diag, 1, L->file, 0, "listen: at least one listen address is required");
		return;
	}
	if (!config_setting_is_list(ls) && !config_setting_is_array(ls)) {
		ERR(L, ls, "listen: must be a list: ( { address = \"127.0.0.1:8080\"; } )");
		return;
	}
	int n = config_setting_length(ls);
	if (n == 0)
		ERR(L, ls, "listen: at least one listen address is required");
	L->cfg->listen = calloc((size_t)n + 1, sizeof(*L->cfg->listen));
	for (int i = 0; i < n && L->cfg->listen; i++) {
		const config_setting_t *e = config_setting_get_elem(ls, (unsigned)i);
		char path[64];
		snprintf(path, sizeof(path), "listen.[%d]", i);
		if (!config_setting_is_group(e)) {
			ERR(L, e, "%s: must be a group: { address = \"host:port\"; }", path);
			continue;
		}
		cfgp_check_keys(L, e, path, keys);
		const config_setting_t *where;
		struct sp_listen *l = &L->cfg->listen[L->cfg->nlisten];
		l->address = cfgp_str(L, e, "address", path, &where);
		l->file = cfgp_src_file(L, e);
		l->line = cfgp_line(e);
		if (!l->address) {
			if (!where)
				ERR(L, e, "%s.address: required", path);
			continue;
		}
		const char *why;
		if (sp_parse_hostport(l->address, 1, &l->addr, &l->addrlen, NULL, &why) < 0) {
			ERR(L, where, "%s.address: \"%s\": %s", path, l->address, why);
			free(l->address);
			l->address = NULL;
			continue;
		}
		load_listen_tls(L, e, path, l);
		cfgp_bool(L, e, "proxy_protocol", path, &l->proxy_protocol);
		L->cfg->nlisten++;
	}
}

/* Whether two listening addresses would take the same connections: the
 * same family and port, and the same address or the wildcard (0.0.0.0, ::)
 * on either side. Both bind, side by side (SO_REUSEPORT), and the kernel
 * spreads or steers connections between them. */
static int listen_overlap(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port &&
		       (x->sin_addr.s_addr == y->sin_addr.s_addr || x->sin_addr.s_addr == INADDR_ANY ||
			y->sin_addr.s_addr == INADDR_ANY);
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port &&
	       (IN6_ARE_ADDR_EQUAL(&x->sin6_addr, &y->sin6_addr) ||
		IN6_IS_ADDR_UNSPECIFIED(&x->sin6_addr) || IN6_IS_ADDR_UNSPECIFIED(&y->sin6_addr));
}

/* A listen address that overlaps an earlier one, or the admin API's: its
 * connections would go to either listener, by the kernel's choice. */
static void check_listen_overlaps(struct sp_loader *L)
{
	const struct sp_config *c = L->cfg;
	for (size_t i = 0; i < c->nlisten; i++) {
		const struct sp_listen *l = &c->listen[i];
		for (size_t j = 0; j < i; j++)
			if (listen_overlap(&l->addr, &c->listen[j].addr)) {
				sp_diag_add(L->diag, 1, l->file, l->line,
					    "listen: \"%s\" takes the connections of \"%s\" (%s:%d) too: "
					    "write each address once",
					    l->address, c->listen[j].address, c->listen[j].file,
					    c->listen[j].line);
				break;
			}
		if (c->has_admin && c->admin.address && listen_overlap(&l->addr, &c->admin.addr))
			sp_diag_add(L->diag, 1, l->file, l->line,
				    "listen: \"%s\" takes the connections of admin.address \"%s\" "
				    "(%s:%d) too: give the admin API a port of its own",
				    l->address, c->admin.address, c->admin.file, c->admin.line);
	}
}

/* "http://unix:/run/app.sock" (or nginx's "http://unix:/run/app.sock:", a
 * ':' ending the path; a final '/' as for a host): a unix socket's path
 * (absolute, visible ASCII, as long as sun_path holds) → its address; the
 * server is named "unix:/run/app.sock". */
static int parse_unix_url(struct sp_server *b, const char *rest, const char **why)
{
	struct sockaddr_un *un = (struct sockaddr_un *)&b->addr;
	const char *path = rest + 5;
	size_t n = strcspn(path, ":?#");
	const char *after = path + n;
	if (*after == ':') /* nginx's end of the socket's path */
		after++;
	else if (!*after && n > 1 && path[n - 1] == '/') /* as http://host:port/ */
		n--, after = "/";
	if (*after && strcmp(after, "/") != 0) {
		*why = "must not carry a path, query or fragment (the request path is forwarded as "
		       "is)";
		return -1;
	}
	if (path[0] != '/') {
		*why = "a unix socket's path must be absolute: http://unix:/run/app.sock";
		return -1;
	}
	if (n >= sizeof(un->sun_path)) {
		*why = "a unix socket's path is at most 107 bytes";
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)path[i] <= 0x20 || (unsigned char)path[i] >= 0x7f) {
			*why = "a unix socket's path is visible ASCII, without spaces";
			return -1;
		}
	memset(&b->addr, 0, sizeof(b->addr));
	un->sun_family = AF_UNIX;
	memcpy(un->sun_path, path, n);
	b->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	b->is_unix = 1;
	b->hostport = strndup(rest, 5 + n);
	b->host = strdup("localhost");
	if (!b->hostport || !b->host) {
		*why = "out of memory";
		return -1;
	}
	return 0;
}

/* "http://host[:port][/]" → a server's address; *tls: whether it is https://.
 * "http://unix:/path" is a unix socket. */
static int parse_url(struct sp_server *b, int *tls_out, int *naddrs, const char **why)
{
	const char *u = b->url, *rest;
	char hostport[300];
	int tls = 0;
	if (strncmp(u, "http://", 7) == 0) {
		rest = u + 7;
	} else if (strncmp(u, "https://", 8) == 0) {
		rest = u + 8;
		tls = 1;
	} else {
		*why = "must start with http:// or https://";
		return -1;
	}
	if (strncmp(rest, "unix:", 5) == 0) {
		if (tls) {
			*why = "https:// over a unix socket is not supported (write http://unix:/path)";
			return -1;
		}
		*tls_out = 0;
		return parse_unix_url(b, rest, why);
	}
	size_t hl = strcspn(rest, "/?#");
	if (rest[hl] && strcmp(rest + hl, "/") != 0) {
		*why = "must not carry a path, query or fragment (the request path is forwarded as is)";
		return -1;
	}
	if (hl == 0 || rest[0] == ':' || hl >= sizeof(hostport) - 4) {
		*why = "missing host";
		return -1;
	}
	if (memchr(rest, '@', hl)) {
		*why = "user information in the URL is not supported";
		return -1;
	}
	memcpy(hostport, rest, hl);
	hostport[hl] = '\0';
	const char *close = hostport[0] == '[' ? strchr(hostport, ']') : NULL;
	const char *colon = strrchr(close ? close : hostport, ':');
	if (!colon)
		strcat(hostport, tls ? ":443" : ":80");
	b->hostport = strdup(hostport);
	size_t host_len = colon ? (size_t)(colon - hostport) : hl;
	b->host = strndup(hostport, host_len);
	if (!b->hostport || !b->host) {
		*why = "out of memory";
		return -1;
	}
	if (b->host[0] == '[') { /* "[::1]" → "::1" for the certificate check */
		memmove(b->host, b->host + 1, strlen(b->host));
		b->host[strcspn(b->host, "]")] = '\0';
	}
	struct in6_addr a6;
	b->host_is_ip = inet_pton(AF_INET, b->host, &a6) == 1 || inet_pton(AF_INET6, b->host, &a6) == 1;
	*tls_out = tls;
	return sp_parse_hostport(b->hostport, 0, &b->addr, &b->addrlen, naddrs, why);
}

/* One server from a URL string; its path for errors is where. */
static void load_server(struct sp_loader *L, const config_setting_t *at, const char *where,
			struct sp_backend *b, const char *url)
{
	struct sp_server *sv = &b->servers[b->nservers];
	const char *why;
	int tls = 0, naddrs = 1;
	char first[NI_MAXHOST];
	sv->weight = 1;
	if (!(sv->url = strdup(url))) {
		ERR(L, at, "%s: out of memory", where);
		return;
	}
	b->nservers++;
	if (parse_url(sv, &tls, &naddrs, &why) < 0) {
		ERR(L, at, "%s: \"%s\": %s", where, url, why);
		return;
	}
	/* nginx would balance over them all: say that strangler does not */
	if (naddrs > 1 && getnameinfo((const struct sockaddr *)&sv->addr, sv->addrlen, first,
				      sizeof(first), NULL, 0, NI_NUMERICHOST) == 0)
		WARN(L, at, "%s: \"%s\": %s has %d addresses; connections go to the first, %s, "
			    "only (list the others in servers to use them)",
		     where, url, sv->host, naddrs, first);
	if (b->nservers == 1) {
		b->tls_wanted = tls;
	} else if (tls != b->tls_wanted) {
		ERR(L, at, "%s: \"%s\": http:// and https:// servers mixed in one backend", where, url);
		return;
	}
	/* the same host and port as written, or the same address they resolve to */
	for (size_t j = 0; j + 1 < b->nservers; j++) {
		const struct sp_server *o = &b->servers[j];
		if (o->hostport && (strcmp(o->hostport, sv->hostport) == 0 ||
				    (o->addrlen == sv->addrlen &&
				     memcmp(&o->addr, &sv->addr, sv->addrlen) == 0))) {
			ERR(L, at, "%s: \"%s\": the same server as servers.[%zu]", where, url, j);
			return;
		}
	}
}

/* servers.[i] = { url = "http://10.0.0.1:9001"; weight = 3; backup = false; }:
 * a server with settings of its own (nginx's "server ... weight=3 backup"). */
static void load_server_group(struct sp_loader *L, const config_setting_t *g, const char *path,
			      int i, struct sp_backend *b)
{
	static const char *const skeys[] = {"url", "weight", "backup", NULL};
	const config_setting_t *u;
	char where[200];
	snprintf(where, sizeof(where), "%s.servers.[%d]", path, i);
	cfgp_check_keys(L, g, where, skeys);
	char *url = cfgp_str(L, g, "url", where, &u);
	size_t at = b->nservers;
	if (!url) {
		if (!u)
			ERR(L, g, "%s.url: required", where);
		return;
	}
	char up[216];
	snprintf(up, sizeof(up), "%s.url", where);
	load_server(L, u, up, b, url);
	free(url);
	if (b->nservers != at + 1)
		return; /* out of memory, said */
	struct sp_server *sv = &b->servers[at];
	cfgp_int_field(L, g, "weight", where, 1, SP_WEIGHT_MAX, &sv->weight);
	cfgp_bool(L, g, "backup", where, &sv->backup);
	b->weighted |= sv->weight != 1 || sv->backup;
}

/* host_header = "modern.internal": the Host its requests carry, as nginx's
 * proxy_set_header Host, for a backend that tells sites apart by Host (an
 * ingress, a shared load balancer). It goes into a header line as it is: a
 * Host a client could send, with a host and a real port. */
static void load_host_header(struct sp_loader *L, const config_setting_t *e, const char *path,
			     struct sp_backend *b)
{
	const config_setting_t *where;
	b->host_header = cfgp_str(L, e, "host_header", path, &where);
	if (!b->host_header)
		return;
	const char *h = b->host_header, *end = strrchr(h, ']'), *colon;
	size_t n = strlen(h);
	colon = strchr(end ? end : h, ':');
	/* what a client's Host may be (sp_http_valid_host: a host before any
	 * port, a port up to 65535), not empty, and not port 0: "a:b:c",
	 * ":80", "x:99999", "x:0", "[" are not */
	if (n == 0 || n > 255 || h[0] == '.' || !sp_http_valid_host(h, n) ||
	    (colon && atol(colon + 1) < 1))
		ERR(L, where, "%s.host_header: \"%s\": must be a host name or address, with an "
			      "optional port (at most 255 characters)", path, h);
	L->cfg->host_headers = 1;
}

/* balance = "round_robin" (by weight) or "least_conn" */
static void load_balance(struct sp_loader *L, const config_setting_t *e, const char *path,
			 struct sp_backend *b)
{
	const config_setting_t *where;
	char *v = cfgp_str(L, e, "balance", path, &where);
	if (v && strcmp(v, "least_conn") == 0)
		b->least_conn = 1;
	else if (v && strcmp(v, "round_robin") != 0)
		ERR(L, where, "%s.balance: \"%s\": must be \"round_robin\" or \"least_conn\"", path,
		    v);
	free(v);
}

/* url = "http://host:port"; or servers = ["http://a:port", "http://b:port"]; */
static void load_servers(struct sp_loader *L, const config_setting_t *e, const char *path,
			 struct sp_backend *b)
{
	static const char not_a_list[] =
		"must be a list of URLs, or of groups for servers with settings: "
		"[\"http://10.0.0.1:9001\", \"http://10.0.0.2:9001\"] or "
		"( { url = \"http://10.0.0.1:9001\"; weight = 3; }, \"http://10.0.0.2:9001\" )";
	const config_setting_t *u = config_setting_get_member(e, "url");
	const config_setting_t *list = config_setting_get_member(e, "servers");
	const config_setting_t *where;
	char sp[200];
	if (u && list) {
		ERR(L, list, "%s: url and servers: give one or the other", path);
		return;
	}
	if (!list) {
		char *url = cfgp_str(L, e, "url", path, &where);
		snprintf(sp, sizeof(sp), "%s.url", path);
		if (!url && !where)
			ERR(L, e, "%s.url: required (or servers, a list of URLs)", path);
		else if (url && (b->servers = calloc(1, sizeof(*b->servers))))
			load_server(L, where, sp, b, url);
		else if (url)
			ERR(L, where, "%s: out of memory", sp);
		free(url);
		return;
	}
	int n = config_setting_length(list);
	if (config_setting_type(list) != CONFIG_TYPE_ARRAY &&
	    config_setting_type(list) != CONFIG_TYPE_LIST) {
		ERR(L, list, "%s.servers: %s", path, not_a_list);
		return;
	}
	if (n == 0) {
		ERR(L, list, "%s.servers: at least one URL", path);
		return;
	}
	if (n > SP_SERVERS_MAX) {
		ERR(L, list, "%s.servers: at most %d servers", path, SP_SERVERS_MAX);
		return;
	}
	if (!(b->servers = calloc((size_t)n, sizeof(*b->servers)))) {
		ERR(L, list, "%s.servers: out of memory", path);
		return;
	}
	int primaries = 0;
	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(list, (unsigned)i);
		snprintf(sp, sizeof(sp), "%s.servers.[%d]", path, i);
		if (config_setting_type(s) == CONFIG_TYPE_STRING) {
			load_server(L, s, sp, b, config_setting_get_string(s));
		} else if (config_setting_is_group(s)) {
			load_server_group(L, s, path, i, b);
		} else {
			ERR(L, s, "%s.servers: %s", path, not_a_list);
			return;
		}
		primaries += b->nservers == (size_t)i + 1 && !b->servers[i].backup;
	}
	if (primaries == 0 && b->nservers == (size_t)n)
		ERR(L, list, "%s.servers: every server is a backup: at least one must not be", path);
}

static void load_backend_tls(struct sp_loader *L, const config_setting_t *e, const char *path,
			     struct sp_backend *b)
{
	const config_setting_t *wca, *wcert, *wkey;
	const config_setting_t *v = config_setting_get_member(e, "tls_verify");
	char *ca = cfgp_path(L, e, "ca_file", path, &wca);
	char *cert = cfgp_path(L, e, "client_certificate", path, &wcert);
	char *key = cfgp_path(L, e, "client_private_key", path, &wkey);
	struct sp_tls_error err;
	char why[96];
	int verify = 1;
	cfgp_bool(L, e, "tls_verify", path, &verify);
	if (!b->tls_wanted && (wca || wcert || wkey || v)) {
		ERR(L, wca ? wca : wcert ? wcert : wkey ? wkey : v,
		    "%s: TLS settings need an https:// url", path);
	} else if (b->tls_wanted) {
		if (!verify)
			WARN(L, v, "%s.tls_verify: false: the backend's certificate is not checked; "
				   "anyone on the path can impersonate it", path);
		if ((wcert != NULL) != (wkey != NULL))
			ERR(L, wcert ? wcert : wkey,
			    "%s: client_certificate and client_private_key go together", path);
		else if (!(b->tls_ctx = sp_tls_client_ctx(ca, verify, cert, key, b->tls_id, &err)))
			tls_error(L, e, path, &err);
		else
			warn_validity(L, e, path, "client_certificate", cert,
				      sp_tls_client_validity(b->tls_ctx, time(NULL), why, sizeof(why)),
				      why);
		note_read_file(L, ca);
		note_read_file(L, cert);
		note_read_file(L, key);
	}
	free(ca);
	free(cert);
	free(key);
}

/* health = { path = "/health"; interval_ms; timeout_ms; healthy; unhealthy; }
 * Without path the block tunes the passive checks only (unhealthy,
 * interval_ms), as nginx's max_fails and fail_timeout do. */
static void load_health(struct sp_loader *L, const config_setting_t *e, const char *path,
			struct sp_backend *b)
{
	static const char *const hkeys[] = {"path", "interval_ms", "timeout_ms", "healthy",
					    "unhealthy", NULL};
	static const char *const active_only[] = {"timeout_ms", "healthy"};
	char hp[200];
	b->health_interval_ms = 5000;
	b->health_timeout_ms = 2000;
	b->health_healthy = 2;
	b->health_unhealthy = 3;
	const config_setting_t *h = cfgp_group(L, e, "health", path,
					       "{ path = \"/health\"; interval_ms = 5000; }", hp,
					       sizeof(hp));
	if (!h)
		return;
	cfgp_check_keys(L, h, hp, hkeys);
	const config_setting_t *where;
	b->health_path = cfgp_str(L, h, "path", hp, &where);
	if (b->health_path && b->health_path[0] != '/')
		ERR(L, where, "%s.path: \"%s\": must start with '/'", hp, b->health_path);
	for (const char *c = b->health_path; c && *c; c++)
		if (*c <= ' ' || *c == 0x7f) { /* it goes into a request line as it is */
			ERR(L, where, "%s.path: must not contain spaces or control characters", hp);
			break;
		}
	cfgp_int_field(L, h, "interval_ms", hp, 100, 3600000, &b->health_interval_ms);
	cfgp_int_field(L, h, "timeout_ms", hp, 10, 600000, &b->health_timeout_ms);
	cfgp_int_field(L, h, "healthy", hp, 1, 100, &b->health_healthy);
	cfgp_int_field(L, h, "unhealthy", hp, 1, 100, &b->health_unhealthy);
	b->has_health = b->health_path != NULL;
	for (size_t i = 0; !where && i < sizeof(active_only) / sizeof(*active_only); i++) {
		const config_setting_t *s = config_setting_get_member(h, active_only[i]);
		if (s)
			WARN(L, s, "%s.%s: has no effect without %s.path (passive checks only)", hp,
			     active_only[i], hp);
	}
}

/* location_rewrite = false: the backend's Location answers go as they are.
 * On by default where there is something to map back (path_rewrite,
 * host_header), as nginx's "proxy_redirect default". Read after both. */
static void load_location_rewrite(struct sp_loader *L, const config_setting_t *e,
				  const char *path, struct sp_backend *b)
{
	const config_setting_t *v = config_setting_get_member(e, "location_rewrite");
	int on = 1;
	if (cfgp_bool(L, e, "location_rewrite", path, &on) < 0)
		return; /* the error says it all: no warning about it beside */
	b->location_map = on && (b->nrewrite || b->host_header);
	if (v && on && !b->location_map)
		WARN(L, v, "%s.location_rewrite: has no effect without path_rewrite or host_header",
		     path);
}

#define ONE_SERVER_RETRY "the retry goes to another server of the backend"

/* A setting (at s) that acts among the backend's servers, on a backend with
 * one: a warning, saying why (1), else 0. */
static int warn_one_server(struct sp_loader *L, const config_setting_t *s, const char *path,
			   const char *key, const struct sp_backend *b, const char *why)
{
	if (b->nservers != 1)
		return 0;
	WARN(L, s, "%s.%s: has no effect with one server (%s)", path, key, why);
	return 1;
}

/* retry_on_status = [502, 503, 504]; read after the servers. */
static void load_retry_status(struct sp_loader *L, const config_setting_t *e, const char *path,
			      struct sp_backend *b)
{
	const config_setting_t *st = config_setting_get_member(e, "retry_on_status");
	if (!st)
		return;
	int n = config_setting_length(st);
	if ((!config_setting_is_array(st) && !config_setting_is_list(st)) || n == 0) {
		ERR(L, st, "%s.retry_on_status: must be a list of statuses: [502, 503, 504]", path);
		return;
	}
	for (int i = 0; i < n; i++) {
		const config_setting_t *v = config_setting_get_elem(st, (unsigned)i);
		int code = config_setting_type(v) == CONFIG_TYPE_INT ? config_setting_get_int(v) : 0;
		unsigned k = (unsigned)code - 400u;
		if (k >= 200) {
			ERR(L, v, "%s.retry_on_status.[%d]: must be a status from 400 to 599", path, i);
			continue;
		}
		if (sp_backend_retries_status(b, code))
			ERR(L, v, "%s.retry_on_status.[%d]: %d is listed twice", path, i, code);
		b->retry_status[k / 64] |= (uint64_t)1 << (k % 64);
	}
	b->retry_any = 1;
	warn_one_server(L, st, path, "retry_on_status", b, ONE_SERVER_RETRY);
}

/* per_try_timeout_ms = 1000; read after the servers. */
static void load_per_try_timeout(struct sp_loader *L, const config_setting_t *e, const char *path,
				 struct sp_backend *b)
{
	const config_setting_t *t = config_setting_get_member(e, "per_try_timeout_ms");
	cfgp_int_field(L, e, "per_try_timeout_ms", path, 0, 86400000, &b->per_try_timeout_ms);
	if (!t || !b->per_try_timeout_ms)
		return;
	if (warn_one_server(L, t, path, "per_try_timeout_ms", b, ONE_SERVER_RETRY))
		return;
	if (b->per_try_timeout_ms >= b->response_timeout_ms)
		WARN(L, t, "%s.per_try_timeout_ms: %d is not below response_timeout_ms (%d): the "
			   "response timeout comes first (a route's own response_timeout_ms may be "
			   "longer)", path, b->per_try_timeout_ms, b->response_timeout_ms);
}

/* slow_start_ms = 30000; read after the servers. A backend with it picks
 * by weight (each server's growing one). */
static void load_slow_start(struct sp_loader *L, const config_setting_t *e, const char *path,
			    struct sp_backend *b)
{
	cfgp_int_field(L, e, "slow_start_ms", path, 0, 3600000, &b->slow_start_ms);
	if (!b->slow_start_ms)
		return;
	b->weighted = 1;
	warn_one_server(L, config_setting_get_member(e, "slow_start_ms"), path, "slow_start_ms", b,
			"it shares the requests among the backend's servers");
}

/* retry_budget = { percent = 20; min_per_s = 3; } (the defaults, as
 * Envoy's retry budget and Finagle's): read after retry_on_status and
 * per_try_timeout_ms. */
static void load_retry_budget(struct sp_loader *L, const config_setting_t *e, const char *path,
			      struct sp_backend *b)
{
	static const char *const keys[] = {"percent", "min_per_s", NULL};
	char gpath[192];
	b->retry_budget_percent = 20;
	b->retry_budget_min = 3;
	const config_setting_t *g = cfgp_group(L, e, "retry_budget", path,
					       "{ percent = 20; min_per_s = 3; }", gpath, sizeof(gpath));
	if (!g)
		return;
	cfgp_check_keys(L, g, gpath, keys);
	cfgp_int_field(L, g, "percent", gpath, 0, 100, &b->retry_budget_percent);
	cfgp_int_field(L, g, "min_per_s", gpath, 0, 100000, &b->retry_budget_min);
	if (!b->retry_any && !b->per_try_timeout_ms)
		WARN(L, g, "%s: has no effect without retry_on_status or per_try_timeout_ms", gpath);
}

/* queue = { max = 100; timeout_ms = 10000; } (HAProxy's queue behind a
 * server's maxconn, nginx's upstream queue, Envoy's pending requests). */
static void load_queue(struct sp_loader *L, const config_setting_t *e, const char *path,
		       struct sp_backend *b)
{
	static const char *const keys[] = {"max", "timeout_ms", NULL};
	char gpath[192];
	b->queue_timeout_ms = 10000;
	const config_setting_t *g = cfgp_group(L, e, "queue", path,
					       "{ max = 100; timeout_ms = 10000; }", gpath, sizeof(gpath));
	if (!g)
		return;
	cfgp_check_keys(L, g, gpath, keys);
	if (!config_setting_get_member(g, "max"))
		ERR(L, g, "%s.max: required (how many requests may wait, per worker)", gpath);
	cfgp_int_field(L, g, "max", gpath, 1, 100000, &b->queue_max);
	cfgp_int_field(L, g, "timeout_ms", gpath, 1, 3600000, &b->queue_timeout_ms);
	if (!b->max_conns)
		WARN(L, g, "%s: has no effect without max_conns (requests wait only for a server "
			   "at max_conns)", gpath);
}

static void load_backends(struct sp_loader *L, const config_setting_t *root)
{
	static const char *const keys[] = {"url",	      "servers", "connect_timeout_ms",
					   "response_timeout_ms", "max_idle",
					   "idle_timeout_ms",	      "ca_file",
					   "tls_verify",	      "client_certificate",
					   "client_private_key",  "health", "host_header",
					   "path_rewrite",	      "request_headers",
					   "response_headers",	      "balance",
					   "max_conns",		      "location_rewrite",
					   "retry_on_status",	      "retry_budget",
					   "per_try_timeout_ms",  "slow_start_ms",
					   "queue",		      NULL};
	const config_setting_t *bs = config_setting_get_member(root, "backends");
	if (!bs) {
		sp_diag_add(L->diag, 1, L->file, 0, "backends: at least one backend is required");
		return;
	}
	if (!config_setting_is_group(bs)) {
		ERR(L, bs, "backends: must be a group: { name = { url = \"http://...\"; }; }");
		return;
	}
	int n = config_setting_length(bs);
	if (n == 0)
		ERR(L, bs, "backends: at least one backend is required");
	L->cfg->backends = calloc((size_t)n + 1, sizeof(*L->cfg->backends));
	for (int i = 0; i < n && L->cfg->backends; i++) {
		const config_setting_t *e = config_setting_get_elem(bs, (unsigned)i);
		struct sp_backend *b = &L->cfg->backends[L->cfg->nbackends++];
		char path[160];
		b->name = strdup(config_setting_name(e));
		b->line = cfgp_line(e);
		b->connect_timeout_ms = 2000;
		b->response_timeout_ms = 30000;
		b->max_idle = 64;
		b->idle_timeout_ms = 60000;
		snprintf(path, sizeof(path), "backends.%s", b->name);
		if (b->name && strlen(b->name) > SP_NAME_CHARS)
			ERR(L, e, "%s: a backend's name must be at most %d characters", path,
			    SP_NAME_CHARS);
		/* libconfig also takes '*' in a name (mod*ern, *): not a name the
		 * docs, the API paths and the metrics' labels expect */
		else if (b->name && (!isalpha((unsigned char)b->name[0]) ||
				     b->name[strspn(b->name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
							     "0123456789-_")] != '\0'))
			ERR(L, e, "%s: a backend's name is a letter, then letters, digits, '-' and '_'",
			    path);
		if (!config_setting_is_group(e)) {
			ERR(L, e, "%s: must be a group: { url = \"http://host:port\"; }", path);
			continue;
		}
		cfgp_check_keys(L, e, path, keys);
		cfgp_int_field(L, e, "connect_timeout_ms", path, 1, 3600000, &b->connect_timeout_ms);
		cfgp_int_field(L, e, "response_timeout_ms", path, 1, 86400000, &b->response_timeout_ms);
		cfgp_int_field(L, e, "max_idle", path, 0, 100000, &b->max_idle);
		cfgp_int_field(L, e, "max_conns", path, 0, 100000, &b->max_conns);
		cfgp_int_field(L, e, "idle_timeout_ms", path, 1, 86400000, &b->idle_timeout_ms);
		load_host_header(L, e, path, b);
		load_balance(L, e, path, b);
		sp_load_path_rewrite(L, e, path, &b->rewrite, &b->nrewrite);
		sp_load_hdr_rules(L, e, path, 0, &b->req_headers);
		sp_load_hdr_rules(L, e, path, 1, &b->resp_headers);
		L->cfg->request_header_rules |= sp_hdr_rules_any(&b->req_headers);
		load_location_rewrite(L, e, path, b);
		L->cfg->keep_client_host |= L->cfg->host_headers || b->location_map ||
					   b->req_headers.host_vars || b->resp_headers.host_vars;
		load_servers(L, e, path, b);
		load_retry_status(L, e, path, b);
		load_per_try_timeout(L, e, path, b);
		load_slow_start(L, e, path, b);
		load_retry_budget(L, e, path, b);
		load_queue(L, e, path, b);
		load_backend_tls(L, e, path, b);
		load_health(L, e, path, b);
	}
}

int sp_config_lists_url(const struct sp_config *c, const char *url)
{
	for (size_t i = 0; i < c->nbackends; i++)
		for (size_t k = 0; k < c->backends[i].nservers; k++)
			if (strcmp(c->backends[i].servers[k].url, url) == 0)
				return 1;
	return 0;
}

int sp_backend_index(const struct sp_config *c, const char *name)
{
	for (size_t i = 0; i < c->nbackends; i++)
		if (strcmp(c->backends[i].name, name) == 0)
			return (int)i;
	return -1;
}

const struct sp_route *sp_config_route(const struct sp_config *c, const char *name)
{
	for (size_t i = 0; i < c->nroutes; i++)
		if (strcmp(c->routes[i].name, name) == 0)
			return &c->routes[i];
	return NULL;
}

/* A backend reference by name: returns its index or -1 (reported). */
int cfgp_backend_ref(struct sp_loader *L, const config_setting_t *g, const char *key,
		       const char *path, int required)
{
	const config_setting_t *where;
	char *name = cfgp_str(L, g, key, path, &where);
	int idx = -1;
	if (!name) {
		if (!where && required)
			ERR(L, g, "%s%s%s: required", path, *path ? "." : "", key);
		return -1;
	}
	idx = sp_backend_index(L->cfg, name);
	if (idx < 0)
		ERR(L, where, "%s%s%s: unknown backend \"%s\"", path, *path ? "." : "", key, name);
	free(name);
	return idx;
}

static void load_limits(struct sp_loader *L, const config_setting_t *root)
{
	static const char *const tkeys[] = {"client_header_ms", "client_keepalive_ms",
					    "client_body_ms", "client_send_ms", "tunnel_idle_ms", NULL};
	static const char *const lkeys[] = {"max_request_line", "max_header_bytes", "max_headers",
					    "max_body_bytes", "reject_escaped_slashes", NULL};
	struct sp_limits *lim = &L->cfg->limits;
	const config_setting_t *t = config_setting_get_member(root, "timeouts");
	const config_setting_t *l = config_setting_get_member(root, "limits");

	*lim = (struct sp_limits){.header_timeout_ms = 10000,
				  .keepalive_timeout_ms = 60000,
				  .body_timeout_ms = 30000,
				  .send_timeout_ms = 60000,
				  .tunnel_idle_ms = 3600000,
				  .drain_timeout_ms = 30000,
				  .max_connections = 10000,
				  .max_request_line = 8192,
				  .max_header_bytes = 32768,
				  .max_headers = 100,
				  .max_body_bytes = 0};
	cfgp_int_field(L, root, "drain_timeout_ms", "", 0, 3600000, &lim->drain_timeout_ms);
	cfgp_int_field(L, root, "max_connections", "", 1, 10000000, &lim->max_connections);
	const config_setting_t *mc = config_setting_get_member(root, "max_connections");
	if (mc && lim->max_connections < L->cfg->workers)
		WARN(L, mc,
		     "max_connections: %d is less than workers (%d): each worker takes one "
		     "connection at least, %d at once in all",
		     lim->max_connections, L->cfg->workers, L->cfg->workers);
	if (t && !config_setting_is_group(t)) {
		ERR(L, t, "timeouts: must be a group");
	} else if (t) {
		cfgp_check_keys(L, t, "timeouts", tkeys);
		cfgp_int_field(L, t, "client_header_ms", "timeouts", 1, 3600000, &lim->header_timeout_ms);
		cfgp_int_field(L, t, "client_keepalive_ms", "timeouts", 1, 86400000,
			      &lim->keepalive_timeout_ms);
		cfgp_int_field(L, t, "client_body_ms", "timeouts", 1, 86400000, &lim->body_timeout_ms);
		cfgp_int_field(L, t, "client_send_ms", "timeouts", 1, 86400000, &lim->send_timeout_ms);
		cfgp_int_field(L, t, "tunnel_idle_ms", "timeouts", 0, 86400000, &lim->tunnel_idle_ms);
	}
	if (l && !config_setting_is_group(l)) {
		ERR(L, l, "limits: must be a group");
	} else if (l) {
		cfgp_check_keys(L, l, "limits", lkeys);
		cfgp_int_field(L, l, "max_request_line", "limits", 64, 1048576, &lim->max_request_line);
		cfgp_int_field(L, l, "max_header_bytes", "limits", 1024, 1048576, &lim->max_header_bytes);
		cfgp_int_field(L, l, "max_headers", "limits", 8, 10000, &lim->max_headers);
		cfgp_int(L, l, "max_body_bytes", "limits", 0, (long long)1 << 50, &lim->max_body_bytes);
		cfgp_bool(L, l, "reject_escaped_slashes", "limits", &lim->reject_escaped_slashes);
	}
}

static void load_shadow_defaults(struct sp_loader *L, const config_setting_t *root)
{
	static const char *const keys[] = {"max_in_flight", "max_body_bytes", "timeout_ms",
					   "diff_log", "summary_interval_ms", NULL};
	struct sp_shadow_defaults *d = &L->cfg->shadow;
	const config_setting_t *s = config_setting_get_member(root, "shadow_defaults");
	*d = (struct sp_shadow_defaults){.max_in_flight = 256, .max_body_bytes = 1048576,
					 .timeout_ms = 5000, .summary_interval_ms = 60000};
	if (!s)
		goto check;
	if (!config_setting_is_group(s)) {
		ERR(L, s, "shadow_defaults: must be a group");
		return;
	}
	cfgp_check_keys(L, s, "shadow_defaults", keys);
	cfgp_int_field(L, s, "max_in_flight", "shadow_defaults", 1, 1000000, &d->max_in_flight);
	const config_setting_t *mif = config_setting_get_member(s, "max_in_flight");
	if (mif && d->max_in_flight < L->cfg->workers)
		WARN(L, mif,
		     "shadow_defaults.max_in_flight: %d is less than workers (%d): the budget is "
		     "split between them, and %d of them never mirror",
		     d->max_in_flight, L->cfg->workers, L->cfg->workers - d->max_in_flight);
	cfgp_int(L, s, "max_body_bytes", "shadow_defaults", 0, (long long)1 << 30, &d->max_body_bytes);
	cfgp_int_field(L, s, "timeout_ms", "shadow_defaults", 1, 3600000, &d->timeout_ms);
	cfgp_int_field(L, s, "summary_interval_ms", "shadow_defaults", 1000, 86400000,
		       &d->summary_interval_ms);
	const config_setting_t *where;
	d->diff_log = out_path(L, s, "diff_log", "shadow_defaults", &where, " or \"-\"");
	d->diff_log_at = where_of(L, where);
check:
	for (size_t i = 0; i < L->cfg->nroutes; i++)
		if (L->cfg->routes[i].has_shadow && !d->diff_log) {
			sp_diag_add(L->diag, 0, L->cfg->routes[i].file, L->cfg->routes[i].line,
				    "routes.[%zu].shadow: no shadow_defaults.diff_log: differences "
				    "are counted but not recorded", i);
			break;
		}
}

int sp_addr_is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6)
		return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
	return 0;
}

/* The longest admin token: a longer one was cut to its first 511 bytes,
 * which then were the token. */
#define SP_TOKEN_MAX 1024

/* Reads the bearer token: the file's first line, without surrounding blanks
 * (the whole line read first: blanks before a token read by the buffer
 * cut it shorter, silently). */
static char *read_token(const char *path, const char **why)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		*why = strerror(errno);
		return NULL;
	}
	char *line = NULL, *token = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, f);
	fclose(f);
	char *s = line ? line : "", *e = s + (n > 0 ? strcspn(s, "\r\n") : 0);
	while (s < e && (*s == ' ' || *s == '\t'))
		s++;
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	if (e - s < 16)
		*why = "the token must be at least 16 characters";
	else if (e - s > SP_TOKEN_MAX)
		*why = "the token must be at most " SP_STR(SP_TOKEN_MAX) " characters";
	else if (!(token = strndup(s, (size_t)(e - s))))
		*why = strerror(ENOMEM);
	free(line);
	return token;
}

static void load_admin(struct sp_loader *L, const config_setting_t *root)
{
	static const char *const keys[] = {"address", "token_file", "state_file", NULL};
	const config_setting_t *s = config_setting_get_member(root, "admin");
	struct sp_admin_cfg *a = &L->cfg->admin;
	const config_setting_t *where, *twhere;
	const char *why;
	if (!s)
		return;
	if (!config_setting_is_group(s)) {
		ERR(L, s, "admin: must be a group: { address = \"127.0.0.1:9901\"; }");
		return;
	}
	cfgp_check_keys(L, s, "admin", keys);
	L->cfg->has_admin = 1;
	a->file = cfgp_src_file(L, s);
	a->line = cfgp_line(s);
	a->address = cfgp_str(L, s, "address", "admin", &where);
	if (!a->address)
		a->address = strdup("127.0.0.1:9901");
	if (a->address && sp_parse_hostport(a->address, 1, &a->addr, &a->addrlen, NULL, &why) < 0) {
		ERR(L, where ? where : s, "admin.address: \"%s\": %s", a->address, why);
		return;
	}
	char *token_file = cfgp_path(L, s, "token_file", "admin", &twhere);
	if (token_file && !(a->token = read_token(token_file, &why)))
		ERR(L, twhere, "admin.token_file: \"%s\": %s", token_file, why);
	else if (!twhere && !sp_addr_is_loopback(&a->addr))
		ERR(L, where ? where : s,
		    "admin.address: \"%s\" is not a loopback address: set admin.token_file", a->address);
	note_read_file(L, token_file);
	free(token_file);
	a->state_file = out_path(L, s, "state_file", "admin", &where,
				 " (remove the setting to keep runtime changes in memory only)");
	if (!where)
		WARN(L, s, "admin: no state_file: runtime changes (PATCH, guard trips) are lost at "
			   "restart");
}

static void load_globals(struct sp_loader *L, const config_setting_t *root)
{
	const config_setting_t *where;
	long long workers = 0;
	cfgp_int(L, root, "workers", "", 0, 1024, &workers);
	if (workers == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		workers = n > 0 ? n : 1;
	}
	L->cfg->workers = (int)workers;
	L->cfg->idle_spin_us = SP_IDLE_SPIN_US;
	cfgp_int_field(L, root, "idle_spin_us", "", 0, 1000, &L->cfg->idle_spin_us);
	L->cfg->log_level = SP_LOG_INFO;
	char *lvl = cfgp_str(L, root, "log_level", "", &where);
	if (lvl) {
		int v = sp_log_level_parse(lvl);
		if (v < 0)
			ERR(L, where, "log_level: \"%s\": must be debug, info, warn or error", lvl);
		else
			L->cfg->log_level = v;
		free(lvl);
	}
	L->cfg->access_log = out_path(L, root, "access_log", "", &where,
				      " or \"-\" (remove the setting to turn it off)");
	L->cfg->access_log_at = where_of(L, where);
	cfgp_bool(L, root, "log_query", "", &L->cfg->log_query);
}

const config_setting_t *cfgp_strings(struct sp_loader *L, const config_setting_t *g,
				     const char *key, const char *shown, const char *example,
				     int one_ok)
{
	const config_setting_t *t = config_setting_get_member(g, key);
	if (!t)
		return NULL;
	int one = one_ok && config_setting_type(t) == CONFIG_TYPE_STRING;
	int ok = one || config_setting_type(t) == CONFIG_TYPE_ARRAY ||
		 config_setting_type(t) == CONFIG_TYPE_LIST;
	for (int i = 0; ok && !one && i < config_setting_length(t); i++)
		ok = config_setting_type(config_setting_get_elem(t, (unsigned)i)) ==
		     CONFIG_TYPE_STRING;
	if (!ok) {
		ERR(L, t, "%s: must be %s%s", shown, one_ok ? "" : "a list of ", example);
		return NULL;
	}
	/* what is reported of them may reach the API's JSON: text only */
	for (int i = 0; i < (one ? 1 : config_setting_length(t)); i++) {
		const config_setting_t *e = one ? t : config_setting_get_elem(t, (unsigned)i);
		const char *v = config_setting_get_string(e);
		size_t bad;
		if (cfgp_text_chars(v, 1, &bad) < 0) {
			char at[192];
			snprintf(at, sizeof(at), one ? "%s" : "%s.[%d]", shown, i);
			ERR(L, e, "%s: must be UTF-8 text (byte 0x%02x at offset %zu is not): save the "
				  "file as UTF-8", at, (unsigned char)v[bad], bad);
			ok = 0;
		}
	}
	return ok ? t : NULL;
}

void cfgp_cidr_list(struct sp_loader *L, const config_setting_t *g, const char *key,
		    const char *path, struct sp_cidr **out, size_t *nout)
{
	char shown[160];
	snprintf(shown, sizeof(shown), "%s%s%s", path, *path ? "." : "", key);
	const config_setting_t *t = cfgp_strings(
		L, g, key, shown, "addresses or blocks: [\"10.0.0.0/8\", \"192.0.2.7\"]", 0);
	int n = t ? config_setting_length(t) : 0;
	if (!t)
		return;
	if (n == 0 || n > SP_TRUSTED_MAX) {
		ERR(L, t, "%s: %s", shown,
		    n ? "at most 256 entries (write blocks: 10.0.0.0/8)"
		      : "at least one entry (remove the setting for none)");
		return;
	}
	if (!(*out = calloc((size_t)n, sizeof(**out)))) {
		ERR(L, t, "%s: out of memory", shown);
		return;
	}
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(t, (unsigned)i);
		const char *v = config_setting_get_string(e), *why;
		char buf[160];
		if (sp_cidr_parse(v, &(*out)[*nout], buf, sizeof(buf), &why) < 0)
			ERR(L, e, "%s.[%d]: \"%s\": %s", shown, i, v, why);
		else
			(*nout)++;
	}
}

/* trusted_headers = ["X-Forwarded-Proto", "X-Forwarded-Host"]; */
static void load_trusted_headers(struct sp_loader *L, const config_setting_t *root)
{
	const config_setting_t *t = cfgp_strings(
		L, root, "trusted_headers", "trusted_headers",
		"header names: [\"X-Forwarded-Proto\", \"X-Forwarded-Host\"]", 0);
	for (int i = 0; t && i < config_setting_length(t); i++) {
		const config_setting_t *e = config_setting_get_elem(t, (unsigned)i);
		const char *v = config_setting_get_string(e);
		if (strcasecmp(v, "X-Forwarded-Proto") == 0)
			L->cfg->trusted_headers |= SP_FWD_PROTO;
		else if (strcasecmp(v, "X-Forwarded-Host") == 0)
			L->cfg->trusted_headers |= SP_FWD_HOST;
		else
			ERR(L, e, "trusted_headers.[%d]: \"%s\": must be X-Forwarded-Proto or "
				  "X-Forwarded-Host (X-Forwarded-For is always read from trusted peers)",
			    i, v);
	}
	if (t && !L->cfg->ntrusted)
		WARN(L, t, "trusted_headers: has no effect without trusted_proxies");
}

/* A PROXY header is believed from trusted peers only, when there are any. */
static void warn_proxy_protocol(struct sp_loader *L)
{
	for (size_t i = 0; i < L->cfg->nlisten && !L->cfg->ntrusted; i++)
		if (L->cfg->listen[i].proxy_protocol)
			sp_diag_add(L->diag, 0, L->cfg->listen[i].file, L->cfg->listen[i].line,
				    "listen.[%zu].proxy_protocol: any peer that reaches %s can give "
				    "itself any client address; list the load balancers in "
				    "trusted_proxies", i, L->cfg->listen[i].address);
}

/* The text of line n (from 1) of text, without its end. */
static void nth_line(const char *text, int n, char *out, size_t len)
{
	for (int i = 1; text && i < n; i++)
		text = (text = strchr(text, '\n')) ? text + 1 : NULL;
	snprintf(out, len, "%.*s", text ? (int)strcspn(text, "\n") : 0, text ? text : "");
}

/* libconfig 1.5 says "cannot open include file" and no more: the name is in
 * the @include on the line it reports, of text (the main file) or of the
 * included file it names. */
static void include_error(const struct cfgp_includes *inc, const char *where, const char *text,
			  const char *ef, int line, struct sp_diag *diag)
{
	char shown[2 * PATH_MAX], path[PATH_MAX * 2], buf[PATH_MAX + 64], target[PATH_MAX];
	nth_line(text, line, buf, sizeof(buf));
	const char *q = strchr(buf, '"');
	const char *e = q ? strchr(q + 1, '"') : NULL;
	if (!e) {
		sp_diag_add(diag, 1, where, line, "cannot open include file (looked in %s)", inc->shown);
		return;
	}
	snprintf(target, sizeof(target), "%.*s", (int)(e - q - 1), q + 1);
	if (ef && target[0] == '/') {
		sp_diag_add(diag, 1, where, line, "cannot open include file \"%s\": libconfig 1.5 puts "
			    "the main file's directory in front of every include path, an absolute one "
			    "in an included file too: write it relative to %s", target, inc->shown);
		return;
	}
	snprintf(path, sizeof(path), "%s/%s", inc->real, target);
	int err = access(path, R_OK) < 0 ? errno : 0;
	sp_diag_add(diag, 1, where, line, "cannot open include file \"%s\"%s%s",
		    include_shown(inc, target, shown, sizeof(shown)), err ? ": " : "",
		    err ? strerror(err) : "");
}

/* libconfig's parse error, with what it leaves out: the include file it
 * could not open, a byte order mark, what to do about an array of mixed
 * types. text is the main file's. */
/* Whether line n (from 1) of text has a '{' while a '[' is open: a group
 * written in an array, which libconfig reports as a bare "syntax error". */
static int group_in_array(const char *text, int n)
{
	int depth = 0, quoted = 0, at = 1, brace = 0;
	for (const char *p = text; p && *p && at <= n; p++) {
		if (quoted) {
			if (*p == '\\' && p[1])
				p++;
			else if (*p == '"')
				quoted = 0;
		} else if (*p == '"') {
			quoted = 1;
		} else if (*p == '[' || *p == ']') {
			depth += *p == '[' ? 1 : -1;
		} else if (*p == '{' && at == n && depth > 0) {
			brace = 1;
		}
		at += *p == '\n';
	}
	return brace;
}

static void syntax_error(const config_t *lc, const struct cfgp_includes *inc, const char *name,
			 const char *text, struct sp_diag *diag)
{
	const char *ef = config_error_file(lc), *why = config_error_text(lc);
	int line = config_error_line(lc);
	char shown[2 * PATH_MAX], path[PATH_MAX * 2];
	char *other = NULL;
	if (ef) { /* an included file's text */
		struct sp_diag ignored;
		sp_diag_init(&ignored);
		snprintf(path, sizeof(path), "%s/%s", inc->real, ef);
		text = other = sp_config_read(path, NULL, &ignored);
		sp_diag_deinit(&ignored);
	}
	const char *where = ef ? include_shown(inc, ef, shown, sizeof(shown)) : name;
	if (!why)
		why = "syntax error";
	if (strcmp(why, "cannot open include file") == 0)
		include_error(inc, where, text, ef, line, diag);
	else if (text && strncmp(text, "\xef\xbb\xbf", 3) == 0)
		sp_diag_add(diag, 1, where, 1, "the file starts with a UTF-8 byte order mark: save it "
			    "without one");
	else if (strcmp(why, "mismatched element type in array") == 0) {
		/* the setting, when its line starts with it ("methods = [...]") */
		char buf[256];
		nth_line(text, line, buf, sizeof(buf));
		const char *k = buf + strspn(buf, " \t");
		size_t kl = isalpha((unsigned char)*k) ? strspn(k, "abcdefghijklmnopqrstuvwxyz"
								   "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
						       : 0;
		const char *eq = k + kl + strspn(k + kl, " \t");
		int keyed = kl && (*eq == '=' || *eq == ':') && eq[1 + strspn(eq + 1, " \t")] == '[';
		sp_diag_add(diag, 1, where, line, "%.*s%ssyntax error: %s: the elements of an array all "
			    "have one type: all strings, or all numbers written alike (each with a "
			    "decimal point, e.g. steps = [1.0, 2.5, 5.0]; an integer past 2147483647 "
			    "among smaller ones is another type)",
			    keyed ? (int)kl : 0, k, keyed ? ": " : "", why);
	}
	else if (strcmp(why, "syntax error") == 0 && group_in_array(text, line))
		sp_diag_add(diag, 1, where, line, "syntax error: a group in [ ]: a list of groups is "
			    "written in parentheses, ( { ... }, { ... } ); [ ] holds only strings, "
			    "numbers or booleans");
	else
		sp_diag_add(diag, 1, where, line, "syntax error: %s", why);
	free(other);
}

/* The files libconfig read for @include (by the names it opened), each
 * once, up to max. The main file's settings have none (read from text). */
static void included_files(const config_setting_t *s, const char **files, size_t *n, size_t max)
{
	const char *f = config_setting_source_file(s);
	size_t i = 0;
	while (f && i < *n && strcmp(files[i], f) != 0)
		i++;
	if (f && i == *n && *n < max)
		files[(*n)++] = f;
	if (config_setting_is_aggregate(s))
		for (int k = 0; k < config_setting_length(s); k++)
			included_files(config_setting_get_elem(s, (unsigned)k), files, n, max);
}

/* libconfig reads an included file itself, where sp_config_promote_ints
 * cannot add the L a literal past 32 bits needs: such a literal read
 * wrapped (4294967297 as 1), silently. Each line holding one is an error. */
static void check_included_ints(struct sp_loader *L, const config_setting_t *root)
{
	const char *files[64];
	size_t n = 0;
	included_files(root, files, &n, sizeof(files) / sizeof(files[0]));
	for (size_t i = 0; i < n; i++) {
		char path[PATH_MAX * 2]; /* as libconfig opened it: below its include directory */
		snprintf(path, sizeof(path), "%s%s%s", files[i][0] == '/' ? "" : L->inc->real,
			 files[i][0] == '/' ? "" : "/", files[i]);
		char *text = sp_config_read(path, NULL, L->diag);
		char *wide = text ? sp_config_promote_ints(text) : NULL;
		char shown[PATH_MAX];
		const char *a = text, *b = wide;
		for (int line = 1; a && b && *a; line++) {
			size_t la = strcspn(a, "\n"), lb = strcspn(b, "\n");
			if (la != lb)
				sp_diag_add(L->diag, 1, include_shown(L->inc, files[i], shown, sizeof(shown)),
					    line, "an integer past 32 bits in an included file needs the L "
					    "suffix (libconfig reads 4294967297 there as 1): write 4294967297L");
			a += la + (a[la] == '\n');
			b += lb + (b[lb] == '\n');
		}
		free(wide);
		free(text);
	}
}

static struct sp_config *load(config_t *lc, int rc, const char *name, const char *text,
			      const struct cfgp_includes *inc, struct sp_diag *diag)
{
	static const char *const keys[] = {"listen",  "workers",        "log_level",
					   "access_log", "backends",    "default_backend",
					   "routes",  "timeouts",       "limits",
					   "drain_timeout_ms", "shadow_defaults", "admin",
					   "pid_file", "max_connections", "user", "log_query",
					   "idle_spin_us", "trusted_proxies", "trusted_headers", NULL};
	struct sp_config *cfg = NULL;
	if (rc != CONFIG_TRUE) {
		syntax_error(lc, inc, name, text, diag);
		return NULL;
	}
	cfg = calloc(1, sizeof(*cfg));
	if (!cfg) {
		sp_diag_add(diag, 1, name, 0, "out of memory");
		return NULL;
	}
	atomic_init(&cfg->refs, 1);
	cfg->file = strdup(name);
	struct sp_loader L = {diag, name, cfg, diag->errors, inc, ""};
	const config_setting_t *root = config_root_setting(lc);
	cfgp_check_keys(&L, root, "", keys);
	check_included_ints(&L, root);
	load_globals(&L, root);
	load_listen(&L, root);
	/* trusted_proxies = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]; */
	cfgp_cidr_list(&L, root, "trusted_proxies", "", &L.cfg->trusted, &L.cfg->ntrusted);
	load_trusted_headers(&L, root);
	warn_proxy_protocol(&L);
	load_backends(&L, root);
	load_limits(&L, root);
	cfg->default_backend = cfg->nbackends ? cfgp_backend_ref(&L, root, "default_backend", "", 1) : -1;
	sp_load_routes(&L, root);
	load_shadow_defaults(&L, root);
	load_admin(&L, root);
	check_listen_overlaps(&L);
	const config_setting_t *pw;
	cfg->pid_file = out_path(&L, root, "pid_file", "", &pw, " (remove the setting to write none)");
	cfg->pid_file_at = where_of(&L, pw);
	cfg->user = cfgp_str(&L, root, "user", "", &pw);
	if (pw && cfg->user && !getpwnam(cfg->user))
		ERR(&L, pw, "user: \"%s\": no such user", cfg->user);
	if (diag->errors > L.errors_before)
		sp_config_unref(&cfg);
	else /* NULL when out of memory: every route is tried, as without it */
		cfg->route_index = sp_route_index_build(cfg->routes, cfg->nroutes);
	return cfg;
}

char *sp_config_read(const char *path, size_t *len, struct sp_diag *diag)
{
	struct sp_buf b;
	char chunk[65536];
	size_t n;
	FILE *f = fopen(path, "r");
	if (!f) {
		sp_diag_add(diag, 1, path, 0, "cannot read: %s", strerror(errno));
		return NULL;
	}
	sp_buf_init(&b);
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		if (b.len + n > SP_FILE_MAX || sp_buf_add(&b, chunk, n) < 0)
			break;
	int too_big = b.len + n > SP_FILE_MAX;
	int failed = ferror(f) || n > 0 || sp_buf_add(&b, "", 1) < 0;
	int err = errno;
	fclose(f);
	if (too_big) { /* not a file strangler wrote or a person could read */
		sp_diag_add(diag, 1, path, 0, "larger than %d MiB: not read", SP_FILE_MAX >> 20);
		sp_buf_deinit(&b);
		return NULL;
	}
	if (failed) {
		sp_diag_add(diag, 1, path, 0, "cannot read: %s", strerror(err ? err : ENOMEM));
		sp_buf_deinit(&b);
		return NULL;
	}
	if (len)
		*len = b.len - 1;
	return b.data;
}

/* A NUL byte in a file's text, which text functions would stop at (the
 * rest, unread, passing for absent): said at its line, 1; else 0. */
static int nul_refused(const char *text, size_t len, const char *shown, struct sp_diag *diag)
{
	const char *nul = memchr(text, '\0', len);
	if (!nul)
		return 0;
	int line = 1;
	for (const char *p = text; p < nul; p++)
		line += *p == '\n';
	sp_diag_add(diag, 1, shown, line, "a NUL byte (byte %zu of the file): not a text file",
		    (size_t)(nul - text));
	return 1;
}

struct sp_config *sp_config_load(const char *path, struct sp_diag *diag)
{
	size_t len = 0;
	char *text = sp_config_read(path, &len, diag);
	struct sp_config *cfg = text && !nul_refused(text, len, path, diag)
					? sp_config_load_string(text, path, diag)
					: NULL;
	free(text);
	return cfg;
}

static int ident_char(int c)
{
	return isalnum(c) || c == '_' || c == '*' || c == '.';
}

char *sp_config_promote_ints(const char *text)
{
	struct sp_buf o;
	const char *p = text;
	sp_buf_init(&o);
	while (*p) {
		const char *q = p;
		if (*p == '"') { /* a string, escapes included */
			for (q++; *q && *q != '"'; q++)
				if (*q == '\\' && q[1])
					q++;
			q += *q == '"';
		} else if (*p == '#' || (p[0] == '/' && p[1] == '/')) {
			q += strcspn(q, "\n");
		} else if (p[0] == '/' && p[1] == '*') {
			const char *e = strstr(p + 2, "*/");
			q = e ? e + 2 : p + strlen(p);
		} else if (isdigit((unsigned char)*p) &&
			   (p == text || (!ident_char((unsigned char)p[-1]) &&
					  !((p[-1] == '-' || p[-1] == '+') && p - 1 > text &&
					    (ident_char((unsigned char)p[-2]) || p[-2] == '-'))))) {
			int hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
			q = hex ? p + 2 : p;
			while (hex ? isxdigit((unsigned char)*q) : isdigit((unsigned char)*q))
				q++;
			size_t ndig = (size_t)(q - p) - (hex ? 2 : 0);
			int wide = 0;
			if (*q == 'L' || *q == '.' || *q == 'e' || *q == 'E' || ident_char((unsigned char)*q)) {
				/* suffixed, a float, or not a number on its own */
			} else if (ndig > (hex ? 8u : 10u)) {
				wide = 1;
			} else {
				unsigned long long v = strtoull(p, NULL, hex ? 16 : 10);
				wide = v > 2147483647ULL + (p > text && p[-1] == '-');
			}
			if (sp_buf_add(&o, p, (size_t)(q - p)) < 0 || (wide && sp_buf_addc(&o, 'L') < 0))
				goto fail;
			p = q;
			continue;
		} else {
			q++;
		}
		if (sp_buf_add(&o, p, (size_t)(q - p)) < 0)
			goto fail;
		p = q;
	}
	if (sp_buf_addc(&o, '\0') < 0)
		goto fail;
	return o.data;
fail:
	sp_buf_deinit(&o);
	return NULL;
}

/* Include paths resolve against the main file's directory, not the
 * current one (a reload or `-t` from elsewhere read other files or none). */
static void includes_init(struct cfgp_includes *inc, const char *name)
{
	char copy[PATH_MAX];
	snprintf(copy, sizeof(copy), "%s", name);
	snprintf(inc->shown, sizeof(inc->shown), "%s", dirname(copy));
	inc->up[0] = '\0';
	if (!realpath(inc->shown, inc->real)) { /* the checks then name what is missing */
		snprintf(inc->real, sizeof(inc->real), "%s", inc->shown);
		return;
	}
	for (const char *p = inc->real + 1; *inc->real == '/' && *p; p++)
		if (p[-1] == '/')
			strncat(inc->up, "../", sizeof(inc->up) - strlen(inc->up) - 1);
}

/* A copy of text whose absolute @include paths are made relative to
 * inc->real (libconfig 1.5 would put the directory in front of them too).
 * Lines stay where they were. NULL: no memory. */
/* The quoted name of the line of n bytes at p when it is an @include: its
 * first byte (past the quote), its length in *len; else NULL. */
static const char *include_name(const char *p, size_t n, size_t *len)
{
	const char *q = p + strspn(p, " \t"), *e = NULL;
	if (strncmp(q, "@include", 8) != 0 || (q[8] != ' ' && q[8] != '\t'))
		return NULL;
	q += 8 + strspn(q + 8, " \t");
	if (q < p + n && *q == '"')
		e = memchr(q + 1, '"', (size_t)(p + n - q - 1));
	if (!e)
		return NULL;
	*len = (size_t)(e - q - 1);
	return q + 1;
}

static char *absolute_includes(const char *text, const struct cfgp_includes *inc)
{
	struct sp_buf o;
	int ok = 1;
	sp_buf_init(&o);
	for (const char *p = text; *p && ok;) {
		size_t n = strcspn(p, "\n"), len;
		const char *name = include_name(p, n, &len);
		if (name && name[0] == '/' && inc->up[0]) {
			ok = sp_buf_add(&o, p, (size_t)(name - p)) == 0 && sp_buf_adds(&o, inc->up) == 0;
			n -= (size_t)(name + 1 - p);
			p = name + 1;
		}
		n += p[n] == '\n';
		ok = ok && sp_buf_add(&o, p, n) == 0;
		p += n;
	}
	if (ok && sp_buf_add(&o, "", 0) == 0) /* terminated, even when empty */
		return o.data;
	sp_buf_deinit(&o);
	return NULL;
}

/* libconfig 1.5 reads an @include's file itself: a directory made its
 * scanner exit the process ("input in flex scanner failed", a reload's
 * too), a FIFO blocked it (a reload held the main thread). Each target, in
 * the included files too, must be a regular file; one that is missing is
 * libconfig's error (include_error). The number of errors. */
static int check_include_targets(const char *text, const char *shown,
				 const struct cfgp_includes *inc, int depth, struct sp_diag *diag)
{
	int bad = 0, line = 1, in_comment = 0;
	for (const char *p = text; *p; line++) {
		size_t n = strcspn(p, "\n"), len;
		int commented = in_comment; /* an @include inside a block comment is none */
		/* where this line leaves a block comment (strings aside: an
		 * @include line holds none before its name) */
		for (const char *c = p; c + 1 < p + n; c++)
			if (!in_comment && c[0] == '/' && c[1] == '*')
				in_comment = 1, c++;
			else if (in_comment && c[0] == '*' && c[1] == '/')
				in_comment = 0, c++;
		const char *name = commented ? NULL : include_name(p, n, &len);
		struct stat st;
		if (name) {
			char target[PATH_MAX], path[PATH_MAX * 2], as[PATH_MAX * 2];
			snprintf(target, sizeof(target), "%.*s", (int)len, name);
			snprintf(path, sizeof(path), "%s%s%s", target[0] == '/' ? "" : inc->real,
				 target[0] == '/' ? "" : "/", target);
			int found = stat(path, &st) == 0;
			/* a device reads as a file (/dev/null: an empty include) */
			if (found && (S_ISDIR(st.st_mode) || S_ISFIFO(st.st_mode) ||
				      S_ISSOCK(st.st_mode))) {
				sp_diag_add(diag, 1, shown, line, "@include \"%s\": not a regular file%s",
					    target,
					    S_ISDIR(st.st_mode) ? " (a directory: include each file by name)"
					    : S_ISFIFO(st.st_mode) ? " (a FIFO)" : "");
				bad++;
			} else if (found && S_ISREG(st.st_mode) && depth < 10) {
				/* what cannot be read is libconfig's error to give */
				struct sp_diag quiet;
				size_t size = 0;
				sp_diag_init(&quiet);
				char *inner = sp_config_read(path, &size, &quiet);
				const char *in_shown = include_shown(inc, target, as, sizeof(as));
				if (inner && nul_refused(inner, size, in_shown, diag)) {
					bad++;
				} else if (inner) {
					bad += check_include_targets(inner, in_shown, inc, depth + 1, diag);
				}
				free(inner);
				sp_diag_deinit(&quiet);
			}
		}
		p += n + (p[n] == '\n');
	}
	return bad;
}

struct sp_config *sp_config_load_string(const char *text, const char *name, struct sp_diag *diag)
{
	config_t lc;
	struct cfgp_includes inc;
	struct sp_config *cfg = NULL;
	includes_init(&inc, name);
	char *wide = sp_config_promote_ints(text);
	char *ready = wide ? absolute_includes(wide, &inc) : NULL;
	if (!ready) {
		sp_diag_add(diag, 1, name, 0, "out of memory");
		free(wide);
		return NULL;
	}
	if (check_include_targets(text, name, &inc, 0, diag) > 0) {
		free(ready);
		free(wide);
		return NULL;
	}
	config_init(&lc);
	config_set_include_dir(&lc, inc.real);
	int rc = config_read_string(&lc, ready);
	cfg = load(&lc, rc, name, ready, &inc, diag);
	config_destroy(&lc);
	free(ready);
	free(wide);
	return cfg;
}

/* 0 when this process could open path as the start does (O_WRONLY with
 * O_CREAT: the file, or its directory when it does not exist yet), or -1
 * with errno. Creates nothing. */
static int can_open_for_writing(const char *path)
{
	struct stat st;
	if (stat(path, &st) == 0) {
		if (S_ISDIR(st.st_mode)) {
			errno = EISDIR;
			return -1;
		}
		return access(path, W_OK);
	}
	if (errno != ENOENT)
		return -1;
	char *copy = strdup(path);
	if (!copy)
		return -1;
	int rc = access(dirname(copy), W_OK | X_OK);
	free(copy);
	return rc;
}

void sp_config_check_outputs(const struct sp_config *c, struct sp_diag *diag)
{
	const struct {
		const char *key, *path;
		struct sp_where at;
		int dash_is_stderr;
	} out[] = {
		{"access_log", c->access_log, c->access_log_at, 1},
		{"shadow_defaults.diff_log", c->shadow.diff_log, c->shadow.diff_log_at, 1},
		{"pid_file", c->pid_file, c->pid_file_at, 0},
	};
	for (size_t i = 0; i < sizeof(out) / sizeof(out[0]); i++) {
		if (!out[i].path || (out[i].dash_is_stderr && strcmp(out[i].path, "-") == 0))
			continue;
		if (can_open_for_writing(out[i].path) < 0)
			sp_diag_add(diag, 1, out[i].at.file, out[i].at.line, "%s: cannot open %s: %s",
				    out[i].key, out[i].path, strerror(errno));
	}
}

struct sp_config *sp_config_ref(struct sp_config *c)
{
	atomic_fetch_add(&c->refs, 1);
	return c;
}

struct sp_config *sp_config_overlay(struct sp_config *base)
{
	struct sp_config *c = malloc(sizeof(*c));
	struct sp_route *routes = malloc((base->nroutes ? base->nroutes : 1) * sizeof(*routes));
	if (!c || !routes) {
		free(c);
		free(routes);
		return NULL;
	}
	memcpy(c, base, sizeof(*c));
	atomic_init(&c->refs, 1);
	if (base->nroutes)
		memcpy(routes, base->routes, base->nroutes * sizeof(*routes));
	c->routes = routes;
	c->base = sp_config_ref(base->base ? base->base : base);
	return c;
}

void sp_config_unref(struct sp_config **cp)
{
	struct sp_config *c = *cp;
	*cp = NULL;
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	if (c->base) {
		free(c->routes);
		sp_config_unref(&c->base);
		free(c);
		return;
	}
	for (size_t i = 0; i < c->nlisten; i++) {
		free(c->listen[i].address);
		sp_tls_server_free(&c->listen[i].tls);
	}
	free(c->listen);
	free(c->trusted);
	for (size_t i = 0; i < c->nbackends; i++) {
		free(c->backends[i].name);
		for (size_t k = 0; k < c->backends[i].nservers; k++) {
			free(c->backends[i].servers[k].url);
			free(c->backends[i].servers[k].host);
			free(c->backends[i].servers[k].hostport);
		}
		free(c->backends[i].servers);
		free(c->backends[i].host_header);
		sp_rewrite_free(&c->backends[i].rewrite, c->backends[i].nrewrite);
		sp_hdr_rules_deinit(&c->backends[i].req_headers);
		sp_hdr_rules_deinit(&c->backends[i].resp_headers);
		SSL_CTX_free(c->backends[i].tls_ctx);
		free(c->backends[i].health_path);
	}
	free(c->backends);
	sp_route_index_free(c->route_index);
	for (size_t i = 0; i < c->nroutes; i++)
		sp_route_deinit(&c->routes[i]);
	free(c->routes);
	free(c->access_log);
	free(c->shadow.diff_log);
	free(c->admin.address);
	free(c->admin.token);
	free(c->admin.state_file);
	free(c->pid_file);
	free(c->user);
	free(c->file);
	for (size_t i = 0; i < c->nfiles; i++)
		free(c->files[i]);
	free(c->files);
	for (size_t i = 0; i < c->nread_files; i++)
		free(c->read_files[i]);
	free(c->read_files);
	free(c);
}
