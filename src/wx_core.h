/*
 * wxpay C core: plain C, no Lua headers.
 *
 * Everything that touches key material, signatures, base64, AES-GCM and the
 * libcurl session lives here with ordinary C signatures, so the same core can
 * sit behind the Lua C binding (wxpay_core.c), a LuaJIT FFI binding, or a
 * libFuzzer target.  Failures return NULL / -1 and set *err to a static,
 * human-readable string that never contains key material (the file
 * functions write the path and the system's reason into a caller's buffer
 * instead).  Every failure path that went through OpenSSL clears OpenSSL's
 * error queue.
 */
#ifndef WX_CORE_H
#define WX_CORE_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>
#include <curl/curl.h>

/* ---- base64 (standard alphabet, padded) -------------------------------- */

/* Bytes needed to encode n bytes, including the terminating NUL. */
size_t wx_b64_encoded_size(size_t n);
/* Writes a NUL-terminated encoding of in[0..n) to out; returns its length. */
size_t wx_b64_encode(const unsigned char *in, size_t n, char *out);
/* Strict decoder: padding required, no whitespace, no trailing garbage.
 * out must hold at least (n / 4) * 3 bytes.  Returns the decoded length,
 * or -1 when the input is not canonical base64. */
long wx_b64_decode(const char *in, size_t n, unsigned char *out);

/* ---- fork -------------------------------------------------------------- */

/* Registers (once) the pthread_atfork handlers that keep per-process state
 * from crossing a fork(): the nonce pool is wiped and the connection pools
 * are forgotten in the child.  Called by every function that needs it. */
void wx_fork_init(void);
/* How many times this process's ancestry forked since wx_fork_init: a child
 * sees a larger number than the parent had.  No syscall. */
unsigned long wx_fork_generation(void);

/* ---- randomness ------------------------------------------------------- */

/* n alphanumerics from the CSPRNG into out (no NUL added). 0 or -1.
 * Random bytes come from a 4 KiB pool refilled by RAND_bytes (one call per
 * ~120 nonces of 32), wiped as they are used and discarded after fork();
 * rejection sampling keeps every alphanumeric equally likely.  Thread-safe. */
int wx_nonce(char *out, size_t n);

/* ---- keys --------------------------------------------------------------- */

/* An RSA private key from PEM text: PKCS#8 ("PRIVATE KEY", as WeChat Pay
 * issues apiclient_key.pem) or PKCS#1 ("RSA PRIVATE KEY").  Encrypted keys,
 * certificates and public keys are refused with a clear *err. */
EVP_PKEY *wx_private_key_from_pem(const char *pem, size_t len, const char **err);

/* An RSA public key from a "PUBLIC KEY" (SPKI) or "RSA PUBLIC KEY" PEM. */
EVP_PKEY *wx_public_key_from_pem(const char *pem, size_t len, const char **err);

typedef struct wx_cert_info {
    char serial[80];       /* hex, uppercase, no leading zero bytes */
    int64_t not_before;    /* Unix seconds */
    int64_t not_after;
} wx_cert_info;

/* The public key of an X.509 certificate (PEM) and its serial and validity. */
EVP_PKEY *wx_cert_from_pem(const char *pem, size_t len, wx_cert_info *info,
                           const char **err);

/* ---- RSASSA-PKCS1-v1_5 with SHA-256 ------------------------------------ */

/* ---- keys with their contexts ------------------------------------------ */

/* A key together with an EVP_PKEY_CTX initialised once for RSA PKCS#1 v1.5
 * with SHA-256 (signing for a private key, verifying for a public one) and a
 * digest context: no context is created or freed per call.  After an
 * OpenSSL failure the context is initialised afresh on the next use and the
 * error queue is cleared.  One thread at a time per wx_key (a Lua state). */
typedef struct wx_key wx_key;

/* Takes ownership of pkey, also on failure. */
wx_key *wx_key_new(EVP_PKEY *pkey, int signing, const char **err);
void wx_key_free(wx_key *k);
EVP_PKEY *wx_key_pkey(const wx_key *k);
int wx_key_bits(const wx_key *k);
/* RSASSA-PKCS1-v1_5 with SHA-256 on the key's own contexts: the sign forms
 * write a NUL-terminated base64 signature (out holds
 * wx_b64_encoded_size(EVP_PKEY_get_size) bytes) and return its length or -1;
 * the verify forms return 1 valid, 0 invalid (a signature that is not base64
 * or has the wrong length included: never an error).  Verifying with
 * a signing key, or signing with a verifying one, fails. */
long wx_key_sign_b64(wx_key *k, const void *msg, size_t len, char *out,
                     const char **err);
