/*
 * wxpay.core: the Lua binding.  It only marshals between Lua and the plain C
 * core (wx_core.h); no logic of its own beyond building the two strings the
 * protocol signs, so that one call costs one C call.  Nothing here calls back
 * into Lua or yields.
 */
#define _GNU_SOURCE
#include "wx_core.h"
#include "compat.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include <openssl/err.h>

#define WX_VERSION "0.1.0"
#define MT_PRIVKEY "wxpay.PrivateKey"
#define MT_PUBKEY "wxpay.PublicKey"
#define MT_SESSION "wxpay.Session"
#define MT_MULTI "wxpay.Multi"

typedef struct {
    wx_key *k;
} lkey;

/* scratch: the "Name: value" lines built from a {Name = value} table */
typedef struct {
    char *buf;
    size_t cap;
} scratch;

typedef struct {
    wx_session *s;
    scratch sc;
} lsession;

typedef struct {
    wx_multi *m;
    scratch sc;
} lmulti;

/* ---- helpers ------------------------------------------------------------ */

static int push_fail(lua_State *L, const char *msg)
{
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* A number argument that must be a whole number (integral: no fraction)
 * or any number (not integral, truncated toward zero) in [lo, hi].  NaN,
 * infinities and values out of range raise: casting them to an integer type
 * is undefined behaviour in C. */
static double check_range(lua_State *L, int i, double lo, double hi, int integral,
                          const char *what)
{
    lua_Number v;
    if (!lua_isnumber(L, i))
        luaL_argerror(L, i, lua_pushfstring(L, "%s must be a number, got %s", what,
                                            luaL_typename(L, i)));
    v = lua_tonumber(L, i);
    if (!(v >= lo && v <= hi) || (integral && v != (lua_Number)(long long)v))
        luaL_argerror(L, i, lua_pushfstring(L, "%s must be %s from %f to %f", what,
                                            integral ? "a whole number" : "a number",
                                            (double)lo, (double)hi));
    return (double)v;
}

static long long check_ll(lua_State *L, int i, double lo, double hi, const char *what)
{
    return (long long)check_range(L, i, lo, hi, 0, what);
}

static long long opt_ll(lua_State *L, int i, long long def, double lo, double hi,
                        const char *what)
{
    return lua_isnoneornil(L, i) ? def : check_ll(L, i, lo, hi, what);
}

#define MAX_MS 2147483647.0     /* milliseconds: what poll() and libcurl take */
#define MAX_BODY 1073741824.0   /* 1 GiB */

static lkey *check_key(lua_State *L, int i, const char *mt)
{
    lkey *k = luaL_checkudata(L, i, mt);
    if (!k->k) luaL_error(L, "attempt to use a closed %s", mt);
    return k;
}

static int key_close(lua_State *L, const char *mt)
{
    lkey *k = luaL_checkudata(L, 1, mt);
    if (k->k) {
        wx_key_free(k->k);
        k->k = NULL;
    }
    return 0;
}

static void key_tostring(lua_State *L, const char *mt)
{
    lkey *k = luaL_checkudata(L, 1, mt);
    if (!k->k)
        lua_pushfstring(L, "%s{closed}", mt);
    else
        lua_pushfstring(L, "%s{RSA-%d}", mt, wx_key_bits(k->k));
}

static lkey *new_key(lua_State *L, const char *mt)
{
    lkey *k = lua_newuserdata(L, sizeof *k);
    k->k = NULL;
    luaL_setmetatable(L, mt);
    return k;
}

/* Wraps pkey (ownership moves) into the key on top of the stack; returns
 * 0, or pushes nil, err and returns 2. */
static int set_key(lua_State *L, lkey *k, EVP_PKEY *pkey, int signing)
{
    const char *err = NULL;
    k->k = wx_key_new(pkey, signing, &err);
    if (!k->k) return push_fail(L, err);
    return 0;
}

/* ---- private key ---------------------------------------------------------- */

static int l_load_private_key(lua_State *L)
{
    size_t len;
    const char *pem = luaL_checklstring(L, 1, &len);
    const char *err = NULL;
    lkey *k = new_key(L, MT_PRIVKEY);
    EVP_PKEY *pkey = wx_private_key_from_pem(pem, len, &err);
    if (!pkey) return push_fail(L, err);
    return set_key(L, k, pkey, 1) ? 2 : 1;
}

/* load_private_key_file(path) -> PrivateKey, mode | nil, err
 * mode: the file's permission bits (warn when mode % 64 ~= 0). */
static int l_load_private_key_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    char err[512];
    unsigned mode = 0;
    lkey *k = new_key(L, MT_PRIVKEY);
    EVP_PKEY *pkey = wx_private_key_from_file(path, &mode, err, sizeof err);
    if (!pkey) return push_fail(L, err);
    if (set_key(L, k, pkey, 1)) return 2;
    lua_pushinteger(L, (lua_Integer)mode);
    return 2;
}

