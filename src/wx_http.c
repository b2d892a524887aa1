/* wxpay C core: HTTPS over libcurl.  Sessions and multi handles with the
 * same TLS settings share one process-wide connection pool (a CURLSH). */
#define _GNU_SOURCE
#include "wx_core.h"

#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>


/* ---- header parsing ----------------------------------------------------- */

/* RFC 7230 token characters, as a bitmap (one lookup per header name byte,
 * not isalnum + strchr): bit c of tchar_map[c >> 5]. */
static const unsigned int tchar_map[8] = {
    0x00000000u,
    0x03ff6cfau,   /* ! # $ % & ' * + - . 0-9 */
    0xc7fffffeu,   /* A-Z ^ _ */
    0x57ffffffu,   /* ` a-z | ~ */
    0, 0, 0, 0
};

static int is_tchar(unsigned char c)
{
    return (tchar_map[c >> 5] >> (c & 31)) & 1u;
}

int wx_parse_header_line(const char *line, size_t len,
                         const char **name, size_t *name_len,
                         const char **value, size_t *value_len, int *status)
{
    size_t i = 0, v, e;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
    if (len == 0) return 0;
    if (len >= 12 && memcmp(line, "HTTP/", 5) == 0) {
        /* "HTTP/1.1 204 No Content", "HTTP/2 200" */
        const char *sp = memchr(line, ' ', len);
        size_t p;
        int st = 0, digits = 0;
        if (!sp) return -1;
        p = (size_t)(sp - line) + 1;
        while (p < len && digits < 3 && isdigit((unsigned char)line[p])) {
            st = st * 10 + (line[p] - '0');
            p++, digits++;
        }
        if (digits != 3 || (p < len && line[p] != ' ')) return -1;
        *status = st;
        return 2;
    }
    while (i < len && is_tchar((unsigned char)line[i])) i++;
    if (i == 0 || i >= len || line[i] != ':') return -1;
    v = i + 1;
    while (v < len && (line[v] == ' ' || line[v] == '\t')) v++;
    e = len;
    while (e > v && (line[e - 1] == ' ' || line[e - 1] == '\t')) e--;
    for (size_t k = v; k < e; k++)
        if (line[k] == '\0') return -1;
    *name = line;
    *name_len = i;
    *value = line + v;
    *value_len = e - v;
    return 1;
}

/* ---- callbacks ---------------------------------------------------------- */

