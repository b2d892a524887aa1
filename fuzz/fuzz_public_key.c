/* wx_public_key_from_pem: the WeChat Pay public key (public-key mode).
 * Properties as for the private key: no crash or leak, failures explained
 * with an empty OpenSSL error queue (after successes too), successes are
 * RSA >= 2048. */
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
        EVP_PKEY_free(k);
    } else {
        CHECK(err != NULL && *err != '\0');
    }
    CHECK_ERR_QUEUE_EMPTY();   /* after a failure (the contract) and a success */
    free(pem);
    return 0;
}