static int l_priv_sign(lua_State *L)
{
    lkey *k = check_key(L, 1, MT_PRIVKEY);
    size_t len;
    const char *msg = luaL_checklstring(L, 2, &len);
    char out[1400];
    const char *err = NULL;
    long n = wx_key_sign_b64(k->k, msg, len, out, &err);
    if (n < 0) return push_fail(L, err);
    lua_pushlstring(L, out, (size_t)n);
    return 1;
}

static const wx_part NL = { "\n", 1 };

/* Characters allowed inside the quoted Authorization parameters we build. */
static int safe_token(const char *s, size_t n)
{
    size_t i;
    if (n == 0 || n > 64) return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') ||
              (c >= 'a' && c <= 'z') || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/*
 * key:authorization(mchid, serial_no, method, target, body [, ts, nonce])
 *   -> "WECHATPAY2-SHA256-RSA2048 mchid=...", timestamp, nonce
 * The string to sign is METHOD\nTARGET\nTS\nNONCE\nBODY\n (protocol.md §2).
 */
static int l_priv_authorization(lua_State *L)
{
    lkey *k = check_key(L, 1, MT_PRIVKEY);
    size_t ml, sl, mel, tl, bl, nl = 32;
    const char *mchid = luaL_checklstring(L, 2, &ml);
    const char *serial = luaL_checklstring(L, 3, &sl);
    const char *method = luaL_checklstring(L, 4, &mel);
    const char *target = luaL_checklstring(L, 5, &tl);
    const char *body = luaL_optlstring(L, 6, "", &bl);
    long long ts = opt_ll(L, 7, (long long)time(NULL), 0, 99999999999.0, "timestamp");
    char nonce[33], tsbuf[32], sig[1400];
    const char *err = NULL;
    luaL_Buffer b;
    long n;

    if (!safe_token(mchid, ml)) return luaL_argerror(L, 2, "mchid must be 1-64 of [0-9A-Za-z_-]");
    if (!safe_token(serial, sl)) return luaL_argerror(L, 3, "serial_no must be 1-64 of [0-9A-Za-z_-]");
    if (!safe_token(method, mel)) return luaL_argerror(L, 4, "bad method");
    if (memchr(target, '\n', tl) || memchr(target, '\r', tl))
        return luaL_argerror(L, 5, "the request target holds a line break");
    if (lua_isnoneornil(L, 8)) {
        if (wx_nonce(nonce, 32)) return push_fail(L, "the CSPRNG failed");
        nonce[32] = '\0';
    } else {
        const char *u = luaL_checklstring(L, 8, &nl);
        if (!safe_token(u, nl) || nl > 32) return luaL_argerror(L, 8, "nonce must be 1-32 of [0-9A-Za-z_-]");
        memcpy(nonce, u, nl);
        nonce[nl] = '\0';
    }
    snprintf(tsbuf, sizeof tsbuf, "%lld", ts);

    /* the string to sign, hashed from its parts (never copied together) */
    {
        wx_part p[10];
        p[0].data = method; p[0].len = mel;
        p[2].data = target; p[2].len = tl;
        p[4].data = tsbuf;  p[4].len = strlen(tsbuf);
        p[6].data = nonce;  p[6].len = nl;
        p[8].data = body;   p[8].len = bl;
        p[1] = p[3] = p[5] = p[7] = p[9] = NL;
        n = wx_key_sign_parts_b64(k->k, p, 10, sig, &err);
    }
    if (n < 0) return push_fail(L, err);

    luaL_buffinit(L, &b);
    luaL_addstring(&b, "WECHATPAY2-SHA256-RSA2048 mchid=\"");
    luaL_addlstring(&b, mchid, ml);
    luaL_addstring(&b, "\",nonce_str=\"");
    luaL_addlstring(&b, nonce, nl);
    luaL_addstring(&b, "\",signature=\"");
    luaL_addlstring(&b, sig, (size_t)n);
    luaL_addstring(&b, "\",timestamp=\"");
    luaL_addstring(&b, tsbuf);
    luaL_addstring(&b, "\",serial_no=\"");
    luaL_addlstring(&b, serial, sl);
    luaL_addchar(&b, '"');
    luaL_pushresult(&b);
    lua_pushstring(L, tsbuf);
    lua_pushlstring(L, nonce, nl);
    return 3;
}

static int l_priv_close(lua_State *L) { return key_close(L, MT_PRIVKEY); }
static int l_priv_tostring(lua_State *L) { key_tostring(L, MT_PRIVKEY); return 1; }

/* ---- public keys and certificates ----------------------------------------- */

static int l_load_public_key(lua_State *L)
{
    size_t len;
    const char *pem = luaL_checklstring(L, 1, &len);
    const char *err = NULL;
    lkey *k = new_key(L, MT_PUBKEY);
    EVP_PKEY *pkey = wx_public_key_from_pem(pem, len, &err);
    if (!pkey) return push_fail(L, err);
    return set_key(L, k, pkey, 0) ? 2 : 1;
}

/* -> PublicKey, {serial_no=, not_before=, not_after=} */
static int l_load_certificate(lua_State *L)
{
    size_t len;
    const char *pem = luaL_checklstring(L, 1, &len);
    const char *err = NULL;
    wx_cert_info info;
    lkey *k = new_key(L, MT_PUBKEY);
    EVP_PKEY *pkey = wx_cert_from_pem(pem, len, &info, &err);
    if (!pkey) return push_fail(L, err);
    if (set_key(L, k, pkey, 0)) return 2;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, info.serial);
    lua_setfield(L, -2, "serial_no");
    lua_pushnumber(L, (lua_Number)info.not_before);
    lua_setfield(L, -2, "not_before");
    lua_pushnumber(L, (lua_Number)info.not_after);
    lua_setfield(L, -2, "not_after");
    return 2;
}

