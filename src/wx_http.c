/* wxpay C core: one HTTPS session over a reused libcurl easy handle. */
#include "wx_core.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>


/* ---- header parsing ----------------------------------------------------- */

static int is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
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
        for (i = 0; i < nl; i++) lower[i] = (char)tolower((unsigned char)name[i]);
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

/* ---- transfers: one easy handle, its request and its answer ------------- */

typedef struct wx_xfer {
    CURL *easy;
    struct curl_slist *list;
    exchange x;
    wx_response r;
    char *body;               /* multi only: a copy of the request body */
    long id;                  /* multi only: the caller's id */
    int busy;
    char errbuf[CURL_ERROR_SIZE];
} wx_xfer;

struct wx_session {
    wx_session_opts o;
    char *ca_file;
    wx_xfer t;
};

struct wx_multi {
    wx_session_opts o;
    char *ca_file;
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

/* The options every transfer has: HTTPS only, verification on, HTTP/1.1,
 * connections not reused after max_idle_s (WeChat closes them at 8 s). */
static int xfer_init(wx_xfer *t, const wx_session_opts *o)
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
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf) ||
        (o->ca_file && curl_easy_setopt(e, CURLOPT_CAINFO, o->ca_file)))
        return -1;
    return 0;
}

/* Frees what one request holds (its header list and body copy) and detaches
 * them from the handle; the handle and its connection stay for the next. */
static void xfer_release(wx_xfer *t)
{
    if (t->easy) {
        curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(t->easy, CURLOPT_POSTFIELDS, NULL);
    }
    curl_slist_free_all(t->list);
    t->list = NULL;
    free(t->body);
    t->body = NULL;
}

static void xfer_cleanup(wx_xfer *t)
{
    xfer_release(t);
    if (t->easy) curl_easy_cleanup(t->easy);
    t->easy = NULL;
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
                        long timeout_ms, long connect_timeout_ms)
{
    CURL *e = t->easy;
    struct curl_slist *tmp;
    size_t i;

    memset(&t->r, 0, sizeof t->r);
    memset(&t->x, 0, sizeof t->x);
    t->x.r = &t->r;
    t->x.max_body = o->max_body ? o->max_body : (1u << 20);
    t->r.sent = 1;
    t->errbuf[0] = '\0';

    for (i = 0; i <= nheaders; i++) {
        /* the last one: no "Expect: 100-continue" round trip for larger bodies */
        if (!(tmp = curl_slist_append(t->list, i < nheaders ? headers[i] : "Expect:"))) {
            xfer_release(t);
            return -1;
        }
        t->list = tmp;
    }

    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->list);
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

static void oom_response(wx_response *r)
{
    r->err = WX_HTTP_INTERNAL;
    r->sent = 0;
    strcpy(r->errmsg, "out of memory");
}

static int copy_opts(wx_session_opts *dst, char **ca_copy, const wx_session_opts *o)
{
    *dst = *o;
    *ca_copy = NULL;
    if (o->ca_file && !(*ca_copy = strdup(o->ca_file))) return -1;
    dst->ca_file = *ca_copy;
    return 0;
}

/* ---- session: one reused easy handle ------------------------------------- */

wx_session *wx_session_new(const wx_session_opts *o, const char **err)
{
    wx_session *s;
    if (wx_http_global_init()) { *err = "curl_global_init failed"; return NULL; }
    s = calloc(1, sizeof *s);
    if (!s || copy_opts(&s->o, &s->ca_file, o)) {
        free(s);
        *err = "out of memory";
        return NULL;
    }
    if (xfer_init(&s->t, &s->o)) {
        wx_session_free(s);
        *err = "libcurl refused an option (is it built with TLS?)";
        return NULL;
    }
    return s;
}

void wx_session_free(wx_session *s)
{
    if (!s) return;
    xfer_cleanup(&s->t);
    free(s->ca_file);
    free(s);
}