typedef struct exchange {
    wx_response *r;
    size_t max_body;
    int too_large;
    int oom;
    int head_done; /* the blank line ending the header section was seen */
    int idempotent; /* GET: libcurl may resend it on a fresh connection */
    int attempts;   /* times libcurl was about to send this request */
    int resend_refused;
} exchange;

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    exchange *x = ud;
    size_t len = size * n, nl, vl;
    const char *name, *value;
    int st = 0;
    switch (wx_parse_header_line(p, len, &name, &nl, &value, &vl, &st)) {
    case 2: /* a new response (after 100 Continue): forget earlier headers */
        x->r->headers.len = 0;
        x->head_done = 0;
        break;
    case 0: /* the blank line: the header section is complete */
        x->head_done = 1;
        break;
    case 1: {
        char lower[128];
        size_t i;
        if (nl >= sizeof lower) break; /* no header we read is that long */
        for (i = 0; i < nl; i++) {
            unsigned char c = (unsigned char)name[i];
            lower[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        lower[nl] = '\0';
        if (wx_buf_append(&x->r->headers, lower, nl + 1) ||
            wx_buf_append(&x->r->headers, value, vl) ||
            wx_buf_append(&x->r->headers, "", 1)) {
            x->oom = 1;
            return 0;
        }
        break;
    }
    default:
        break; /* blank line or a line we do not read */
    }
    return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    exchange *x = ud;
    size_t len = size * n;
    if (x->r->body.len + len > x->max_body) {
        x->too_large = 1;
        return 0;
    }
    if (wx_buf_append(&x->r->body, p, len)) {
        x->oom = 1;
        return 0;
    }
    return len;
}

/* libcurl silently resends a request whose reused connection closed before
 * any answer byte ("Connection died, retrying a fresh connect"), POSTs with
 * CURLOPT_POSTFIELDS included.  The server may have acted on the first one:
 * a non-idempotent request is never sent twice; the caller gets a network
 * error with sent = true and decides (query, then retry).  Called before
 * every attempt to send. */
static int on_prereq(void *ud, char *ip, char *lip, int port, int lport)
{
    exchange *x = ud;
    (void)ip; (void)lip; (void)port; (void)lport;
    if (++x->attempts > 1 && !x->idempotent) {
        x->resend_refused = 1;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}

/* ---- header lists built in place ----------------------------------------- */

/* The request's header lines as a curl_slist whose nodes and text live in
 * two buffers of ours that only grow: no allocation per request, and nothing
 * rebuilt when the lines are the ones of the previous request.  libcurl only
 * reads CURLOPT_HTTPHEADER lists; it never frees or keeps them. */
typedef struct hdrlist {
    struct curl_slist *nodes;
    size_t n, ncap;
    char *text;
    size_t tcap;
} hdrlist;

static int hdrlist_same(const hdrlist *l, const char *const *h, size_t nh)
{
    size_t i;
    if (l->n != nh + 1) return 0;
    for (i = 0; i < nh; i++)
        if (strcmp(l->nodes[i].data, h[i]) != 0) return 0;
    return 1;
}

/* headers[0..nh) and, last, "Expect:" (no 100-continue round trip). */
static int hdrlist_set(hdrlist *l, const char *const *h, size_t nh)
{
    static const char expect[] = "Expect:";
    size_t i, total = sizeof expect, o = 0, n = nh + 1;
    if (hdrlist_same(l, h, nh)) return 0;
    for (i = 0; i < nh; i++) total += strlen(h[i]) + 1;
    if (n > l->ncap) {
        struct curl_slist *p = realloc(l->nodes, n * sizeof *p);
        if (!p) return -1;
        l->nodes = p;
        l->ncap = n;
    }
    if (total > l->tcap) {
        char *p = realloc(l->text, total);
        if (!p) return -1;
        l->text = p;
        l->tcap = total;
    }
    for (i = 0; i < n; i++) {
        const char *src = i < nh ? h[i] : expect;
        size_t k = strlen(src) + 1;
        memcpy(l->text + o, src, k);
        l->nodes[i].data = l->text + o;
        l->nodes[i].next = i + 1 < n ? &l->nodes[i + 1] : NULL;
        o += k;
    }
    l->n = n;
    return 0;
}

static void hdrlist_free(hdrlist *l)
{
    free(l->nodes);
    free(l->text);
    memset(l, 0, sizeof *l);
}

/* ---- transfers: one easy handle, its request and its answer ------------- */

typedef struct wx_xfer {
    CURL *easy;
    hdrlist hl;
    exchange x;
    wx_response r;
    char *body;               /* multi only: a copy of the request body */
    long id;                  /* multi only: the caller's id */
    int busy;                 /* multi only: in flight, or finished and not taken */
    int added;                /* in a curl multi handle */
    char errbuf[CURL_ERROR_SIZE];
} wx_xfer;

#define MAX_WATCH 16

typedef struct sockwatch {
    curl_socket_t fd;
    int what;                 /* CURL_POLL_IN / _OUT / _INOUT */
} sockwatch;

struct wx_session {
    wx_session_opts o;
    char *ca_file, *proxy;
    wx_share *share;
    CURLM *multi;             /* ours, driven through curl_multi_socket_action */
    sockwatch watch[MAX_WATCH];
    int nwatch;
    long long deadline;       /* libcurl's timer, monotonic ms; -1: none */
    wx_xfer t;
};

struct wx_multi {
    wx_session_opts o;
    char *ca_file, *proxy;
    wx_share *share;
    CURLM *multi;
    wx_xfer *slots;
    int nslots, active;
    int *done;                /* finished slot indexes, not yet taken */
    int ndone;
};

static int global_done;

int wx_http_global_init(void)
{
    if (global_done) return 0;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return -1;
    global_done = 1;
    return 0;
}

const char *wx_http_curl_version(void)
{
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    return v && v->version ? v->version : "unknown";
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* proxy NULL: none, and the environment is never read (CURLOPT_PROXY "",
 * CURLOPT_NOPROXY "" also spare libcurl its getenv calls per transfer);
 * WX_PROXY_ENV: libcurl's default, the environment's https_proxy & co.;
 * anything else: that proxy, whatever the environment says. */
static int set_proxy(CURL *e, const char *proxy)
{
    if (proxy && strcmp(proxy, WX_PROXY_ENV) == 0) return 0;
    return curl_easy_setopt(e, CURLOPT_PROXY, proxy ? proxy : "") != CURLE_OK ||
           curl_easy_setopt(e, CURLOPT_NOPROXY, "") != CURLE_OK;
}

/* The options every transfer has: HTTPS only, verification on, HTTP/1.1,
 * connections not reused after max_idle_s (WeChat closes them at 8 s); with
 * ca_file, exactly that file is trusted (no CA directory either). */
static int xfer_init(wx_xfer *t, const wx_session_opts *o, wx_share *share)
{
    CURL *e = t->easy = curl_easy_init();
    if (!e) return -1;
    if (curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https") ||
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) ||
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) ||
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) ||
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) ||
        curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, o->max_idle_s > 0 ? o->max_idle_s : 7L) ||
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) ||
        curl_easy_setopt(e, CURLOPT_HEADERDATA, &t->x) ||
        curl_easy_setopt(e, CURLOPT_WRITEDATA, &t->x) ||
        curl_easy_setopt(e, CURLOPT_PRIVATE, t) ||
        curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq) ||
        curl_easy_setopt(e, CURLOPT_PREREQDATA, &t->x) ||
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf) ||
        (o->ca_file && (curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file) ||
                        curl_easy_setopt(e, CURLOPT_CAPATH, NULL))) ||
        set_proxy(e, o->proxy) ||
        (share && curl_easy_setopt(e, CURLOPT_SHARE, wx_pool_curlsh(share))))
        return -1;
    return 0;
}

