/* wx_aes256gcm_decrypt: the encrypt_certificate blocks of a certificate
 * download (nonce, associated_data and ciphertext come off the network).
 * Input: FLAGS IVLEN AADLEN IV AAD CIPHERTEXT+TAG (lengths clipped to what is
 * there; FLAGS bit 0 gives a 31-byte key to exercise the length check).
 * Properties: the output buffer of exactly ct_len bytes is never overrun; the
 * result is -1 (with a message and an empty OpenSSL error queue) or
 * ct_len - 16; and a plaintext that decrypted re-encrypts to the same input. */
#include "fuzz_common.h"

#include <openssl/evp.h>

static const unsigned char KEY[32] = "fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz";

static void reencrypt_check(const unsigned char *iv, size_t iv_len,
                            const unsigned char *aad, size_t aad_len,
                            const unsigned char *pt, size_t pt_len,
                            const unsigned char *ct, size_t ct_len)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    unsigned char *out = malloc(pt_len + 16 + 1), tag[16];
    int n1 = 0, n2 = 0;
    CHECK(c && out);
    CHECK(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1);
    CHECK(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, (int)iv_len, NULL) == 1);
    CHECK(EVP_EncryptInit_ex(c, NULL, NULL, KEY, iv) == 1);
    if (aad_len) CHECK(EVP_EncryptUpdate(c, NULL, &n1, aad, (int)aad_len) == 1);
    CHECK(EVP_EncryptUpdate(c, out, &n1, pt, (int)pt_len) == 1);
    CHECK(EVP_EncryptFinal_ex(c, out + n1, &n2) == 1);
    CHECK(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1);
    CHECK((size_t)(n1 + n2) == pt_len && pt_len + 16 == ct_len);
    CHECK(memcmp(out, ct, pt_len) == 0);
    CHECK(memcmp(tag, ct + pt_len, 16) == 0);
    EVP_CIPHER_CTX_free(c);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t iv_len, aad_len, p = 3;
    unsigned char *iv, *aad, *ct, *out;
    size_t ct_len;
    const char *err = NULL;
    long n;
    int short_key;
    if (size < 3) return 0;
    short_key = data[0] & 1;
    iv_len = data[1];
    aad_len = data[2];
    if (iv_len > size - p) iv_len = size - p;
    iv = (unsigned char *)fuzz_copy(data + p, iv_len);
    p += iv_len;
    if (aad_len > size - p) aad_len = size - p;
    aad = (unsigned char *)fuzz_copy(data + p, aad_len);
    p += aad_len;
    ct_len = size - p;
    ct = (unsigned char *)fuzz_copy(data + p, ct_len);
    out = malloc(ct_len ? ct_len : 1);
    n = wx_aes256gcm_decrypt(KEY, short_key ? 31 : 32, iv, iv_len, aad, aad_len,
                             ct, ct_len, out, &err);
    if (n < 0) {
        CHECK(n == -1);
        CHECK(err != NULL && *err != '\0');
        CHECK_ERR_QUEUE_EMPTY();
    } else {
        CHECK(!short_key);
        CHECK(ct_len >= 16 && (size_t)n == ct_len - 16);
        reencrypt_check(iv, iv_len, aad, aad_len, out, (size_t)n, ct, ct_len);
    }
    free(out);
    free(ct);
    free(aad);
    free(iv);
    return 0;
}