static int l_pub_verify(lua_State *L)
{
    lkey *k = check_key(L, 1, MT_PUBKEY);
    size_t ml, sl;
    const char *msg = luaL_checklstring(L, 2, &ml);
    const char *sig = luaL_checklstring(L, 3, &sl);
    lua_pushboolean(L, wx_key_verify_b64(k->k, msg, ml, sig, sl));
    return 1;
}

/* key:verify_response(timestamp, nonce, body, signature) -> boolean
 * over TIMESTAMP\nNONCE\nBODY\n (protocol.md §3). */
static int l_pub_verify_response(lua_State *L)
{
    lkey *k = check_key(L, 1, MT_PUBKEY);
    size_t tl, nl, bl, sl;
    const char *ts = luaL_checklstring(L, 2, &tl);
    const char *nonce = luaL_checklstring(L, 3, &nl);
    const char *body = luaL_checklstring(L, 4, &bl);
    const char *sig = luaL_checklstring(L, 5, &sl);
    wx_part p[6];
    p[0].data = ts;    p[0].len = tl;
    p[2].data = nonce; p[2].len = nl;
    p[4].data = body;  p[4].len = bl;
    p[1] = p[3] = p[5] = NL;
    lua_pushboolean(L, wx_key_verify_parts_b64(k->k, p, 6, sig, sl));
    return 1;
}

static int l_pub_close(lua_State *L) { return key_close(L, MT_PUBKEY); }
static int l_pub_tostring(lua_State *L) { key_tostring(L, MT_PUBKEY); return 1; }

/* ---- small pure functions ------------------------------------------------- */

