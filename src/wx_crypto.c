/* wxpay C core: base64, nonces, keys, RSA-SHA256, AES-256-GCM. */
#define _GNU_SOURCE
#include "wx_core.h"

#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

/* ---- base64 --------------------------------------------------------------- */

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t wx_b64_encoded_size(size_t n) { return ((n + 2) / 3) * 4 + 1; }

size_t wx_b64_encode(const unsigned char *in, size_t n, char *out)
{
    size_t i = 0, o = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64chars[v >> 18];
        out[o++] = b64chars[(v >> 12) & 63];
        out[o++] = b64chars[(v >> 6) & 63];
        out[o++] = b64chars[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = b64chars[v >> 18];
        out[o++] = b64chars[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = b64chars[v >> 18];
        out[o++] = b64chars[(v >> 12) & 63];
        out[o++] = b64chars[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* The value of each byte as a base64 digit, -1 for anything else: one load
 * per character (a Wechatpay-Signature is 344 of them). */
static const signed char b64tab[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 62, -1, -1, -1, 63,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, -1, -1, -1, -1, -1, -1,
    -1,  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14,
    15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, -1, -1, -1, -1, -1,
    -1, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40,
    41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

static int b64val(unsigned char c) { return b64tab[c]; }

long wx_b64_decode(const char *in, size_t n, unsigned char *out)
{
    size_t i, o = 0;
    if (n % 4 != 0) return -1;
    for (i = 0; i < n; i += 4) {
        int a = b64val((unsigned char)in[i]), b = b64val((unsigned char)in[i + 1]);
        int c, d;
        int last = (i + 4 == n);
        if (a < 0 || b < 0) return -1;
        if (last && in[i + 2] == '=') {
            if (in[i + 3] != '=' || (b & 15)) return -1; /* non-canonical */
            out[o++] = (unsigned char)(a << 2 | b >> 4);
            break;
        }
        c = b64val((unsigned char)in[i + 2]);
        if (c < 0) return -1;
        if (last && in[i + 3] == '=') {
            if (c & 3) return -1;
            out[o++] = (unsigned char)(a << 2 | b >> 4);
            out[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
            break;
        }
        d = b64val((unsigned char)in[i + 3]);
        if (d < 0) return -1;
        out[o++] = (unsigned char)(a << 2 | b >> 4);
        out[o++] = (unsigned char)((b & 15) << 4 | c >> 2);
        out[o++] = (unsigned char)((c & 3) << 6 | d);
    }
    return (long)o;
}

/* ---- fork generation -------------------------------------------------- */

/* Bumped in the child after every fork(); read with relaxed atomics (only
 * the child's single thread writes it, before anything else runs). */
static unsigned long fork_gen;

/* ---- nonce pool -------------------------------------------------------- */

/* Random bytes are drawn from OpenSSL in blocks of NONCE_POOL and consumed a
 * byte at a time: one RAND_bytes call (and the getpid() OpenSSL 3.0 makes in
 * it) per ~120 nonces instead of one per nonce.  Used bytes are wiped at
 * once.  The pool is discarded in the child after fork() (pthread_atfork),
 * so a parent and its workers never hand out the same nonces. */
#define NONCE_POOL 4096

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned char pool[NONCE_POOL];
static size_t pool_pos = NONCE_POOL;        /* next unused byte */
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void fork_prepare(void) { pthread_mutex_lock(&pool_mu); }
static void fork_parent(void) { pthread_mutex_unlock(&pool_mu); }
static void fork_child(void)
{
    OPENSSL_cleanse(pool, sizeof pool);
    pool_pos = NONCE_POOL;
    __atomic_store_n(&fork_gen, fork_gen + 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&pool_mu);
}

/* glibc unregisters these when this shared object is unloaded (dlclose). */
static void fork_register(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

void wx_fork_init(void) { pthread_once(&fork_once, fork_register); }

unsigned long wx_fork_generation(void)
{
    return __atomic_load_n(&fork_gen, __ATOMIC_RELAXED);
}

int wx_nonce(char *out, size_t n)
{
    static const char alnum[] =
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    size_t o = 0, start;
    int rc = 0;
    wx_fork_init();
    pthread_mutex_lock(&pool_mu);
    start = pool_pos;
    while (o < n) {
        unsigned char c;
        if (pool_pos == NONCE_POOL) {
            OPENSSL_cleanse(pool + start, pool_pos - start);
            start = pool_pos = 0;
            if (RAND_bytes(pool, sizeof pool) != 1) {
                ERR_clear_error();
                OPENSSL_cleanse(out, o);
                pool_pos = NONCE_POOL;
                rc = -1;
                break;
            }
        }
        c = pool[pool_pos++];
        /* 248 = 4 * 62: rejection sampling keeps the distribution uniform */
        if (c < 248) out[o++] = alnum[c % 62];
    }
    OPENSSL_cleanse(pool + start, pool_pos - start);   /* used bytes never stay */
    pthread_mutex_unlock(&pool_mu);
    return rc;
}

/* ---- keys ---------------------------------------------------------------- */

/* Never prompt for a pass phrase: an encrypted key is a configuration error. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf; (void)size; (void)rwflag; (void)u;
    return -1;
}

static BIO *pem_bio(const char *pem, size_t len)
{
    if (len > INT_MAX) return NULL;
    return BIO_new_mem_buf(pem, (int)len);
}

static EVP_PKEY *check_rsa(EVP_PKEY *k, const char **err)
{
    if (k && EVP_PKEY_get_base_id(k) != EVP_PKEY_RSA) {
        EVP_PKEY_free(k);
        *err = "the key is not an RSA key (WeChat Pay v3 uses RSA-2048)";
        return NULL;
    }
    if (k && EVP_PKEY_get_bits(k) < 2048) {
        EVP_PKEY_free(k);
        *err = "the RSA key is shorter than 2048 bits";
        return NULL;
    }
    return k;
}

EVP_PKEY *wx_private_key_from_pem(const char *pem, size_t len, const char **err)
{
    EVP_PKEY *k = NULL;
    BIO *bio;
    if (memmem(pem, len, "-----BEGIN", 10) == NULL) {
        *err = "not PEM text: expected -----BEGIN PRIVATE KEY-----";
        return NULL;
    }
    if (memmem(pem, len, "ENCRYPTED", 9) != NULL) {
        *err = "the private key is encrypted; give the unencrypted PKCS#8 key";
        return NULL;
    }
    bio = pem_bio(pem, len);
    if (!bio) { *err = "out of memory"; ERR_clear_error(); return NULL; }
    k = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
    BIO_free(bio);
    if (!k) {
        ERR_clear_error();
        if (memmem(pem, len, "CERTIFICATE", 11))
            *err = "this is a certificate, not a private key";
        else if (memmem(pem, len, "PUBLIC KEY", 10))
            *err = "this is a public key, not a private key";
        else
            *err = "could not parse the private key PEM";
        return NULL;
    }
    return check_rsa(k, err);
}

EVP_PKEY *wx_public_key_from_pem(const char *pem, size_t len, const char **err)
{
    EVP_PKEY *k = NULL;
    OSSL_DECODER_CTX *dctx;
    const unsigned char *p = (const unsigned char *)pem;
    size_t left = len;
    if (memmem(pem, len, "-----BEGIN", 10) == NULL) {
        *err = "not PEM text: expected -----BEGIN PUBLIC KEY-----";
        return NULL;
    }
    if (memmem(pem, len, "PRIVATE KEY", 11)) {
        *err = "this is a private key, not a public key";
        return NULL;
    }
    if (memmem(pem, len, "CERTIFICATE", 11)) {
        *err = "this is a certificate, not a public key";
        return NULL;
    }
    /* SPKI ("PUBLIC KEY") and PKCS#1 ("RSA PUBLIC KEY") alike */
    dctx = OSSL_DECODER_CTX_new_for_pkey(&k, "PEM", NULL, "RSA",
                                         EVP_PKEY_PUBLIC_KEY, NULL, NULL);
    if (!dctx || OSSL_DECODER_from_data(dctx, &p, &left) != 1) k = NULL;
    OSSL_DECODER_CTX_free(dctx);
    if (!k) {
        ERR_clear_error();
        *err = "could not parse the public key PEM";
        return NULL;
    }
    return check_rsa(k, err);
}

static int64_t asn1_to_unix(const ASN1_TIME *t, int *ok)
{
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) { *ok = 0; return 0; }
    return (int64_t)timegm(&tm);
}

EVP_PKEY *wx_cert_from_pem(const char *pem, size_t len, wx_cert_info *info,
                           const char **err)
{
    X509 *x;
    EVP_PKEY *k = NULL;
    BIO *bio;
    int ok = 1;
    if (memmem(pem, len, "-----BEGIN CERTIFICATE-----", 27) == NULL) {
        if (memmem(pem, len, "KEY-----", 8))
            *err = "this is a key, not a certificate";
        else
            *err = "not PEM text: expected -----BEGIN CERTIFICATE-----";
        return NULL;
    }
    bio = pem_bio(pem, len);
    if (!bio) { *err = "out of memory"; ERR_clear_error(); return NULL; }
    x = PEM_read_bio_X509(bio, NULL, no_password, NULL);
    BIO_free(bio);
    if (!x) {
        ERR_clear_error();
        *err = "could not parse the certificate PEM";
        return NULL;
    }
    {
        const ASN1_INTEGER *sn = X509_get0_serialNumber(x);
        BIGNUM *bn = ASN1_INTEGER_to_BN(sn, NULL);
        char *hex = bn ? BN_bn2hex(bn) : NULL;
        if (!hex || strlen(hex) >= sizeof info->serial || hex[0] == '-') {
            ok = 0;
        } else {
            strcpy(info->serial, hex);
        }
        OPENSSL_free(hex);
        BN_free(bn);
    }
    info->not_before = asn1_to_unix(X509_get0_notBefore(x), &ok);
    info->not_after = asn1_to_unix(X509_get0_notAfter(x), &ok);
    if (ok) k = X509_get_pubkey(x);
    X509_free(x);
    if (!k) {
        ERR_clear_error();
        *err = "could not read the certificate's serial, validity or key";
        return NULL;
    }
    return check_rsa(k, err);
}

/* ---- keys with their contexts made once --------------------------------- */

struct wx_key {
    EVP_PKEY *pkey;
    EVP_PKEY_CTX *pctx;   /* sign_init / verify_init done: PKCS#1 v1.5, SHA-256 */
    EVP_MD_CTX *md;       /* reused for the SHA-256 of each message */
    EVP_MD *sha256;       /* fetched once per key (OpenSSL shares the object):
                             no implicit fetch per digest, nothing global to
                             free when the module is unloaded */
    int signing;
    int ready;            /* pctx initialised; cleared after an error */
};

static int key_ctx_init(wx_key *k)
{
    int ok = k->signing ? EVP_PKEY_sign_init(k->pctx) : EVP_PKEY_verify_init(k->pctx);
    k->ready = ok == 1 &&
        EVP_PKEY_CTX_set_rsa_padding(k->pctx, RSA_PKCS1_PADDING) == 1 &&
        EVP_PKEY_CTX_set_signature_md(k->pctx, k->sha256) == 1;
    return k->ready ? 0 : -1;
}

wx_key *wx_key_new(EVP_PKEY *pkey, int signing, const char **err)
{
    wx_key *k;
    if (!pkey) { *err = "no key"; return NULL; }
    k = calloc(1, sizeof *k);
    if (!k) { EVP_PKEY_free(pkey); *err = "out of memory"; return NULL; }
    k->pkey = pkey;
    k->signing = signing;
    k->pctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    k->md = EVP_MD_CTX_new();
    k->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!k->pctx || !k->md || !k->sha256 || key_ctx_init(k)) {
        wx_key_free(k);
        ERR_clear_error();
        *err = signing ? "cannot set up RSA-SHA256 signing with this key"
                       : "cannot set up RSA-SHA256 verification with this key";
        return NULL;
    }
    return k;
}

void wx_key_free(wx_key *k)
{
    if (!k) return;
    EVP_MD_CTX_free(k->md);
    EVP_PKEY_CTX_free(k->pctx);
    EVP_MD_free(k->sha256);
    EVP_PKEY_free(k->pkey);
    free(k);
}

EVP_PKEY *wx_key_pkey(const wx_key *k) { return k->pkey; }
int wx_key_bits(const wx_key *k) { return EVP_PKEY_get_bits(k->pkey); }

static int digest(wx_key *k, const wx_part *parts, size_t nparts, unsigned char md[32])
{
    unsigned int n = 0;
    size_t i;
    if (EVP_DigestInit_ex2(k->md, k->sha256, NULL) != 1) return 0;
    for (i = 0; i < nparts; i++)
        if (parts[i].len && EVP_DigestUpdate(k->md, parts[i].data, parts[i].len) != 1) return 0;
    return EVP_DigestFinal_ex(k->md, md, &n) == 1 && n == 32;
}

long wx_key_sign_parts_b64(wx_key *k, const wx_part *parts, size_t nparts, char *out,
                           const char **err)
{
    unsigned char md[32], sig[1024];
    size_t siglen = sizeof sig;
    if (!k->signing) { *err = "this is not a private key"; return -1; }
    if ((size_t)EVP_PKEY_get_size(k->pkey) > sizeof sig) { *err = "the key is too large"; return -1; }
    if ((!k->ready && key_ctx_init(k)) || !digest(k, parts, nparts, md) ||
        EVP_PKEY_sign(k->pctx, sig, &siglen, md, sizeof md) != 1) {
        k->ready = 0;             /* start from a fresh init next time */
        ERR_clear_error();
        *err = "signing failed";
        return -1;
    }
    return (long)wx_b64_encode(sig, siglen, out);
}

long wx_key_sign_b64(wx_key *k, const void *msg, size_t len, char *out,
                     const char **err)
{
    wx_part p;
    p.data = msg;
    p.len = len;
    return wx_key_sign_parts_b64(k, &p, 1, out, err);
}

int wx_key_verify_parts_b64(wx_key *k, const wx_part *parts, size_t nparts,
                            const char *sig_b64, size_t sig_len)
{
    unsigned char md[32], sig[1024];
    long n;
    int ok;
    if (k->signing) return 0;
    if (sig_len == 0 || sig_len > 4 * (sizeof sig / 3)) return 0;
    n = wx_b64_decode(sig_b64, sig_len, sig);
    if (n <= 0 || n != EVP_PKEY_get_size(k->pkey)) return 0;
    if ((!k->ready && key_ctx_init(k)) || !digest(k, parts, nparts, md)) {
        k->ready = 0;
        ERR_clear_error();
        return 0;
    }
    ok = EVP_PKEY_verify(k->pctx, sig, (size_t)n, md, sizeof md) == 1;
    if (!ok) ERR_clear_error();   /* a mismatch: the context stays usable */
    return ok;
}

int wx_key_verify_b64(wx_key *k, const void *msg, size_t len,
                      const char *sig_b64, size_t sig_len)
{
    wx_part p;
    p.data = msg;
    p.len = len;
    return wx_key_verify_parts_b64(k, &p, 1, sig_b64, sig_len);
}

/* ---- AES-256-GCM --------------------------------------------------------- */

long wx_aes256gcm_decrypt(const unsigned char *key, size_t key_len,
                          const unsigned char *iv, size_t iv_len,
                          const unsigned char *aad, size_t aad_len,
                          const unsigned char *ct, size_t ct_len,
                          unsigned char *out, const char **err)
{
    EVP_CIPHER_CTX *ctx;
    int n1 = 0, n2 = 0;
    size_t body;
    if (key_len != 32) { *err = "the APIv3 key must be 32 bytes"; return -1; }
    if (iv_len == 0 || iv_len > 64) { *err = "bad AES-GCM nonce length"; return -1; }
    if (ct_len < 16 || ct_len - 16 > INT_MAX || aad_len > INT_MAX) {
        *err = "ciphertext too short to hold the GCM tag";
        return -1;
    }
    body = ct_len - 16;
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx ||
        EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, (int)iv_len, NULL) != 1 ||
        EVP_DecryptInit_ex(ctx, NULL, NULL, key, iv) != 1 ||
        (aad_len && EVP_DecryptUpdate(ctx, NULL, &n1, aad, (int)aad_len) != 1) ||
        EVP_DecryptUpdate(ctx, out, &n1, ct, (int)body) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16,
                            (void *)(ct + body)) != 1 ||
        EVP_DecryptFinal_ex(ctx, out + n1, &n2) != 1) {
        EVP_CIPHER_CTX_free(ctx);
        ERR_clear_error();
        *err = "AES-256-GCM authentication failed (wrong APIv3 key or tampered data)";
        return -1;
    }
    EVP_CIPHER_CTX_free(ctx);
    return (long)n1 + n2;
}

/* ---- buffer ------------------------------------------------------------------ */

int wx_buf_append(wx_buf *b, const void *p, size_t n)
{
    if (n > SIZE_MAX - b->len - 1) return -1;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        char *d;
        while (cap < b->len + n + 1) {
            if (cap > SIZE_MAX / 2) return -1;
            cap *= 2;
        }
        d = realloc(b->data, cap);
        if (!d) return -1;
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

void wx_buf_free(wx_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
