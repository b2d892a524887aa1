/* wx_private_key_from_pem: PEM text from a config file or a path's content.
 * Properties: no crash or leak; a failure has a message and leaves OpenSSL's
 * error queue empty (checked after successes too); a success is an RSA key
 * of at least 2048 bits. */
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
        EVP_PKEY_free(k);
    } else {
        CHECK(err != NULL && *err != '\0');
    }
    CHECK_ERR_QUEUE_EMPTY();   /* after a failure (the contract) and a success */
    free(pem);
    return 0;
}