static int l_nonce(lua_State *L)
{
    char buf[256];
    long long n = opt_ll(L, 1, 32, 1, sizeof buf, "length");
    if (wx_nonce(buf, (size_t)n)) return push_fail(L, "the CSPRNG failed");
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

static int l_b64encode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    char *out = malloc(wx_b64_encoded_size(n));
    size_t m;
    if (!out) return luaL_error(L, "out of memory");
    m = wx_b64_encode((const unsigned char *)s, n, out);
    lua_pushlstring(L, out, m);
    free(out);
    return 1;
}

/* -> string | nil (not canonical base64) */
static int l_b64decode(lua_State *L)
{
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned char *out = malloc(n / 4 * 3 + 1);
    long m;
    if (!out) return luaL_error(L, "out of memory");
    m = wx_b64_decode(s, n, out);
    if (m < 0) lua_pushnil(L);
    else lua_pushlstring(L, (const char *)out, (size_t)m);
    free(out);
    return 1;
}

/* aes_gcm_decrypt(key32, nonce, aad, ciphertext_b64) -> plaintext | nil, err */
static int l_aes_gcm_decrypt(lua_State *L)
{
    size_t kl, nl, al, cl;
    const char *key = luaL_checklstring(L, 1, &kl);
    const char *iv = luaL_checklstring(L, 2, &nl);
    const char *aad = luaL_checklstring(L, 3, &al);
    const char *ct64 = luaL_checklstring(L, 4, &cl);
    unsigned char *buf = malloc(cl / 4 * 3 * 2 + 2);
    unsigned char *ct, *out;
    const char *err = NULL;
    long ctn, n;
    if (!buf) return luaL_error(L, "out of memory");
    ct = buf;
    out = buf + cl / 4 * 3 + 1;
    ctn = wx_b64_decode(ct64, cl, ct);
    if (ctn < 0) {
        free(buf);
        return push_fail(L, "the ciphertext is not base64");
    }
    n = wx_aes256gcm_decrypt((const unsigned char *)key, kl,
                             (const unsigned char *)iv, nl,
                             (const unsigned char *)aad, al,
                             ct, (size_t)ctn, out, &err);
    if (n < 0) {
        free(buf);
        return push_fail(L, err);
    }
    lua_pushlstring(L, (const char *)out, (size_t)n);
    free(buf);
    return 1;
}

static int l_time(lua_State *L)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lua_pushnumber(L, (lua_Number)tv.tv_sec + tv.tv_usec / 1e6);
    return 1;
}

static int l_monotonic_ms(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6);
    return 1;
}

/* Blocks the calling thread: never used inside an nginx request (ngx.sleep). */
static int l_sleep_ms(lua_State *L)
{
    double ms = check_range(L, 1, -MAX_MS, MAX_MS, 0, "milliseconds");
    struct timespec ts;
    if (ms <= 0) return 0;
    ts.tv_sec = (time_t)(ms / 1000);
    ts.tv_nsec = (long)((ms - (lua_Number)ts.tv_sec * 1000) * 1e6);
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {}
    return 0;
}

/* file_mode(path) -> permission bits | nil, err  (key file hygiene checks) */
static int l_file_mode(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (stat(path, &st) != 0) return push_fail(L, strerror(errno));
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
    return 1;
}

/* ---- private files ------------------------------------------------------------ */

/* private_dir(path) -> true | nil, err */
static int l_private_dir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    char err[512];
    if (wx_private_dir(path, err, sizeof err)) return push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* read_private(path, max_bytes) -> data | nil, err  (never through a link) */
static int l_read_private(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t max = (size_t)check_ll(L, 2, 0, MAX_BODY, "max_bytes");
    char err[512], *data = NULL;
    size_t len = 0;
    if (wx_read_file(path, max, 1, &data, &len, NULL, err, sizeof err)) return push_fail(L, err);
    lua_pushlstring(L, data, len);
    free(data);
    return 1;
}

