/* TLS contexts (see tls.h). Both kinds set SSL_OP_IGNORE_UNEXPECTED_EOF: with
 * OpenSSL 3 a TCP close without close_notify is otherwise a TLS error, which
 * cut close-delimited responses and refused a client's half-close. As an EOF,
 * the HTTP parser decides whether the message was complete, so a cut inside a
 * Content-Length or chunked body is still reported as truncation, as over
 * plain HTTP (and as nginx does). */
#include "tls.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct sp_tls_server {
	SSL_CTX **ctx; /* ctx[0] is the default (first certificate) */
	X509 **leaf;
	size_t n;
};

/* Whether OpenSSL found nothing of the kind it looked for in a file (not
 * PEM at all, or PEM of another kind: a key given as the certificate). */
static int nothing_found(unsigned long e)
{
	return (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) ||
	       (ERR_GET_LIB(e) == ERR_LIB_OSSL_DECODER && ERR_GET_REASON(e) == ERR_R_UNSUPPORTED);
}

/* Names the file a load failed on: e->setting and e->reason. */
__attribute__((format(printf, 3, 4))) static void fail_at(struct sp_tls_error *e,
							   const char *setting, const char *fmt, ...)
{
	va_list ap;
	e->setting = setting;
	va_start(ap, fmt);
	vsnprintf(e->reason, sizeof(e->reason), fmt, ap);
	va_end(ap);
}

/* `"file": reason` for the setting; with `kind`, a file holding no such
 * thing says "no KIND found (reason)". */
static void openssl_reason(struct sp_tls_error *err, const char *what, const char *file,
			   const char *kind)
{
	/* the first error is the specific one ("no start line"); the later
	 * ones wrap it ("PEM lib"). System errors have no reason string in
	 * OpenSSL 3, so fall back to the library's text. */
	unsigned long e = ERR_peek_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	char buf[256];
	if (!reason && e) {
		ERR_error_string_n(e, buf, sizeof(buf));
		reason = buf;
	}
	if (kind && nothing_found(e))
		fail_at(err, what, "\"%s\": no %s found (%s)", file, kind, reason);
	else
		fail_at(err, what, "\"%s\": %s", file, reason ? reason : "unknown error");
	ERR_clear_error();
}

/* A file that cannot be read gets the system's reason (OpenSSL 3 would
 * only say "system lib"), and one that is not a regular file (a directory)
 * says so. Returns 0 when readable. */
static int unreadable(const char *what, const char *file, struct sp_tls_error *err)
{
	struct stat st;
	if (stat(file, &st) == 0 && !S_ISREG(st.st_mode)) {
		fail_at(err, what, "\"%s\": not a regular file%s", file,
			S_ISDIR(st.st_mode) ? " (a directory)" : "");
		return -1;
	}
	if (access(file, R_OK) == 0)
		return 0;
	fail_at(err, what, "\"%s\": %s", file, strerror(errno));
	return -1;
}

/* Serves HTTP/1.x: http/1.1 when offered, else http/1.0 or http/0.9 (what
 * curl --http1.0 offers alone; nginx's list); a client that offers only
 * others (h2 alone) gets the no_application_protocol alert (RFC 7301 3.2,
 * as from nginx), not a connection it would speak HTTP/2 on; one that
 * offers none goes on without ALPN. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char h1x[] = "\x08http/1.1\x08http/1.0\x08http/0.9";
	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto((unsigned char **)out, outlen, h1x, sizeof(h1x) - 1, in, inlen) ==
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_OK;
	return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* The certificate for an SNI name: an exact name before a wildcard (as
 * nginx), each in list order; -1 when none covers it. */
static int cert_for(const struct sp_tls_server *s, const char *name)
{
	static const unsigned int passes[] = {X509_CHECK_FLAG_NO_WILDCARDS, 0};
	for (size_t p = 0; p < sizeof(passes) / sizeof(*passes); p++)
		for (size_t i = 0; i < s->n; i++)
			if (X509_check_host(s->leaf[i], name, 0, passes[p], NULL) == 1)
				return (int)i;
	return -1;
}

static int on_servername(SSL *ssl, int *alert, void *arg)
{
	const struct sp_tls_server *s = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	char bare[256];
	(void)alert;
	/* "b.example." is b.example (as a Host's final dot is) */
	size_t n = name ? strlen(name) : 0;
	if (n > 1 && n < sizeof(bare) && name[n - 1] == '.') {
		memcpy(bare, name, n - 1);
		bare[n - 1] = '\0';
		name = bare;
	}
	int i = name ? cert_for(s, name) : -1;
	if (i > 0) /* the handshake started on ctx[0], the default */
		SSL_set_SSL_CTX(ssl, s->ctx[i]);
	return SSL_TLSEXT_ERR_OK;
}

/* OpenSSL's default would prompt "Enter PEM pass phrase:" on the terminal
 * and block (-t, or a reload in the main thread). No pass phrase is given:
 * the file is refused, and *asked says why. */
