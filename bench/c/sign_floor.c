/*
 * bench/c/sign_floor.c: where the signing rate goes (bench step 1 diagnosis).
 *
 *   sign_floor KEY_PEM SECONDS
 *
 * Prints one JSON line with signatures per user-CPU second (the basis of
 * `openssl speed`) for:
 *   pkey_sign    EVP_PKEY_sign on a context made once, over a ready SHA-256
 *                digest: what `openssl speed rsa2048` times;
 *   digest_sign  EVP_DigestSignInit + EVP_DigestSign per call over a
 *                130-byte message (a fresh context each time): the per-call
 *                work src/wx_crypto.c:wx_key_sign_parts_b64 does before base64.
 * Built and run by bench/run.lua; it is not part of the library.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

static double user_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
}

static const char MSG[] =
    "POST\n/v3/global/micropay/transactions/out-trade-no/BENCH0000000000000001/reverse\n"
    "1700000000\nABCDEFGHIJKLMNOPQRSTUVWXYZ012345\n{\"mchid\":\"1900000109\"}\n";

int main(int argc, char **argv)
{
    FILE *f;
    EVP_PKEY *key;
    EVP_PKEY_CTX *pctx;
    unsigned char md[32], sig[512];
    size_t siglen;
    double secs, t0, t;
    long n1 = 0, n2 = 0;
    double r1, r2;

    if (argc < 3) { fprintf(stderr, "usage: sign_floor KEY_PEM SECONDS\n"); return 2; }
    secs = atof(argv[2]);
    if (!(f = fopen(argv[1], "r"))) { perror(argv[1]); return 1; }
    key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    if (!key) { fprintf(stderr, "cannot read the key\n"); return 1; }
    EVP_Digest(MSG, sizeof MSG - 1, md, NULL, EVP_sha256(), NULL);

    /* 1. openssl speed's loop */
    pctx = EVP_PKEY_CTX_new(key, NULL);
    if (!pctx || EVP_PKEY_sign_init(pctx) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) != 1 ||
        EVP_PKEY_CTX_set_signature_md(pctx, EVP_sha256()) != 1) return 1;
    t0 = user_s();
    do {
        int i;
        for (i = 0; i < 20; i++) {
            siglen = sizeof sig;
            if (EVP_PKEY_sign(pctx, sig, &siglen, md, sizeof md) != 1) return 1;
        }
        n1 += 20;
    } while ((t = user_s()) - t0 < secs);
    r1 = n1 / (t - t0);
    EVP_PKEY_CTX_free(pctx);

    /* 2. a fresh digest-sign context per call */
    t0 = user_s();
    do {
        int i;
        for (i = 0; i < 20; i++) {
            EVP_MD_CTX *ctx = EVP_MD_CTX_new();
            EVP_PKEY_CTX *pc = NULL;
            siglen = sizeof sig;
            if (!ctx || EVP_DigestSignInit(ctx, &pc, EVP_sha256(), NULL, key) != 1 ||
                EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) != 1 ||
                EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)MSG, sizeof MSG - 1) != 1)
                return 1;
            EVP_MD_CTX_free(ctx);
        }
        n2 += 20;
    } while ((t = user_s()) - t0 < secs);
    r2 = n2 / (t - t0);

    printf("{\"pkey_sign_per_user_s\":%.1f,\"digest_sign_per_user_s\":%.1f,"
           "\"pkey_sign_n\":%ld,\"digest_sign_n\":%ld}\n", r1, r2, n1, n2);
    EVP_PKEY_free(key);
    return 0;
}