/* Detaches the request's body from the handle (the caller's buffer, or the
 * multi's copy, which is freed); the handle, its header buffers and its
 * connection stay for the next request. */
static void xfer_release(wx_xfer *t)
{
    if (t->easy) curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, NULL);
    free(t->body);
    t->body = NULL;
}

static void xfer_cleanup(wx_xfer *t)
{
    xfer_release(t);
    if (t->easy) curl_easy_cleanup(t->easy);  /* also leaves its pool */
    t->easy = NULL;
    hdrlist_free(&t->hl);
    wx_response_free(&t->r);
}

void wx_response_free(wx_response *r)
{
    wx_buf_free(&r->headers);
    wx_buf_free(&r->body);
}

static int classify(CURLcode rc, const exchange *x, int *sent)
{
    switch (rc) {
    case CURLE_OK:
        return WX_HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return WX_HTTP_TIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
        *sent = 0;
        return WX_HTTP_NETWORK;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
        *sent = 0;
        return WX_HTTP_TLS;
    case CURLE_WRITE_ERROR:
        return x->oom ? WX_HTTP_INTERNAL : WX_HTTP_BAD;
    case CURLE_PARTIAL_FILE:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return WX_HTTP_BAD;
    case CURLE_OUT_OF_MEMORY:
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_BAD_FUNCTION_ARGUMENT:
        *sent = 0;
        return WX_HTTP_INTERNAL;
    default: /* GOT_NOTHING, SEND_ERROR, RECV_ERROR and the rest */
        return WX_HTTP_NETWORK;
    }
}

