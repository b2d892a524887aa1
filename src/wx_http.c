/* wxpay C core: one HTTPS session over a reused libcurl easy handle. */
#include "wx_core.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

struct wx_session {
    CURL *easy;
    wx_session_opts o;
    char *ca_file;
    char errbuf[CURL_ERROR_SIZE];
};

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

/* ---- session ------------------------------------------------------------ */

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

wx_session *wx_session_new(const wx_session_opts *o, const char **err)
{
    wx_session *s;
    CURL *e;
    if (wx_http_global_init()) { *err = "curl_global_init failed"; return NULL; }
    s = calloc(1, sizeof *s);
    if (!s) { *err = "out of memory"; return NULL; }
    s->o = *o;
    if (o->ca_file && !(s->ca_file = strdup(o->ca_file))) {
        free(s);
        *err = "out of memory";
        return NULL;
    }
    s->o.ca_file = s->ca_file;
    e = s->easy = curl_easy_init();
    if (!e) { wx_session_free(s); *err = "curl_easy_init failed"; return NULL; }
    if (curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https") ||
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) ||
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) ||
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) ||
        curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) ||
        curl_easy_setopt(e, CURLOPT_MAXAGE_CONN, o->max_idle_s > 0 ? o->max_idle_s : 7L) ||
        curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) ||
        curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf) ||
        (s->ca_file && curl_easy_setopt(e, CURLOPT_CAINFO, s->ca_file))) {
        wx_session_free(s);
        *err = "libcurl refused an option (is it built with TLS?)";
        return NULL;
    }
    return s;
}

void wx_session_free(wx_session *s)
{
    if (!s) return;
    if (s->easy) curl_easy_cleanup(s->easy);
    free(s->ca_file);
    free(s);
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

int wx_session_perform(wx_session *s, const char *method, const char *url,
                       const char *const *headers, size_t nheaders,
                       const char *body, size_t body_len,
                       long timeout_ms, long connect_timeout_ms,
                       wx_response *r)
{
    CURL *e = s->easy;
    struct curl_slist *list = NULL, *t;
    exchange x;
    CURLcode rc;
    size_t i;
    long reqsize = 0;
    int is_get = strcmp(method, "GET") == 0;

    memset(r, 0, sizeof *r);
    memset(&x, 0, sizeof x);
    x.r = r;
    x.max_body = s->o.max_body ? s->o.max_body : (1u << 20);
    r->sent = 1;

    for (i = 0; i < nheaders; i++) {
        if (!(t = curl_slist_append(list, headers[i]))) goto oom;
        list = t;
    }
    /* no "Expect: 100-continue" round trip for larger bodies */
    if (!(t = curl_slist_append(list, "Expect:"))) goto oom;
    list = t;

    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &x);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &x);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : s->o.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     connect_timeout_ms > 0 ? connect_timeout_ms : s->o.connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(e, CURLOPT_NOBODY, 0L);
    if (is_get) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    } else {
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }

    s->errbuf[0] = '\0';
    rc = curl_easy_perform(e);

    curl_easy_setopt(e, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, NULL);
    curl_slist_free_all(list);

    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
    if (curl_easy_getinfo(e, CURLINFO_REQUEST_SIZE, &reqsize) != CURLE_OK || reqsize <= 0)
        r->sent = 0;
    r->err = classify(rc, &x, &r->sent);
    if (r->err != WX_HTTP_OK) {
        const char *why = x.too_large ? "the answer is larger than the size limit"
                        : x.oom ? "out of memory"
                        : s->errbuf[0] ? s->errbuf
                        : curl_easy_strerror(rc);
        snprintf(r->errmsg, sizeof r->errmsg, "%s", why);
    }
    return r->err;

oom:
    curl_slist_free_all(list);
    r->err = WX_HTTP_INTERNAL;
    r->sent = 0;
    strcpy(r->errmsg, "out of memory");
    return r->err;
}