/* write_private(path, data) -> true | nil, err  (atomic, mode 0600) */
static int l_write_private(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    char err[512];
    if (wx_write_private(path, data, len, err, sizeof err)) return push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- HTTP session ------------------------------------------------------------ */

static long long field_ll(lua_State *L, int t, const char *k, long long def, double lo,
                          double hi)
{
    long long v = def;
    lua_getfield(L, t, k);
    if (!lua_isnil(L, -1)) {
        lua_Number x;
        if (!lua_isnumber(L, -1))
            luaL_error(L, "%s must be a number, got %s", k, luaL_typename(L, -1));
        x = lua_tonumber(L, -1);
        if (!(x >= lo && x <= hi))
            luaL_error(L, "%s must be a number from %f to %f", k, (lua_Number)lo, (lua_Number)hi);
        v = (long long)x;
    }
    lua_pop(L, 1);
    return v;
}

/* Reads {ca_file=?, proxy=?, connect_timeout_ms=, timeout_ms=, max_body=,
 * max_idle_s=}; the strings stay on the stack (the core copies them).
 * proxy: nil (no proxy, the environment ignored), "env" (the environment's
 * https_proxy & co.) or a proxy URL. */
static void session_opts(lua_State *L, wx_session_opts *o)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    memset(o, 0, sizeof *o);
    lua_getfield(L, 1, "ca_file");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "ca_file must be a string");
    o->ca_file = lua_tostring(L, -1);
    lua_getfield(L, 1, "proxy");
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "proxy must be nil, \"env\" or a proxy URL");
    o->proxy = lua_tostring(L, -1);
    if (o->proxy && (o->proxy[0] == '\0' || strlen(o->proxy) != lua_rawlen(L, -1)))
        luaL_error(L, "proxy must be nil, \"env\" or a proxy URL");
    o->connect_timeout_ms = (long)field_ll(L, 1, "connect_timeout_ms", 3000, 0, MAX_MS);
    o->timeout_ms = (long)field_ll(L, 1, "timeout_ms", 10000, 0, MAX_MS);
    o->max_body = (size_t)field_ll(L, 1, "max_body", 1L << 20, 0, MAX_BODY);
    o->max_idle_s = (long)field_ll(L, 1, "max_idle_s", 7, 0, 86400);
}

/* multi{...session options..., max_parallel=16} */
static int l_multi(lua_State *L)
{
    wx_session_opts o;
    const char *err = NULL;
    lmulti *u;
    long n;
    session_opts(L, &o);
    n = (long)field_ll(L, 1, "max_parallel", 16, 1, 256);
    u = lua_newuserdata(L, sizeof *u);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, MT_MULTI);
    u->m = wx_multi_new(&o, (int)n, &err);
    if (!u->m) return push_fail(L, err);
    return 1;
}

/* session{ca_file=?, proxy=?, connect_timeout_ms=, timeout_ms=, max_body=, max_idle_s=} */
static int l_session(lua_State *L)
{
    wx_session_opts o;
    const char *err = NULL;
    lsession *u;
    session_opts(L, &o);
    u = lua_newuserdata(L, sizeof *u);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, MT_SESSION);
    u->s = wx_session_new(&o, &err); /* copies ca_file and proxy */
    if (!u->s) return push_fail(L, err);
    return 1;
}

/* pool_count() -> live connection pools of this process (tests, diagnostics) */
static int l_pool_count(lua_State *L)
{
    lua_pushinteger(L, wx_http_pool_count());
    return 1;
}

static const char *const http_codes[] = {
    NULL, "NETWORK_ERROR", "TIMEOUT", "TLS_ERROR", "BAD_RESPONSE", "NETWORK_ERROR"
};

#define MAX_HEADERS 32

static int is_token(const char *s, size_t n)
{
    size_t i;
    if (n == 0) return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c && strchr("!#$%&'*+-.^_`|~", c))))
            return 0;
    }
    return 1;
}

static int bad_value(const char *v, size_t n)
{
    return memchr(v, '\n', n) || memchr(v, '\r', n) || memchr(v, '\0', n);
}

/* The headers at index i: an array of "Name: value" strings, or a table
 * {Name = value} (its lines are built in the object's scratch buffer, no
 * Lua string per line).  Fills hdrs (at most MAX_HEADERS); misuse raises. */