int wx_key_verify_b64(wx_key *k, const void *msg, size_t len,
                      const char *sig_b64, size_t sig_len);

/* The same over a message given in pieces (hashed in order, never copied
 * together): "METHOD\nTARGET\nTS\nNONCE\nBODY\n" straight from its parts. */
typedef struct wx_part {
    const void *data;
    size_t len;
} wx_part;
long wx_key_sign_parts_b64(wx_key *k, const wx_part *parts, size_t nparts, char *out,
                           const char **err);
int wx_key_verify_parts_b64(wx_key *k, const wx_part *parts, size_t nparts,
                            const char *sig_b64, size_t sig_len);

/* ---- AES-256-GCM (platform certificate download) ----------------------- */

/* Decrypts ct (ciphertext with the 16-byte tag appended) into out, which must
 * hold ct_len bytes.  key must be 32 bytes.  Returns the plaintext length or
 * -1 (bad key length, short input, authentication failure). */
long wx_aes256gcm_decrypt(const unsigned char *key, size_t key_len,
                          const unsigned char *iv, size_t iv_len,
                          const unsigned char *aad, size_t aad_len,
                          const unsigned char *ct, size_t ct_len,
                          unsigned char *out, const char **err);

/* ---- private files ------------------------------------------------------ */

/* Errors of these functions are written to err (errlen bytes): the path and
 * the system's reason, never a byte of the file. */

#define WX_KEY_FILE_MAX 65536

/* A whole regular file of at most max_bytes: open(O_RDONLY | O_CLOEXEC,
 * plus O_NOFOLLOW when nofollow), fstat, read.  *data is malloc'd and
 * NUL-terminated (free it; cleanse it first if secret); *mode (if not NULL)
 * gets the permission bits.  0 or -1. */
int wx_read_file(const char *path, size_t max_bytes, int nofollow, char **data,
                 size_t *len, unsigned *mode, char *err, size_t errlen);

/* A private key from a PEM file (at most WX_KEY_FILE_MAX bytes; a symbolic
 * link is followed: a linked key path is legitimate).  The buffer that held
 * the PEM is cleansed before it is freed, on every path.  *mode gets the
 * file's permission bits, so the caller can warn about group/other access. */
EVP_PKEY *wx_private_key_from_file(const char *path, unsigned *mode, char *err,
                                   size_t errlen);

/* Makes sure path is a private directory: created with mode 0700 when
 * missing (one level: the parent must exist); refused when it is a symbolic
 * link, not a directory, owned by another user, or writable by group or
 * others.  0 or -1. */
int wx_private_dir(const char *path, char *err, size_t errlen);

/* Replaces path atomically: a temporary file beside it (random name,
 * O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600), written, fsync'd and renamed
 * over path (a symbolic link at path is replaced, its target untouched); the
 * temporary file is removed on failure.  Readers see the old or the new
 * content, never a mix, whoever else writes at the same time.  0 or -1. */
int wx_write_private(const char *path, const void *data, size_t len, char *err,
                     size_t errlen);

/* ---- growable byte buffer ---------------------------------------------- */

typedef struct wx_buf {
    char *data;
    size_t len, cap;
} wx_buf;

int wx_buf_append(wx_buf *b, const void *p, size_t n); /* 0 or -1 (ENOMEM) */
void wx_buf_free(wx_buf *b);

/* ---- HTTP response header parsing -------------------------------------- */

/* Called once per header line "Name: value\r\n" (the status line too).
 * Returns 1 and sets name/value spans for a header, 2 for a status line with
 * *status set, 0 for the blank line ending the section, -1 for garbage. */
int wx_parse_header_line(const char *line, size_t len,
                         const char **name, size_t *name_len,
                         const char **value, size_t *value_len, int *status);

/* ---- HTTP session over libcurl ----------------------------------------- */

typedef struct wx_session wx_session;

/* proxy value meaning "whatever the environment says" (https_proxy & co.) */
#define WX_PROXY_ENV "env"

typedef struct wx_session_opts {
    const char *ca_file;          /* NULL: the system's bundle and CA directory;
                                     else exactly this file (no CA directory) */
    const char *proxy;            /* NULL: no proxy, the environment is ignored;
                                     WX_PROXY_ENV: libcurl's environment proxy;
                                     else a proxy URL ("http://host:port") */
    long connect_timeout_ms;
    long timeout_ms;
    size_t max_body;              /* answers larger than this are refused
                                     (0: 1 MiB) */
    long max_idle_s;              /* do not reuse connections idle longer */
} wx_session_opts;