static int on_passphrase(char *buf, int size, int rwflag, void *asked)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	if (asked)
		*(int *)asked = 1;
	return 0;
}

/* Whether the private key failed to load because it is not the
 * certificate's. */
static int key_mismatch(void)
{
	unsigned long e = ERR_peek_error();
	return ERR_GET_LIB(e) == ERR_LIB_X509 && ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH;
}

/* Loads a certificate chain and its private key into ctx; the setting names
 * label the error. Returns -1 with err set. */
static int load_pair(SSL_CTX *ctx, const char *cert_key, const char *cert, const char *pkey_key,
		     const char *pkey, struct sp_tls_error *err)
{
	int asked = 0;
	if (unreadable(cert_key, cert, err) || unreadable(pkey_key, pkey, err))
		return -1;
	SSL_CTX_set_default_passwd_cb(ctx, on_passphrase);
	SSL_CTX_set_default_passwd_cb_userdata(ctx, &asked);
	int ok = SSL_CTX_use_certificate_chain_file(ctx, cert) == 1;
	if (!ok)
		openssl_reason(err, cert_key, cert, "PEM certificate");
	else if (!(ok = SSL_CTX_use_PrivateKey_file(ctx, pkey, SSL_FILETYPE_PEM) == 1) && asked)
		fail_at(err, pkey_key, "\"%s\": encrypted private keys are not supported", pkey);
	else if (!ok && key_mismatch())
		fail_at(err, pkey_key, "\"%s\" does not match %s \"%s\"", pkey, cert_key, cert);
	else if (!ok)
		openssl_reason(err, pkey_key, pkey, "PEM private key");
	else if (!(ok = SSL_CTX_check_private_key(ctx) == 1))
		fail_at(err, pkey_key, "\"%s\" does not match %s \"%s\"", pkey, cert_key, cert);
	ERR_clear_error();
	/* asked goes out of scope; the callback stays and still refuses */
	SSL_CTX_set_default_passwd_cb_userdata(ctx, NULL);
	return ok ? 0 : -1;
}

static SSL_CTX *server_ctx(const struct sp_tls_cert *c, int min_version,
			   struct sp_tls_error *err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		fail_at(err, NULL, "out of memory");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, min_version);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
				 SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
	if (load_pair(ctx, "certificate", c->certificate, "private_key", c->private_key, err) < 0)
		goto fail;
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct sp_tls_server *sp_tls_server_new(const struct sp_tls_cert *certs, size_t n,
					int min_version, struct sp_tls_error *err)
{
	struct sp_tls_server *s = calloc(1, sizeof(*s));
	err->entry = 0;
	if (!s || !(s->ctx = calloc(n, sizeof(*s->ctx))) || !(s->leaf = calloc(n, sizeof(*s->leaf)))) {
		fail_at(err, NULL, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < n; i++, s->n++) {
		err->entry = i;
		if (!(s->ctx[i] = server_ctx(&certs[i], min_version, err)))
			goto fail;
		s->leaf[i] = SSL_CTX_get0_certificate(s->ctx[i]);
	}
	/* every context gets the callback: the handshake starts on ctx[0] */
	SSL_CTX_set_tlsext_servername_callback(s->ctx[0], on_servername);
	SSL_CTX_set_tlsext_servername_arg(s->ctx[0], s);
	return s;
fail:
	sp_tls_server_free(&s);
	return NULL;
}

SSL_CTX *sp_tls_server_ctx(const struct sp_tls_server *s)
{
	return s->ctx[0];
}

void sp_tls_server_free(struct sp_tls_server **sp)
{
	struct sp_tls_server *s = *sp;
	if (!s)
		return;
	*sp = NULL;
	for (size_t i = 0; i < s->n; i++)
		SSL_CTX_free(s->ctx[i]);
	free(s->ctx);
	free(s->leaf);
	free(s);
}

/* The time as "2026-11-28 00:00:00 UTC" (the ASN.1 text if it does not
 * convert). */
static void asn1_time_text(const ASN1_TIME *t, char *out, size_t len)
{
	struct tm tm;
	if (ASN1_TIME_to_tm(t, &tm) == 1 && strftime(out, len, "%Y-%m-%d %H:%M:%S UTC", &tm) > 0)
		return;
	snprintf(out, len, "%.*s", ASN1_STRING_length(t), (const char *)ASN1_STRING_get0_data(t));
}

static int validity(X509 *x, time_t now, char *why, size_t len)
{
	char when[64];
	if (!x)
		return 0;
	if (X509_cmp_time(X509_get0_notAfter(x), &now) < 0) {
		asn1_time_text(X509_get0_notAfter(x), when, sizeof(when));
		snprintf(why, len, "expired on %s", when);
		return 1;
	}
	if (X509_cmp_time(X509_get0_notBefore(x), &now) > 0) {
		asn1_time_text(X509_get0_notBefore(x), when, sizeof(when));
		snprintf(why, len, "not valid before %s", when);
		return 1;
	}
	return 0;
}

int sp_tls_server_validity(const struct sp_tls_server *s, size_t i, time_t now, char *why,
			   size_t len)
{
	return i < s->n ? validity(s->leaf[i], now, why, len) : 0;
}

int sp_tls_client_validity(SSL_CTX *ctx, time_t now, char *why, size_t len)
{
	return validity(SSL_CTX_get0_certificate(ctx), now, why, len);
}

/* Adds a setting to the digest, length first so that no two settings run
 * together; with a path, the file's contents follow (a reload may find new
 * contents under the same name). */
static void digest_setting(EVP_MD_CTX *md, const char *value, int is_file)
{
	size_t len = value ? strlen(value) + 1 : 0;
	EVP_DigestUpdate(md, &len, sizeof(len));
	EVP_DigestUpdate(md, value ? value : "", len);
	FILE *f = is_file && value ? fopen(value, "rb") : NULL;
	if (!f)
		return;
	unsigned char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		EVP_DigestUpdate(md, buf, n);
	fclose(f);
}

static int client_id(const char *ca_file, int verify, const char *cert, const char *key,
		     unsigned char id[SP_TLS_ID_LEN])
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned int len = SP_TLS_ID_LEN;
	int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
	if (ok) {
		digest_setting(md, verify ? "verify" : "no verify", 0);
		digest_setting(md, ca_file, 1);
		digest_setting(md, cert, 1);
		digest_setting(md, key, 1);
		ok = EVP_DigestFinal_ex(md, id, &len) == 1;
	}
	EVP_MD_CTX_free(md);
	return ok ? 0 : -1;
}

