/* HTTP/1.x message parsing for clients and backends: the only module that
 * sees llhttp. It hands out a plain message view and enforces size limits. */
#ifndef SP_H1_H
#define SP_H1_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "http.h"

struct sp_h1_msg {
	const char *method; /* requests: static name, e.g. "GET" */
	int is_connect;
	int status;         /* responses */
	int http_major, http_minor;
	int keep_alive;     /* the connection may carry another message */
	int upgrade;
	int chunked;
	int has_length;
	uint64_t content_length;
	const char *url;    /* valid from on_head until the next message */
	size_t url_len;
	const char *reason;
	size_t reason_len;
	/* the fields, with room for one more (an HTTP/1.0 request's Host,
	 * taken from an absolute-form target: sp_request_verdict) */
	struct sp_hdr *hdrs;
	size_t nhdrs;
};

struct sp_h1_hooks {
	/* Head parsed and checked by llhttp. Return 0 to read the body as framed,
	 * 1 when the message has no body (responses to HEAD, 1xx/204/304), -1 to
	 * fail with the status and reason set by sp_h1_fail(). */
	int (*on_head)(void *ud, struct sp_h1_msg *m);
	int (*on_body)(void *ud, const char *p, size_t n);
	/* Return 1 to pause the parser after this message, 0 to go on. */
	int (*on_done)(void *ud, struct sp_h1_msg *m);
};

struct sp_h1_limits {
	size_t max_url;
	size_t max_header_bytes;
	size_t max_headers;
};

enum sp_h1_rc { SP_H1_OK, SP_H1_PAUSED, SP_H1_UPGRADE, SP_H1_ERROR };

struct sp_h1;
struct sp_stash;

/* is_request: parse requests (client side) or responses (backend side). */
struct sp_h1 *sp_h1_new(int is_request, const struct sp_h1_hooks *hooks, void *ud,
			const struct sp_h1_limits *limits);
void sp_h1_free(struct sp_h1 **h);
/* The limits of the messages to come (between messages: a reload's). */
void sp_h1_set_limits(struct sp_h1 *h, const struct sp_h1_limits *limits);
/* For a response parser: the method of the request being answered (HEAD
 * responses have no body). */
void sp_h1_expect_head(struct sp_h1 *h, int is_head);

/* Feeds bytes. *consumed says how many were used (less than len when paused). */
enum sp_h1_rc sp_h1_execute(struct sp_h1 *h, const char *data, size_t len, size_t *consumed);
/* End of input: completes a close-delimited body or reports a truncated one. */
enum sp_h1_rc sp_h1_finish(struct sp_h1 *h);
void sp_h1_resume(struct sp_h1 *h);
/* Between messages: gives back the memory of the last head (an idle
 * keep-alive connection then costs only its fixed parts). */
void sp_h1_trim(struct sp_h1 *h);
/* sp_h1_trim when one of the blocks is larger than max bytes. */
void sp_h1_trim_over(struct sp_h1 *h, size_t max);
/* Head memory comes from and goes back to st (one thread's; NULL: malloc). */
void sp_h1_set_stash(struct sp_h1 *h, struct sp_stash *st);
/* Starts over (after an upgrade was refused or an error, for reuse). */
void sp_h1_reset(struct sp_h1 *h);
/* Bytes of a Content-Length body still to come (0 outside one). A caller
 * that moves body bytes past the parser itself (to relay them without
 * copying) reports them with sp_h1_body_skip(), always n < the bytes left:
 * the last byte goes through sp_h1_execute(), which ends the message. */
uint64_t sp_h1_body_left(const struct sp_h1 *h);
void sp_h1_body_skip(struct sp_h1 *h, uint64_t n);
/* True when part of a message has been received and not completed. */
int sp_h1_in_message(const struct sp_h1 *h);

/* Whether the parser takes m as a request method (case-sensitive; the
 * proxy answers others with 501). */
int sp_h1_method_known(const char *m);
/* The answer's text to the HTTP/2 connection preface ("PRI * HTTP/2.0"), a 505. */
#define SP_H1_NO_HTTP2 "HTTP/2 is not served here: only HTTP/1.0 and HTTP/1.1"
/* A request's method and target as far as they were read, for logging a
 * request refused before its head was whole (url_len 0: the method alone,
 * the target refused at its first bytes); 0 when not even a method was. */
int sp_h1_request_line(const struct sp_h1 *h, const char **method, const char **url,
		       size_t *url_len);

/* Used by hooks to fail with a given status (requests) and reason. */
void sp_h1_fail(struct sp_h1 *h, int status, const char *reason);
/* After SP_H1_ERROR: the status to answer (400, 414, 431, 501, 505…) and why. */
int sp_h1_error_status(const struct sp_h1 *h);
const char *sp_h1_error_reason(const struct sp_h1 *h);
/* "8.1.0" */
const char *sp_h1_version(void);

#endif
