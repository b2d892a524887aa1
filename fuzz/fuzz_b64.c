/* base64: the strict decoder and the encoder.
 * Properties: decode never writes past (n / 4) * 3 bytes; whatever decodes
 * re-encodes to exactly the input (canonical, padded, no whitespace); any
 * bytes encode to wx_b64_encoded_size() - 1 characters that decode back. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *in = fuzz_copy(data, size);
    size_t cap = size / 4 * 3;
    unsigned char *out = malloc(cap ? cap : 1);
    long n = wx_b64_decode(in, size, out);
    CHECK(n >= -1);
    if (n >= 0) {
        char *enc;
        CHECK((size_t)n <= cap);
        CHECK(size % 4 == 0);
        enc = malloc(wx_b64_encoded_size((size_t)n));
        CHECK(wx_b64_encode(out, (size_t)n, enc) == size);
        CHECK(memcmp(enc, in, size) == 0);
        free(enc);
    }
    free(out);

    {   /* the input as raw bytes: encode, then decode back */
        size_t esz = wx_b64_encoded_size(size);
        char *enc = malloc(esz);
        size_t m = wx_b64_encode(data, size, enc), dcap;
        unsigned char *dec;
        long k;
        CHECK(m + 1 == esz);
        CHECK(enc[m] == '\0' && strlen(enc) == m);
        dcap = m / 4 * 3;
        dec = malloc(dcap ? dcap : 1);
        k = wx_b64_decode(enc, m, dec);
        CHECK(k == (long)size);
        CHECK(size == 0 || memcmp(dec, data, size) == 0);
        free(dec);
        free(enc);
    }
    free(in);
    return 0;
}