/* Sets up one request on t; 0, or -1 (out of memory) with nothing held. */
static int xfer_prepare(wx_xfer *t, const wx_session_opts *o, const char *method,
                        const char *url, const char *const *headers, size_t nheaders,
                        const char *body, size_t body_len,
                        long timeout_ms, long connect_timeout_ms, size_t max_body)
{
    CURL *e = t->easy;

    memset(&t->r, 0, sizeof t->r);
    memset(&t->x, 0, sizeof t->x);
    t->x.r = &t->r;
    t->x.max_body = max_body ? max_body : o->max_body ? o->max_body : (1u << 20);
    t->x.idempotent = strcmp(method, "GET") == 0;
    t->r.sent = 1;
    t->errbuf[0] = '\0';

    if (hdrlist_set(&t->hl, headers, nheaders)) {
        xfer_release(t);
        return -1;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->hl.nodes);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : o->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     connect_timeout_ms > 0 ? connect_timeout_ms : o->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    return 0;
}

/* After the transfer: classify the outcome into t->r and free the request. */
static void xfer_finish(wx_xfer *t, CURLcode rc)
{
    CURL *e = t->easy;
    wx_response *r = &t->r;
    long reqsize = 0;

    xfer_release(t);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
    if (curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &reqsize) != CURLE_OK || reqsize <= 0)
        r->sent = 0;
    r->err = classify(rc, &t->x, &r->sent);
    if (t->x.resend_refused) {
        r->err = WX_HTTP_NETWORK;
        r->sent = 1;
        snprintf(r->errmsg, sizeof r->errmsg, "%s", "the connection closed before any answer "
                 "to a request that was sent; not resent (the server may have received it)");
        return;
    }
    /* libcurl accepts an answer whose connection closed inside the header
     * section (e.g. a 204 cut before its last headers): that is truncated. */
    if (r->err == WX_HTTP_OK && !t->x.head_done) r->err = WX_HTTP_BAD;
    if (r->err != WX_HTTP_OK) {
        const char *why = t->x.too_large ? "the answer is larger than the size limit"
                        : rc == CURLE_OK ? "the answer's header section was cut short"
                        : t->x.oom ? "out of memory"
                        : t->errbuf[0] ? t->errbuf
                        : curl_easy_strerror(rc);
        snprintf(r->errmsg, sizeof r->errmsg, "%s", why);
    }
}

static void fail_response(wx_response *r, int err, const char *msg)
{
    r->err = err;
    r->sent = 0;
    snprintf(r->errmsg, sizeof r->errmsg, "%s", msg);
}

static int copy_opts(wx_session_opts *dst, char **ca_copy, char **proxy_copy,
                     const wx_session_opts *o)
{
    *dst = *o;
    *ca_copy = *proxy_copy = NULL;
    if (o->ca_file && !(*ca_copy = strdup(o->ca_file))) return -1;
    if (o->proxy && !(*proxy_copy = strdup(o->proxy))) return -1;
    dst->ca_file = *ca_copy;
    dst->proxy = *proxy_copy;
    return 0;
}

/* After fork(): the object made in the parent moves its (idle) easy handles
 * from the parent's pool, which is only forgotten, to this process's.
 * 0 when *pool is this process's already or the move worked, -1 when out of
 * memory (everything stays as it was). */
static int repool(wx_share **pool, const wx_session_opts *o, wx_xfer *t, int n)
{
    wx_share *p;
    int i;
    if (!wx_pool_stale(*pool)) return 0;
    if (!(p = wx_pool_acquire(o))) return -1;
    for (i = 0; i < n; i++) {
        if (curl_easy_setopt(t[i].easy, CURLOPT_SHARE, NULL) != CURLE_OK ||
            curl_easy_setopt(t[i].easy, CURLOPT_SHARE, wx_pool_curlsh(p)) != CURLE_OK) {
            wx_pool_release(p);
            return -1;
        }
    }
    wx_pool_release(*pool);
    *pool = p;
    return 0;
}

/* ---- session: one reused easy handle on our own multi handle -------------- */

