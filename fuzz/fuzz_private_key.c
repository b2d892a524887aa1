/* wx_private_key_from_pem: PEM text from a config file or a path's content.
 * Properties: no crash or leak; a failure has a message and leaves OpenSSL's
 * error queue empty (checked after successes too); a success is an RSA key
 * of at least 2048 bits, and wx_key_new sets up its signing context, whose
 * signature (or failure: a key with inconsistent parts) leaves the queue
 * empty too. */
/* Inputs may also be DER in "DER mode" (fuzz_common.h: fuzz_pem). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len;
    char *pem = fuzz_pem(data, size, PEM_LABELS, 5, &len);
    const char *err = NULL;
    EVP_PKEY *k = wx_private_key_from_pem(pem, len, &err);
    if (k) {
        CHECK(EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA);
        CHECK(EVP_PKEY_get_bits(k) >= 2048);
        {
            wx_key *wk = wx_key_new(k, 1, &err);   /* takes k, also on failure */
            if (wk) {
                char *out = malloc(wx_b64_encoded_size((size_t)EVP_PKEY_get_size(k)));
                long n;
                CHECK(out != NULL);
                n = wx_key_sign_b64(wk, "fuzz\n", 5, out, &err);
                CHECK(n == -1 || (size_t)n == strlen(out));
                CHECK_ERR_QUEUE_EMPTY();
                n = wx_key_sign_b64(wk, "again\n", 6, out, &err);   /* the context, reused */
                CHECK(n == -1 || (size_t)n == strlen(out));
                free(out);
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