static size_t check_headers(lua_State *L, int i, const char **hdrs, scratch *sc)
{
    size_t nh = 0, k, total = 0, o = 0;
    luaL_checktype(L, i, LUA_TTABLE);
    nh = lua_rawlen(L, i);
    if (nh > 0) {
        luaL_argcheck(L, nh <= MAX_HEADERS, i, "at most 32 headers");
        for (k = 0; k < nh; k++) {
            size_t hl;
            lua_rawgeti(L, i, (int)k + 1);
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_argerror(L, i, "headers must be strings");
            hdrs[k] = lua_tolstring(L, -1, &hl);
            if (bad_value(hdrs[k], hl))
                luaL_argerror(L, i, "headers must be strings without CR, LF or NUL");
            lua_pop(L, 1); /* still referenced by the table */
        }
        return nh;
    }
    /* {Name = value}: check and measure, then build */
    lua_pushnil(L);
    while (lua_next(L, i) != 0) {
        size_t kl, vl;
        const char *key, *val;
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            luaL_argerror(L, i, "header names and values must be strings");
        key = lua_tolstring(L, -2, &kl);
        val = lua_tolstring(L, -1, &vl);
        if (!is_token(key, kl)) luaL_argerror(L, i, "bad header name");
        if (bad_value(val, vl)) luaL_argerror(L, i, "header values must not hold CR, LF or NUL");
        if (++nh > MAX_HEADERS) luaL_argerror(L, i, "at most 32 headers");
        total += kl + vl + 3;
        lua_pop(L, 1);
    }
    if (total > sc->cap) {
        char *p = realloc(sc->buf, total);
        if (!p) luaL_error(L, "out of memory");
        sc->buf = p;
        sc->cap = total;
    }
    k = 0;
    lua_pushnil(L);
    while (lua_next(L, i) != 0) {
        size_t kl, vl;
        const char *key = lua_tolstring(L, -2, &kl);
        const char *val = lua_tolstring(L, -1, &vl);
        hdrs[k++] = sc->buf + o;
        memcpy(sc->buf + o, key, kl); o += kl;
        sc->buf[o++] = ':'; sc->buf[o++] = ' ';
        memcpy(sc->buf + o, val, vl); o += vl;
        sc->buf[o++] = '\0';
        lua_pop(L, 1);
    }
    return k;
}

/* Pushes a table {lowercase name = value} of r's headers (first one wins). */
static void push_headers(lua_State *L, const wx_response *r)
{
    size_t p = 0;
    lua_createtable(L, 0, 12);
    while (p < r->headers.len) {
        const char *name = r->headers.data + p;
        size_t n = strlen(name);
        const char *val = name + n + 1;
        size_t vn = strlen(val);
        lua_pushlstring(L, name, n);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, val, vn);
            lua_rawset(L, -3);
        } else {
            lua_pop(L, 2);
        }
        p += n + 1 + vn + 1;
    }
}

static void push_body(lua_State *L, const wx_response *r)
{
    lua_pushlstring(L, r->body.data ? r->body.data : "", r->body.len);
}

/*
 * session:request(method, url, headers, body?, timeout_ms?, connect_timeout_ms?, max_body?)
 *   -> status, headers{lowercase name = value}, body
 *   |  nil, code, message, sent
 * headers: {"Name: value", ...} or {Name = value}; nil or 0 for a number
 * means the session's default.
 */
static int l_session_request(lua_State *L)
{
    lsession *u = luaL_checkudata(L, 1, MT_SESSION);
    const char *method = luaL_checkstring(L, 2);
    const char *url = luaL_checkstring(L, 3);
    const char *hdrs[MAX_HEADERS];
    size_t bl = 0, nh;
    const char *body;
    long tmo, ctmo;
    size_t maxb;
    wx_response r;
    if (!u->s) return luaL_error(L, "attempt to use a closed " MT_SESSION);
    nh = check_headers(L, 4, hdrs, &u->sc);
    body = luaL_optlstring(L, 5, NULL, &bl);
    tmo = (long)opt_ll(L, 6, 0, 0, MAX_MS, "timeout_ms");
    ctmo = (long)opt_ll(L, 7, 0, 0, MAX_MS, "connect_timeout_ms");
    maxb = (size_t)opt_ll(L, 8, 0, 0, MAX_BODY, "max_body");
    wx_session_perform(u->s, method, url, hdrs, nh, body, bl, tmo, ctmo, maxb, &r);
    if (r.err != WX_HTTP_OK) {
        lua_pushnil(L);
        lua_pushstring(L, http_codes[r.err]);
        lua_pushstring(L, r.errmsg);
        lua_pushboolean(L, r.sent);
        wx_response_free(&r);
        return 4;
    }
    lua_pushinteger(L, (lua_Integer)r.status);
    push_headers(L, &r);
    push_body(L, &r);
    wx_response_free(&r);
    return 3;
}

