/* Shared bits of the libFuzzer targets (fuzz/fuzz_*.c).
 *
 * Every target links the pure C core (src/wx_crypto.c, src/wx_http.c) and no
 * Lua.  Inputs arrive in an exactly sized heap buffer, so ASan sees any read
 * past the end; outputs are allocated at exactly the size the core's contract
 * promises, so a write past it is caught too.  CHECK() turns a broken
 * property into a crash that libFuzzer saves as an artifact. */
#ifndef WX_FUZZ_COMMON_H
#define WX_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "wx_core.h"

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__,       \
                    __LINE__, #cond);                                       \
            abort();                                                        \
        }                                                                   \
    } while (0)

/* The core promises to leave OpenSSL's error queue empty after a failure
 * (wx_core.h): a stale error would leak into the next request of an nginx
 * worker.  Checked after every failed call. */
#define CHECK_ERR_QUEUE_EMPTY()                                             \
    do {                                                                    \
        unsigned long e_ = ERR_peek_error();                                \
        if (e_ != 0) {                                                      \
            char b_[256];                                                   \
            ERR_error_string_n(e_, b_, sizeof b_);                          \
            fprintf(stderr, "OpenSSL error queue not cleared: %s\n", b_);   \
            abort();                                                        \
        }                                                                   \
    } while (0)

/* A copy of the input in a buffer of exactly n bytes (malloc(0) is avoided
 * so that an empty input still gets a distinct, zero-sized allocation). */
static inline char *fuzz_copy(const uint8_t *data, size_t n)
{
    char *p = malloc(n ? n : 1);
    if (!p) abort();
    if (n) memcpy(p, data, n);
    return p;
}

/* The input as PEM text.  An input starting with 0xFF 0xFF is "DER mode":
 * byte 2 picks one of the labels and the rest is DER, wrapped here in that
 * armour (base64, 64-character lines), so that mutations land inside the
 * ASN.1 rather than in its base64 text.  Any other input is the text itself.
 * Returns a malloc'd buffer of exactly *len bytes. */
static inline char *fuzz_pem(const uint8_t *data, size_t size,
                             const char *const *labels, size_t nlabels,
                             size_t *len)
{
    const char *label;
    const uint8_t *der;
    size_t dlen, b64len, cap, i, o = 0;
    char *b64, *out;
    if (size < 3 || data[0] != 0xFF || data[1] != 0xFF) {
        *len = size;
        return fuzz_copy(data, size);
    }
    label = labels[data[2] % nlabels];
    der = data + 3;
    dlen = size - 3;
    b64 = malloc(wx_b64_encoded_size(dlen));
    if (!b64) abort();
    b64len = wx_b64_encode(der, dlen, b64);
    cap = 2 * (strlen(label) + 32) + b64len + b64len / 64 + 2;
    out = malloc(cap);
    if (!out) abort();
    o += (size_t)sprintf(out + o, "-----BEGIN %s-----\n", label);
    for (i = 0; i < b64len; i += 64) {
        size_t n = b64len - i < 64 ? b64len - i : 64;
        memcpy(out + o, b64 + i, n);
        o += n;
        out[o++] = '\n';
    }
    o += (size_t)sprintf(out + o, "-----END %s-----\n", label);
    free(b64);
    *len = o;
    return out;   /* holds o bytes (plus the NUL sprintf left, unused) */
}

static const char *const PEM_LABELS[] = {
    "PRIVATE KEY", "RSA PRIVATE KEY", "PUBLIC KEY", "RSA PUBLIC KEY", "CERTIFICATE",
};

#endif
