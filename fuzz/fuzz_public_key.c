/* wx_public_key_from_pem: the WeChat Pay public key (public-key mode).
 * Properties as for the private key: no crash or leak, failures explained
 * with an empty OpenSSL error queue (after successes too), successes are
 * RSA >= 2048 and get a verifying context (wx_key_new) that answers 0 or 1
 * for a signature of the right length, the queue left empty. */
/* Inputs may also be DER in "DER mode" (fuzz_common.h: fuzz_pem). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len;
    char *pem = fuzz_pem(data, size, PEM_LABELS, 5, &len);
    const char *err = NULL;
    EVP_PKEY *k = wx_public_key_from_pem(pem, len, &err);
    if (k) {
        CHECK(EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA);
        CHECK(EVP_PKEY_get_bits(k) >= 2048);
        {
            size_t sz = (size_t)EVP_PKEY_get_size(k);
            wx_key *wk = wx_key_new(k, 0, &err);   /* takes k, also on failure */
            if (wk) {
                unsigned char *raw = calloc(1, sz);
                char *b64 = malloc(wx_b64_encoded_size(sz));
                int v;
                CHECK(raw && b64);
                memcpy(raw, data, size < sz ? size : sz);
                wx_b64_encode(raw, sz, b64);
                v = wx_key_verify_b64(wk, "m\n", 2, b64, strlen(b64));
                CHECK(v == 0 || v == 1);
                free(raw);
                free(b64);
                wx_key_free(wk);
            } else {
                CHECK(err != NULL && *err != '\0');
            }
        }
    } else {
        CHECK(err != NULL && *err != '\0');
    }
    CHECK_ERR_QUEUE_EMPTY();   /* after a failure (the contract) and a success */
    free(pem);
    return 0;
}