/* ---- multi ------------------------------------------------------------------ */

static lmulti *check_multi(lua_State *L)
{
    lmulti *u = luaL_checkudata(L, 1, MT_MULTI);
    if (!u->m) luaL_error(L, "attempt to use a closed " MT_MULTI);
    return u;
}

/* multi:add(id, method, url, headers, body?, timeout_ms?, connect_timeout_ms?, max_body?)
 *   -> true | nil, err   (err also for an id already in flight or not taken) */
static int l_multi_add(lua_State *L)
{
    lmulti *u = check_multi(L);
    long id = (long)check_range(L, 2, -9007199254740992.0, 9007199254740992.0, 1, "id");
    const char *method = luaL_checkstring(L, 3);
    const char *url = luaL_checkstring(L, 4);
    const char *hdrs[MAX_HEADERS];
    size_t bl = 0, nh = check_headers(L, 5, hdrs, &u->sc);
    const char *body = luaL_optlstring(L, 6, NULL, &bl);
    long tmo = (long)opt_ll(L, 7, 0, 0, MAX_MS, "timeout_ms");
    long ctmo = (long)opt_ll(L, 8, 0, 0, MAX_MS, "connect_timeout_ms");
    size_t maxb = (size_t)opt_ll(L, 9, 0, 0, MAX_BODY, "max_body");
    const char *err = NULL;
    if (wx_multi_add(u->m, id, method, url, hdrs, nh, body, bl, tmo, ctmo, maxb, &err))
        return push_fail(L, err);
    lua_pushboolean(L, 1);
    return 1;
}

/* multi:run(timeout_ms?) -> list of {id, status, headers, body} | {id, code, message, sent}
 *   | nil, err (a handle with transfers in flight across fork()) */
static int l_multi_run(lua_State *L)
{
    lmulti *u = check_multi(L);
    long tmo = (long)opt_ll(L, 2, 0, 0, MAX_MS, "timeout_ms");
    long id;
    wx_response r;
    int n = 0;
    const char *err = NULL;
    if (wx_multi_run(u->m, tmo, &err) < 0) return push_fail(L, err);
    lua_newtable(L);
    while (wx_multi_next(u->m, &id, &r)) {
        lua_createtable(L, 0, 4);
        lua_pushinteger(L, (lua_Integer)id);
        lua_setfield(L, -2, "id");
        if (r.err == WX_HTTP_OK) {
            lua_pushinteger(L, (lua_Integer)r.status);
            lua_setfield(L, -2, "status");
            push_headers(L, &r);
            lua_setfield(L, -2, "headers");
            push_body(L, &r);
            lua_setfield(L, -2, "body");
        } else {
            lua_pushstring(L, http_codes[r.err]);
            lua_setfield(L, -2, "code");
            lua_pushstring(L, r.errmsg);
            lua_setfield(L, -2, "message");
            lua_pushboolean(L, r.sent);
            lua_setfield(L, -2, "sent");
        }
        wx_response_free(&r);
        lua_rawseti(L, -2, ++n);
    }
    return 1;
}

/* multi:abort() -> nothing: every transfer, in flight or finished and not
 * taken, is removed and freed; the handle is empty and reusable. */
static int l_multi_abort(lua_State *L)
{
    lmulti *u = check_multi(L);
    wx_multi_abort_all(u->m);
    return 0;
}

static int l_multi_active(lua_State *L)
{
    lmulti *u = check_multi(L);
    lua_pushinteger(L, wx_multi_active(u->m));
    lua_pushinteger(L, wx_multi_capacity(u->m));
    return 2;
}

