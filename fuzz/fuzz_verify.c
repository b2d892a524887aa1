#define _GNU_SOURCE /* memrchr */
/* wx_key_verify_b64: the Wechatpay-Signature header (base64, attacker-chosen)
 * over a message (the answer's timestamp, nonce and body), with a fixed
 * RSA-2048 public key.  Input: MESSAGE \0 SIGNATURE (split at the last NUL;
 * without a NUL the whole input is the signature of an empty message).
 * Properties: the result is 0 or 1, never a crash; OpenSSL's error queue is
 * empty afterwards; and wx_key_verify_b64, which reuses one verifying context
 * across every input of the run (after every kind of failure), always agrees
 * with reference_verify below, a fresh OpenSSL context per call (the oracle
 * lives here, not in the library: the library has one verification path).  The seeds hold
 * valid signatures made with the private half of this key (a throwaway key,
 * not kept). */
#include "fuzz_common.h"

#include <openssl/pem.h>

#include <openssl/err.h>
#include <openssl/rsa.h>

/* The oracle: one-shot EVP_DigestVerify with a context made for this call. */
static int reference_verify(EVP_PKEY *key, const char *msg, size_t len,
                            const char *sig_b64, size_t sig_len)
{
    unsigned char sig[1024];
    long n;
    int ok;
    EVP_MD_CTX *ctx;
    EVP_PKEY_CTX *pctx = NULL;
    if (sig_len == 0 || sig_len > 4 * (sizeof sig / 3)) return 0;
    n = wx_b64_decode(sig_b64, sig_len, sig);
    if (n <= 0 || n != EVP_PKEY_get_size(key)) return 0;
    ctx = EVP_MD_CTX_new();
    if (!ctx) { ERR_clear_error(); return 0; }
    ok = EVP_DigestVerifyInit(ctx, &pctx, EVP_sha256(), NULL, key) == 1 &&
         EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1 &&
         EVP_DigestVerify(ctx, sig, (size_t)n, (const unsigned char *)msg, len) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) ERR_clear_error();
    return ok;
}

static const char PUB_PEM[] =
    "-----BEGIN PUBLIC KEY-----\n"
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAkyx9p50rWk1BY0lgNV0A\n"
    "IUWFnsHPxxUDIzGzi4hOaM3xdMZ5DZcCv9WDiCQj7JvTxpdEhAgoQ7db1LMFhGqX\n"
    "+2K7hJHZ+r3h5UGQZLASl/AErAq1ujpSCD4qDo5nps2IJ6G5Zemvchd0hY1pW/EY\n"
    "eYO+2jd+hHcZemiNUEYmnLGxVHo0jjuQUnkwkpq21xLwYDfImihOMyCDUzkBu6SO\n"
    "tj0orcXK0Pkwr5twAyf0yVY/8kd1pCJgxwqxFKcWDSdsluvOFGz5bROB1FH3jR1K\n"
    "gnWT8XwEAxHyrhrWbSK9+dnEmzpejVuWWhwA6biarm1lQ1WbyynAw7q2SZ14fgmf\n"
    "GwIDAQAB\n"
    "-----END PUBLIC KEY-----\n"
    ;

static EVP_PKEY *key;
static wx_key *reused;     /* one context for the whole run */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *err = NULL;
    (void)argc; (void)argv;
    key = wx_public_key_from_pem(PUB_PEM, sizeof PUB_PEM - 1, &err);
    if (!key) {
        fprintf(stderr, "fuzz_verify: bad built-in key: %s\n", err);
        abort();
    }
    {
        EVP_PKEY *k2 = wx_public_key_from_pem(PUB_PEM, sizeof PUB_PEM - 1, &err);
        reused = k2 ? wx_key_new(k2, 0, &err) : NULL;
        if (!reused) {
            fprintf(stderr, "fuzz_verify: cannot set up the reused context: %s\n", err);
            abort();
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = fuzz_copy(data, size);
    const char *nul = size ? memrchr(in, '\0', size) : NULL;
    const char *msg = "", *sig = in;
    size_t msg_len = 0, sig_len = size;
    int ok, ok2;
    if (nul) {
        msg = in;
        msg_len = (size_t)(nul - in);
        sig = nul + 1;
        sig_len = size - msg_len - 1;
    }
    {   /* the signature in its own exactly sized buffer */
        char *s = fuzz_copy((const uint8_t *)sig, sig_len);
        ok = reference_verify(key, msg, msg_len, s, sig_len);
        CHECK_ERR_QUEUE_EMPTY();
        ok2 = wx_key_verify_b64(reused, msg, msg_len, s, sig_len);
        free(s);
    }
    CHECK(ok == 0 || ok == 1);
    CHECK(ok2 == ok);
    CHECK_ERR_QUEUE_EMPTY();
    free(in);
    return 0;
}