int wx_session_perform(wx_session *s, const char *method, const char *url,
                       const char *const *headers, size_t nheaders,
                       const char *body, size_t body_len,
                       long timeout_ms, long connect_timeout_ms,
                       wx_response *resp)
{
    wx_xfer *t = &s->t;
    if (xfer_prepare(t, &s->o, method, url, headers, nheaders, body, body_len,
                     timeout_ms, connect_timeout_ms)) {
        oom_response(&t->r);
    } else {
        xfer_finish(t, curl_easy_perform(t->easy));
    }
    *resp = t->r;                    /* ownership of the buffers moves */
    memset(&t->r, 0, sizeof t->r);
    return resp->err;
}

/* ---- multi: many transfers at once, one connection cache ----------------- */

wx_multi *wx_multi_new(const wx_session_opts *o, int max_parallel, const char **err)
{
    wx_multi *m;
    int i;
    if (wx_http_global_init()) { *err = "curl_global_init failed"; return NULL; }
    if (max_parallel < 1 || max_parallel > 256) { *err = "max_parallel must be 1-256"; return NULL; }
    m = calloc(1, sizeof *m);
    if (!m || copy_opts(&m->o, &m->ca_file, o)) { free(m); *err = "out of memory"; return NULL; }
    m->nslots = max_parallel;
    m->slots = calloc((size_t)max_parallel, sizeof *m->slots);
    m->done = calloc((size_t)max_parallel, sizeof *m->done);
    m->multi = curl_multi_init();
    if (!m->slots || !m->done || !m->multi) { wx_multi_free(m); *err = "out of memory"; return NULL; }
    curl_multi_setopt(m->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)max_parallel);
    curl_multi_setopt(m->multi, CURLMOPT_MAXCONNECTS, (long)max_parallel);
    for (i = 0; i < max_parallel; i++) {
        if (xfer_init(&m->slots[i], &m->o)) {
            wx_multi_free(m);
            *err = "libcurl refused an option (is it built with TLS?)";
            return NULL;
        }
    }
    return m;
}

void wx_multi_free(wx_multi *m)
{
    int i;
    if (!m) return;
    for (i = 0; m->slots && i < m->nslots; i++) {
        if (m->slots[i].busy && m->multi) curl_multi_remove_handle(m->multi, m->slots[i].easy);
        xfer_cleanup(&m->slots[i]);
    }
    /* the easy handles go first: they may hold connections of the multi's cache */
    if (m->multi) curl_multi_cleanup(m->multi);
    free(m->slots);
    free(m->done);
    free(m->ca_file);
    free(m);
}

int wx_multi_active(const wx_multi *m) { return m->active; }
int wx_multi_capacity(const wx_multi *m) { return m->nslots; }

int wx_multi_add(wx_multi *m, long id, const char *method, const char *url,
                 const char *const *headers, size_t nheaders,
                 const char *body, size_t body_len,
                 long timeout_ms, long connect_timeout_ms, const char **err)
{
    int i;
    wx_xfer *t = NULL;
    for (i = 0; i < m->nslots; i++)
        if (!m->slots[i].busy) { t = &m->slots[i]; break; }
    if (!t) { *err = "all transfers are busy"; return -1; }
    wx_response_free(&t->r);
    if (body_len) {
        if (!(t->body = malloc(body_len))) { *err = "out of memory"; return -1; }
        memcpy(t->body, body, body_len);
    }
    if (xfer_prepare(t, &m->o, method, url, headers, nheaders, t->body ? t->body : "",
                     body_len, timeout_ms, connect_timeout_ms) ||
        curl_multi_add_handle(m->multi, t->easy) != CURLM_OK) {
        xfer_release(t);
        *err = "out of memory";
        return -1;
    }
    t->id = id;
    t->busy = 1;
    m->active++;
    return 0;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int wx_multi_run(wx_multi *m, long timeout_ms)
{
    int running = 0, left = 0;
    CURLMsg *msg;
    long until = now_ms() + timeout_ms;
    if (m->ndone == 0 && m->active > 0) {
        curl_multi_perform(m->multi, &running);
        while (running == m->active) {
            int numfds = 0;
            /* wait for socket activity or curl's own timers */
            long wait = 1000;
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
        if (!t) continue;
        xfer_finish(t, msg->data.result);
        curl_multi_remove_handle(m->multi, t->easy);
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