/* libcurl tells us which sockets to watch and when its next timer is due;
 * we poll() them ourselves and tell it what is ready, so it need not poll
 * again before reading (curl_easy_perform costs ~4 more syscalls a call). */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
    wx_session *s = userp;
    int i;
    (void)e; (void)sockp;
    for (i = 0; i < s->nwatch; i++)
        if (s->watch[i].fd == fd) break;
    if (what == CURL_POLL_REMOVE) {
        if (i < s->nwatch) s->watch[i] = s->watch[--s->nwatch];
        return 0;
    }
    if (i == s->nwatch) {
        if (s->nwatch == MAX_WATCH) return -1;  /* cannot happen: one transfer */
        s->nwatch++;
    }
    s->watch[i].fd = fd;
    s->watch[i].what = what;
    return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *userp)
{
    wx_session *s = userp;
    (void)m;
    s->deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    return 0;
}

static CURLcode session_drive(wx_session *s, wx_xfer *t)
{
    CURLcode rc = CURLE_OK;
    int running = 1, finished = 0;
    s->deadline = -1;
    if (curl_multi_add_handle(s->multi, t->easy) != CURLM_OK) return CURLE_OUT_OF_MEMORY;
    t->added = 1;
    while (!finished) {
        CURLMcode mc = CURLM_OK;
        CURLMsg *msg;
        int left;
        long long now = now_ms();
        if (s->deadline >= 0 && s->deadline <= now) {
            s->deadline = -1;
            mc = curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        } else {
            struct pollfd pfd[MAX_WATCH];
            int i, n, nfds = s->nwatch;
            long long wait = 1000;
            if (s->deadline >= 0 && s->deadline - now < wait) wait = s->deadline - now;
            for (i = 0; i < nfds; i++) {
                pfd[i].fd = s->watch[i].fd;
                pfd[i].events = (short)(((s->watch[i].what & CURL_POLL_IN) ? POLLIN : 0) |
                                        ((s->watch[i].what & CURL_POLL_OUT) ? POLLOUT : 0));
                pfd[i].revents = 0;
            }
            n = poll(pfd, (nfds_t)nfds, (int)wait);
            if (n < 0) {
                if (errno == EINTR) continue;
                rc = CURLE_RECV_ERROR;
                break;
            }
            if (n == 0) {
                /* a timer is due, or (no timer set) a safety tick */
                if (s->deadline < 0)
                    mc = curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
            } else {
                for (i = 0; i < nfds && mc == CURLM_OK; i++) {
                    int bits = 0;
                    short re = pfd[i].revents;
                    if (!re) continue;
                    if (re & (POLLIN | POLLHUP | POLLERR)) bits |= CURL_CSELECT_IN;
                    if (re & (POLLOUT | POLLERR)) bits |= CURL_CSELECT_OUT;
                    if (re & POLLNVAL) bits |= CURL_CSELECT_ERR;
                    mc = curl_multi_socket_action(s->multi, pfd[i].fd, bits, &running);
                }
            }
        }
        if (mc != CURLM_OK) {
            rc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_RECV_ERROR;
            break;
        }
        while ((msg = curl_multi_info_read(s->multi, &left)) != NULL) {
            if (msg->msg == CURLMSG_DONE && msg->easy_handle == t->easy) {
                rc = msg->data.result;
                finished = 1;
            }
        }
    }
    curl_multi_remove_handle(s->multi, t->easy);
    t->added = 0;
    s->nwatch = 0;
    return rc;
}

wx_session *wx_session_new(const wx_session_opts *o, const char **err)
{
    wx_session *s;
    if (wx_http_global_init()) { *err = "curl_global_init failed"; return NULL; }
    s = calloc(1, sizeof *s);
    if (!s || copy_opts(&s->o, &s->ca_file, &s->proxy, o)) {
        if (s) { free(s->ca_file); free(s->proxy); free(s); }
        *err = "out of memory";
        return NULL;
    }
    s->deadline = -1;
    if (!(s->share = wx_pool_acquire(&s->o)) || !(s->multi = curl_multi_init())) {
        wx_session_free(s);
        *err = "out of memory";
        return NULL;
    }
    if (curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, on_socket) ||
        curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s) ||
        curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, on_timer) ||
        curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s) ||
        /* returning a connection to the shared pool prunes it to this size */
        curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, 64L) ||
        xfer_init(&s->t, &s->o, s->share)) {
        wx_session_free(s);
        *err = "libcurl refused an option (is it built with TLS?)";
        return NULL;
    }
    return s;
}