static int l_multi_close(lua_State *L)
{
    lmulti *u = luaL_checkudata(L, 1, MT_MULTI);
    if (u->m) {
        wx_multi_free(u->m);
        u->m = NULL;
    }
    free(u->sc.buf);
    u->sc.buf = NULL;
    u->sc.cap = 0;
    return 0;
}

static int l_multi_tostring(lua_State *L)
{
    lmulti *u = luaL_checkudata(L, 1, MT_MULTI);
    if (u->m)
        lua_pushfstring(L, MT_MULTI "{active=%d, capacity=%d}", wx_multi_active(u->m),
                        wx_multi_capacity(u->m));
    else
        lua_pushliteral(L, MT_MULTI "{closed}");
    return 1;
}

static int l_session_close(lua_State *L)
{
    lsession *u = luaL_checkudata(L, 1, MT_SESSION);
    if (u->s) {
        wx_session_free(u->s);
        u->s = NULL;
    }
    free(u->sc.buf);
    u->sc.buf = NULL;
    u->sc.cap = 0;
    return 0;
}

static int l_session_tostring(lua_State *L)
{
    lsession *u = luaL_checkudata(L, 1, MT_SESSION);
    lua_pushfstring(L, MT_SESSION "{%s}", u->s ? "open" : "closed");
    return 1;
}

/* ---- module ---------------------------------------------------------------- */

static void new_class(lua_State *L, const char *name, const luaL_Reg *methods,
                      lua_CFunction close, lua_CFunction tostr)
{
    luaL_newmetatable(L, name);
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, tostr);
    lua_setfield(L, -2, "__tostring");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "close");
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "locked");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

__attribute__((visibility("default"))) int luaopen_wxpay_core(lua_State *L)
{
    static const luaL_Reg priv_methods[] = {
        {"sign", l_priv_sign},
        {"authorization", l_priv_authorization},
        {NULL, NULL}};
    static const luaL_Reg pub_methods[] = {
        {"verify", l_pub_verify},
        {"verify_response", l_pub_verify_response},
        {NULL, NULL}};
    static const luaL_Reg session_methods[] = {
        {"request", l_session_request},
        {NULL, NULL}};
    static const luaL_Reg multi_methods[] = {
        {"add", l_multi_add},
        {"run", l_multi_run},
        {"abort", l_multi_abort},
        {"active", l_multi_active},
        {NULL, NULL}};
    static const luaL_Reg funcs[] = {
        {"load_private_key", l_load_private_key},
        {"load_private_key_file", l_load_private_key_file},
        {"load_public_key", l_load_public_key},
        {"load_certificate", l_load_certificate},
        {"nonce", l_nonce},
        {"b64encode", l_b64encode},
        {"b64decode", l_b64decode},
        {"aes_gcm_decrypt", l_aes_gcm_decrypt},
        {"session", l_session},
        {"multi", l_multi},
        {"time", l_time},
        {"monotonic_ms", l_monotonic_ms},
        {"sleep_ms", l_sleep_ms},
        {"file_mode", l_file_mode},
        {"private_dir", l_private_dir},
        {"read_private", l_read_private},
        {"write_private", l_write_private},
        {"pool_count", l_pool_count},
        {NULL, NULL}};

    if (wx_http_global_init()) return luaL_error(L, "curl_global_init failed");
    new_class(L, MT_PRIVKEY, priv_methods, l_priv_close, l_priv_tostring);
    new_class(L, MT_PUBKEY, pub_methods, l_pub_close, l_pub_tostring);
    new_class(L, MT_SESSION, session_methods, l_session_close, l_session_tostring);
    new_class(L, MT_MULTI, multi_methods, l_multi_close, l_multi_tostring);
    luaL_newlib(L, funcs);
    lua_pushliteral(L, WX_VERSION);
    lua_setfield(L, -2, "_VERSION");
    lua_pushstring(L, wx_http_curl_version());
    lua_setfield(L, -2, "curl_version");
    lua_pushstring(L, OpenSSL_version(OPENSSL_VERSION));
    lua_setfield(L, -2, "openssl_version");
    return 1;
}
