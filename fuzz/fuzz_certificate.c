/* wx_cert_from_pem: platform certificates, configured or downloaded (the
 * plaintext of an AES-GCM download is attacker-influenced if the APIv3 key
 * leaked).  Properties: no crash or leak; on success the serial is a
 * NUL-terminated run of uppercase hex digits that fits its field and the key
 * is RSA >= 2048; on failure a message; the OpenSSL error queue is empty
 * either way. */
/* Inputs may also be DER in "DER mode" (fuzz_common.h: fuzz_pem). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len;
    char *pem = fuzz_pem(data, size, PEM_LABELS, 5, &len);
    const char *err = NULL;
    wx_cert_info info;
    EVP_PKEY *k;
    memset(&info, 0xA5, sizeof info);   /* no stale NUL to hide a missing one */
    k = wx_cert_from_pem(pem, len, &info, &err);
    if (k) {
        size_t n = strnlen(info.serial, sizeof info.serial);
        CHECK(n > 0 && n < sizeof info.serial);
        CHECK(strspn(info.serial, "0123456789ABCDEF") == n);
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