/* Error classes of a failed exchange (mapped to wxpay error codes above). */
enum wx_http_err {
    WX_HTTP_OK = 0,
    WX_HTTP_NETWORK,   /* NETWORK_ERROR */
    WX_HTTP_TIMEOUT,   /* TIMEOUT */
    WX_HTTP_TLS,       /* TLS_ERROR */
    WX_HTTP_BAD,       /* BAD_RESPONSE: truncated, too large, garbage */
    WX_HTTP_INTERNAL   /* out of memory, curl refused an option */
};

typedef struct wx_response {
    long status;
    wx_buf headers;   /* "name\0value\0" pairs, names lowercased */
    wx_buf body;
    int err;          /* enum wx_http_err */
    int sent;         /* 1 if the request may have reached the server */
    char errmsg[256]; /* curl's description, when err != 0 */
} wx_response;

/* Must run once per process before any session; idempotent, thread-unsafe
 * only on the first call (the binding calls it from luaopen). */
int wx_http_global_init(void);
const char *wx_http_curl_version(void);

/* Connection pools.  Every session and multi handle attaches to a
 * process-wide, refcounted libcurl share (connections, TLS sessions, DNS)
 * keyed by (ca_file, proxy, thread): a thousand sessions with the same
 * settings use one keep-alive connection.  Objects may be freed in any
 * order; the pool goes with its last user.  After fork() the child never
 * touches the parent's pools: objects made before the fork move to a fresh
 * pool when next used (a multi handle only when it has nothing in flight).
 * wx_http_pool_count() is the number of live pools of this process.
 * (src/wx_pool.c; the wx_pool_* functions are for wx_http.c.) */
int wx_http_pool_count(void);
typedef struct wx_share wx_share;
/* The pool for o's settings in this thread and fork generation (a new
 * reference); NULL when out of memory. */
wx_share *wx_pool_acquire(const wx_session_opts *o);
/* Drops a reference; the last frees the pool (its easy handles must be gone).
 * A pool of an earlier fork generation is the parent's: only forgotten. */
void wx_pool_release(wx_share *p);
CURLSH *wx_pool_curlsh(const wx_share *p);
/* 1 when p was made before the last fork(): the object must move (repool). */
int wx_pool_stale(const wx_share *p);

/* A session: one easy handle driven on its own multi handle through
 * curl_multi_socket_action (libcurl's response handling, fewer syscalls). */
wx_session *wx_session_new(const wx_session_opts *o, const char **err);
void wx_session_free(wx_session *s);

/* One exchange.  headers is an array of nheaders "Name: value" strings
 * (copied into the session's buffers, reused as is when unchanged).
 * Per-call timeouts <= 0 and max_body 0 mean the session's defaults.  resp
 * is filled in (call wx_response_free afterwards) and err is returned.
 * A request other than GET is sent at most once: when its reused
 * connection closes before any answer, libcurl's silent "retry on a fresh
 * connection" is refused and the result is WX_HTTP_NETWORK with sent = 1
 * (the server may have acted on it).  Multi transfers behave the same. */
int wx_session_perform(wx_session *s, const char *method, const char *url,
                       const char *const *headers, size_t nheaders,
                       const char *body, size_t body_len,
                       long timeout_ms, long connect_timeout_ms, size_t max_body,
                       wx_response *resp);
void wx_response_free(wx_response *r);

/* Many exchanges at once over the pool (libcurl multi).  The caller adds up
 * to capacity transfers, runs, and takes finished ones; no callback ever
 * leaves C, so a Lua scheduler drives it. */
typedef struct wx_multi wx_multi;
wx_multi *wx_multi_new(const wx_session_opts *o, int max_parallel, const char **err);
void wx_multi_free(wx_multi *m);
/* -1 with *err when all slots are busy, or when id is already in flight or
 * finished and not yet taken (ids must not be recycled before they are
 * taken), or after a fork with transfers in flight. */
int wx_multi_add(wx_multi *m, long id, const char *method, const char *url,
                 const char *const *headers, size_t nheaders,
                 const char *body, size_t body_len,
                 long timeout_ms, long connect_timeout_ms, size_t max_body,
                 const char **err);
/* Drives the transfers until at least one finished or timeout_ms passed
 * (<= 0: until one finished); returns how many finished ones wait, or -1
 * with *err (after a fork with transfers in flight). */
int wx_multi_run(wx_multi *m, long timeout_ms, const char **err);
/* Takes one finished transfer: its id and response (free it). 1, or 0. */
int wx_multi_next(wx_multi *m, long *id, wx_response *resp);
/* Removes and frees every transfer, in flight (libcurl closes its
 * connection) or finished and not taken: the handle is empty and reusable. */
void wx_multi_abort_all(wx_multi *m);
int wx_multi_active(const wx_multi *m);
int wx_multi_capacity(const wx_multi *m);

#endif