void wx_session_free(wx_session *s)
{
    if (!s) return;
    if (s->t.added && s->multi) curl_multi_remove_handle(s->multi, s->t.easy);
    xfer_cleanup(&s->t);
    if (s->multi) curl_multi_cleanup(s->multi);
    wx_pool_release(s->share);
    free(s->ca_file);
    free(s->proxy);
    free(s);
}

int wx_session_perform(wx_session *s, const char *method, const char *url,
                       const char *const *headers, size_t nheaders,
                       const char *body, size_t body_len,
                       long timeout_ms, long connect_timeout_ms, size_t max_body,
                       wx_response *resp)
{
    wx_xfer *t = &s->t;
    if (repool(&s->share, &s->o, &s->t, 1)) {
        memset(&t->r, 0, sizeof t->r);
        fail_response(&t->r, WX_HTTP_INTERNAL, "out of memory");
    } else if (xfer_prepare(t, &s->o, method, url, headers, nheaders, body, body_len,
                            timeout_ms, connect_timeout_ms, max_body)) {
        fail_response(&t->r, WX_HTTP_INTERNAL, "out of memory");
    } else {
        xfer_finish(t, session_drive(s, t));
    }
    *resp = t->r;                    /* ownership of the buffers moves */
    memset(&t->r, 0, sizeof t->r);
    return resp->err;
}

/* ---- multi: many transfers at once ------------------------------------------ */

wx_multi *wx_multi_new(const wx_session_opts *o, int max_parallel, const char **err)
{
    wx_multi *m;
    int i;
    if (wx_http_global_init()) { *err = "curl_global_init failed"; return NULL; }
    if (max_parallel < 1 || max_parallel > 256) { *err = "max_parallel must be 1-256"; return NULL; }
    m = calloc(1, sizeof *m);
    if (!m || copy_opts(&m->o, &m->ca_file, &m->proxy, o)) {
        if (m) { free(m->ca_file); free(m->proxy); free(m); }
        *err = "out of memory";
        return NULL;
    }
    m->nslots = max_parallel;
    m->slots = calloc((size_t)max_parallel, sizeof *m->slots);
    m->done = calloc((size_t)max_parallel, sizeof *m->done);
    m->multi = curl_multi_init();
    m->share = wx_pool_acquire(&m->o);
    if (!m->slots || !m->done || !m->multi || !m->share) {
        wx_multi_free(m);
        *err = "out of memory";
        return NULL;
    }
    curl_multi_setopt(m->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)max_parallel);
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, (long)(max_parallel < 64 ? 64 : max_parallel));
    for (i = 0; i < max_parallel; i++) {
        if (xfer_init(&m->slots[i], &m->o, m->share)) {
            wx_multi_free(m);
            *err = "libcurl refused an option (is it built with TLS?)";
            return NULL;
        }
    }
    return m;
}

/* Removes and forgets every transfer: in flight (its connection is closed
 * by libcurl, the answer being unknown) or finished and not taken. */
void wx_multi_abort_all(wx_multi *m)
{
    int i;
    for (i = 0; i < m->nslots; i++) {
        wx_xfer *t = &m->slots[i];
        if (t->added) curl_multi_remove_handle(m->multi, t->easy);
        t->added = 0;
        xfer_release(t);
        wx_response_free(&t->r);
        memset(&t->r, 0, sizeof t->r);
        t->busy = 0;
    }
    m->ndone = 0;
    m->active = 0;
}

void wx_multi_free(wx_multi *m)
{
    int i;
    if (!m) return;
    if (m->share && wx_pool_stale(m->share) && m->active > 0) {
        /* made in the parent with transfers in flight: libcurl would close
         * the parent's connections; leave its handles alone */
        for (i = 0; m->slots && i < m->nslots; i++) {
            free(m->slots[i].body);
            hdrlist_free(&m->slots[i].hl);
            wx_response_free(&m->slots[i].r);
        }
    } else {
        for (i = 0; m->slots && i < m->nslots; i++) {
            if (m->slots[i].added && m->multi) curl_multi_remove_handle(m->multi, m->slots[i].easy);
            m->slots[i].added = 0;
            xfer_cleanup(&m->slots[i]);
        }
        if (m->multi) curl_multi_cleanup(m->multi);
        wx_pool_release(m->share);
    }
    free(m->slots);
    free(m->done);
    free(m->ca_file);
    free(m->proxy);
    free(m);
}

