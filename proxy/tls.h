/* TLS contexts built from the configuration: one server context per TLS
 * listener (several certificates chosen by SNI, ALPN http/1.1) and one client
 * context per https backend. Built at load time, so a bad certificate is a
 * configuration error and a reload keeps the running certificates. */
#ifndef SP_TLS_H
#define SP_TLS_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stddef.h>
#include <time.h>

struct sp_tls_cert {
	char *certificate; /* PEM chain */
	char *private_key; /* PEM key */
};

/* Why a context could not be built, and which file it is about, so that the
 * configuration names that setting at its own line. */
struct sp_tls_error {
	size_t entry;        /* the certificate entry (sp_tls_server_new) */
	const char *setting; /* "certificate", "private_key", "ca_file",
			      * "client_certificate", "client_private_key";
			      * NULL: no file is to blame (out of memory) */
	char reason[512];    /* "\"FILE\": why", or "\"KEY\" does not match ..." */
};

struct sp_tls_server;

/* min_version: TLS1_2_VERSION or TLS1_3_VERSION. NULL with err set. */
struct sp_tls_server *sp_tls_server_new(const struct sp_tls_cert *certs, size_t n,
					int min_version, struct sp_tls_error *err);
SSL_CTX *sp_tls_server_ctx(const struct sp_tls_server *s);
void sp_tls_server_free(struct sp_tls_server **s);

/* Whether the certificate a context presents (a listener's entry i, or a
 * backend's client certificate) is outside its validity period at now: 0 if
 * it is within it or there is none, else 1 with why set to "expired on
 * 2026-11-28 00:00:00 UTC" or "not valid before ...". Peers refuse such a
 * certificate, but the file loads: the configuration warns. */
int sp_tls_server_validity(const struct sp_tls_server *s, size_t i, time_t now, char *why,
			   size_t len);
int sp_tls_client_validity(SSL_CTX *ctx, time_t now, char *why, size_t len);

#define SP_TLS_ID_LEN 32

/* ca_file NULL: the system store. verify 0: no certificate check. cert and
 * key (a client certificate) are both set or both NULL. id receives a
 * digest of the settings and of the files' contents: two contexts with the
 * same id trust and present the same things, so connections made with one
 * may serve the other (the system store is taken by name only). */
SSL_CTX *sp_tls_client_ctx(const char *ca_file, int verify, const char *cert, const char *key,
			   unsigned char id[SP_TLS_ID_LEN], struct sp_tls_error *err);

/* The last TLS session made with one server (nginx's
 * proxy_ssl_session_reuse): a new connection to it offers the session and,
 * when the server takes it, saves the full handshake (its certificate was
 * checked when the session was made). A session is offered only on a
 * context with the id it was made with: one a reload made trust other
 * certificates (another ca_file, tls_verify turned on) checks them again.
 * Shared by every worker (a lock). */
struct sp_tls_resume {
	pthread_mutex_t lock;
	SSL_SESSION *sess;
	unsigned char id[SP_TLS_ID_LEN];
};
void sp_tls_resume_init(struct sp_tls_resume *r);
void sp_tls_resume_deinit(struct sp_tls_resume *r);
/* Before ssl's handshake (a client of a sp_tls_client_ctx context): offers
 * r's session when it fits, and has the sessions the server gives kept in
 * r (r must outlive ssl). r NULL: neither. */
void sp_tls_resume_offer(SSL *ssl, struct sp_tls_resume *r);

#endif