/* ex_data indexes: a client context's id (a copy it owns), a connection's
 * sp_tls_resume */
static int ctx_id_index = -1, ssl_resume_index = -1;
static pthread_once_t resume_once = PTHREAD_ONCE_INIT;

static void free_ctx_id(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

static void resume_indexes(void)
{
	ctx_id_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, free_ctx_id);
	ssl_resume_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* A session the server gave (after the handshake in TLS 1.3): kept, in
 * place of the one before. 1: the reference is ours. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
	struct sp_tls_resume *r = SSL_get_ex_data(ssl, ssl_resume_index);
	const unsigned char *id = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_id_index);
	if (!r || !id)
		return 0;
	pthread_mutex_lock(&r->lock);
	SSL_SESSION *old = r->sess;
	r->sess = sess;
	memcpy(r->id, id, SP_TLS_ID_LEN);
	pthread_mutex_unlock(&r->lock);
	SSL_SESSION_free(old);
	return 1;
}

void sp_tls_resume_init(struct sp_tls_resume *r)
{
	pthread_mutex_init(&r->lock, NULL);
	r->sess = NULL;
}

void sp_tls_resume_deinit(struct sp_tls_resume *r)
{
	SSL_SESSION_free(r->sess);
	r->sess = NULL;
	pthread_mutex_destroy(&r->lock);
}

void sp_tls_resume_offer(SSL *ssl, struct sp_tls_resume *r)
{
	const unsigned char *id = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_id_index);
	if (!r || !id || SSL_set_ex_data(ssl, ssl_resume_index, r) != 1)
		return;
	pthread_mutex_lock(&r->lock);
	if (r->sess && memcmp(r->id, id, SP_TLS_ID_LEN) == 0)
		SSL_set_session(ssl, r->sess); /* takes a reference of its own */
	pthread_mutex_unlock(&r->lock);
}

SSL_CTX *sp_tls_client_ctx(const char *ca_file, int verify, const char *cert, const char *key,
			   unsigned char id[SP_TLS_ID_LEN], struct sp_tls_error *err)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	unsigned char *own = malloc(SP_TLS_ID_LEN);
	err->entry = 0;
	pthread_once(&resume_once, resume_indexes);
	if (!ctx || !own || client_id(ca_file, verify, cert, key, id) < 0 || ctx_id_index < 0 ||
	    ssl_resume_index < 0 || SSL_CTX_set_ex_data(ctx, ctx_id_index, own) != 1) {
		SSL_CTX_free(ctx);
		free(own);
		fail_at(err, NULL, "out of memory");
		return NULL;
	}
	memcpy(own, id, SP_TLS_ID_LEN); /* the context frees it (free_ctx_id) */
	/* sessions are kept per server by the caller (sp_tls_resume), not in
	 * OpenSSL's cache, which a client does not look up by itself */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, on_new_session);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	static const unsigned char h11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
	SSL_CTX_set_alpn_protos(ctx, h11, sizeof(h11));
	if (ca_file && unreadable("ca_file", ca_file, err))
		goto fail;
	if (verify) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
		if (ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1
			    : SSL_CTX_set_default_verify_paths(ctx) != 1) {
			openssl_reason(err, "ca_file", ca_file ? ca_file : "(system store)", NULL);
			goto fail;
		}
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	/* config.c accepts client_certificate and client_private_key only together */
	if (cert && load_pair(ctx, "client_certificate", cert, "client_private_key", key, err) < 0)
		goto fail;
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}