int wx_multi_active(const wx_multi *m) { return m->active; }
int wx_multi_capacity(const wx_multi *m) { return m->nslots; }

/* After fork(): an idle multi handle made in the parent moves to this
 * process's pool; one with transfers in flight refuses to go on. */
static int multi_check_fork(wx_multi *m, const char **err)
{
    if (!wx_pool_stale(m->share)) return 0;
    if (m->active > 0) {
        *err = "this multi handle had transfers in flight when the process forked: make a new one";
        return -1;
    }
    if (repool(&m->share, &m->o, m->slots, m->nslots)) { *err = "out of memory"; return -1; }
    return 0;
}

int wx_multi_add(wx_multi *m, long id, const char *method, const char *url,
                 const char *const *headers, size_t nheaders,
                 const char *body, size_t body_len,
                 long timeout_ms, long connect_timeout_ms, size_t max_body,
                 const char **err)
{
    int i;
    wx_xfer *t = NULL;
    if (multi_check_fork(m, err)) return -1;
    for (i = 0; i < m->nslots; i++) {
        if (m->slots[i].busy && m->slots[i].id == id) {
            *err = "this id is already in flight (or finished and not taken)";
            return -1;
        }
        if (!t && !m->slots[i].busy) t = &m->slots[i];
    }
    if (!t) { *err = "all transfers are busy"; return -1; }
    wx_response_free(&t->r);
    if (body_len) {
        if (!(t->body = malloc(body_len))) { *err = "out of memory"; return -1; }
        memcpy(t->body, body, body_len);
    }
    if (xfer_prepare(t, &m->o, method, url, headers, nheaders, t->body ? t->body : "",
                     body_len, timeout_ms, connect_timeout_ms, max_body) ||
        curl_multi_add_handle(m->multi, t->easy) != CURLM_OK) {
        xfer_release(t);
        *err = "out of memory";
        return -1;
    }
    t->added = 1;
    t->id = id;
    t->busy = 1;
    m->active++;
    return 0;
}

int wx_multi_run(wx_multi *m, long timeout_ms, const char **err)
{
    int running = 0, left = 0;
    CURLMsg *msg;
    long long until = now_ms() + timeout_ms;
    if (multi_check_fork(m, err)) return -1;
    if (m->ndone == 0 && m->active > 0) {
        curl_multi_perform(m->multi, &running);
        while (running == m->active) {
            int numfds = 0;
            /* wait for socket activity or curl's own timers */
            long long wait = 1000;
            if (timeout_ms > 0) {
                wait = until - now_ms();
                if (wait <= 0) break;
                if (wait > 1000) wait = 1000;
            }
            if (curl_multi_poll(m->multi, NULL, 0, (int)wait, &numfds) != CURLM_OK) break;
            curl_multi_perform(m->multi, &running);
        }
    }
    while ((msg = curl_multi_info_read(m->multi, &left)) != NULL) {
        wx_xfer *t = NULL;
        if (msg->msg != CURLMSG_DONE) continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
        if (!t || !t->added) continue;
        xfer_finish(t, msg->data.result);
        curl_multi_remove_handle(m->multi, t->easy);
        t->added = 0;
        m->done[m->ndone++] = (int)(t - m->slots);
    }
    return m->ndone;
}

int wx_multi_next(wx_multi *m, long *id, wx_response *resp)
{
    wx_xfer *t;
    if (m->ndone == 0) return 0;
    t = &m->slots[m->done[--m->ndone]];
    *id = t->id;
    *resp = t->r;                    /* ownership of the buffers moves */
    memset(&t->r, 0, sizeof t->r);
    t->busy = 0;
    m->active--;
    return 1;
}
