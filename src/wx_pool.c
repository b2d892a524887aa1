/* wxpay C core: the process-wide connection pools behind every session and
 * multi handle (wx_http.c): a refcounted libcurl share per (ca_file, proxy,
 * thread), and what fork() does to them. */
#define _GNU_SOURCE
#include "wx_core.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One CURLSH per (TLS settings, thread): connections, TLS sessions and DNS
 * answers, shared by every session and multi handle made with the same
 * ca_file and proxy.  Refcounted; the last user frees it.  libcurl documents
 * sharing connections between concurrent threads as unsafe, hence one pool
 * per thread (a single-threaded process, nginx worker or CLI, has one).
 *
 * fork(): the child must never use or clean up the parent's pools (closing
 * them would send TLS close_notify on sockets the parent still uses).  Each
 * pool records the fork generation it was made in; the child forgets the
 * registry (pthread_atfork) and makes new pools on first use; objects made
 * before the fork move to a new pool when next used, leaving the old one
 * (and its sockets) untouched. */
struct wx_share {
    struct wx_share *next;
    char *key;
    pthread_t owner;
    unsigned long gen;
    int refs;
    CURLSH *sh;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static wx_share *reg;
static pthread_once_t reg_once = PTHREAD_ONCE_INIT;

/* Every pool lock is held across fork() so that the child's copies are in
 * a known (unlocked) state even if another thread was inside libcurl. */
static void reg_prepare(void)
{
    wx_share *p;
    int i;
    pthread_mutex_lock(&reg_mu);
    for (p = reg; p; p = p->next)
        for (i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_lock(&p->locks[i]);
}

static void reg_unlock_all(void)
{
    wx_share *p;
    int i;
    for (p = reg; p; p = p->next)
        for (i = CURL_LOCK_DATA_LAST - 1; i >= 0; i--) pthread_mutex_unlock(&p->locks[i]);
}

static void reg_parent(void)
{
    reg_unlock_all();
    pthread_mutex_unlock(&reg_mu);
}

static void reg_child(void)
{
    reg_unlock_all();
    reg = NULL;            /* the parent's pools: forgotten, never cleaned up */
    pthread_mutex_unlock(&reg_mu);
}

static void reg_register(void)
{
    pthread_atfork(reg_prepare, reg_parent, reg_child);
}

static void share_lock(CURL *e, curl_lock_data d, curl_lock_access a, void *u)
{
    wx_share *p = u;
    (void)e; (void)a;
    if ((int)d >= 0 && d < CURL_LOCK_DATA_LAST) pthread_mutex_lock(&p->locks[d]);
}

static void share_unlock(CURL *e, curl_lock_data d, void *u)
{
    wx_share *p = u;
    (void)e;
    if ((int)d >= 0 && d < CURL_LOCK_DATA_LAST) pthread_mutex_unlock(&p->locks[d]);
}

static char *share_key(const wx_session_opts *o)
{
    const char *ca = o->ca_file ? o->ca_file : "";
    const char *px = o->proxy ? o->proxy : "";
    size_t n = strlen(ca) + strlen(px) + 8;
    char *k = malloc(n);
    if (k) snprintf(k, n, "%c%s\n%c%s", o->ca_file ? 'f' : 's', ca, o->proxy ? 'p' : 'n', px);
    return k;
}

static void share_destroy(wx_share *p)
{
    int i;
    if (p->sh) curl_share_cleanup(p->sh);
    for (i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_destroy(&p->locks[i]);
    free(p->key);
    free(p);
}

wx_share *wx_pool_acquire(const wx_session_opts *o)
{
    char *key = share_key(o);
    wx_share *p;
    unsigned long gen;
    pthread_t self = pthread_self();
    int i;
    if (!key) return NULL;
    wx_fork_init();
    pthread_once(&reg_once, reg_register);
    pthread_mutex_lock(&reg_mu);
    gen = wx_fork_generation();
    for (p = reg; p; p = p->next) {
        if (p->gen == gen && pthread_equal(p->owner, self) && strcmp(p->key, key) == 0) {
            p->refs++;
            pthread_mutex_unlock(&reg_mu);
            free(key);
            return p;
        }
    }
    p = calloc(1, sizeof *p);
    if (!p) goto fail;
    for (i = 0; i < CURL_LOCK_DATA_LAST; i++) pthread_mutex_init(&p->locks[i], NULL);
    p->key = key;
    key = NULL;
    p->owner = self;
    p->gen = gen;
    p->refs = 1;
    p->sh = curl_share_init();
    if (!p->sh ||
        curl_share_setopt(p->sh, CURLSHOPT_LOCKFUNC, share_lock) ||
        curl_share_setopt(p->sh, CURLSHOPT_UNLOCKFUNC, share_unlock) ||
        curl_share_setopt(p->sh, CURLSHOPT_USERDATA, p) ||
        curl_share_setopt(p->sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT) ||
        curl_share_setopt(p->sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) ||
        curl_share_setopt(p->sh, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS)) {
        share_destroy(p);
        goto fail;
    }
    p->next = reg;
    reg = p;
    pthread_mutex_unlock(&reg_mu);
    return p;
fail:
    pthread_mutex_unlock(&reg_mu);
    free(key);
    return NULL;
}

/* Drops one reference; the last one frees the pool (every easy handle using
 * it must be cleaned up before).  A pool of an earlier fork generation is
 * the parent's: left alone. */
void wx_pool_release(wx_share *p)
{
    wx_share **pp;
    if (!p) return;
    pthread_mutex_lock(&reg_mu);
    if (p->gen != wx_fork_generation() || --p->refs > 0) {
        pthread_mutex_unlock(&reg_mu);
        return;
    }
    for (pp = &reg; *pp; pp = &(*pp)->next)
        if (*pp == p) { *pp = p->next; break; }
    pthread_mutex_unlock(&reg_mu);
    share_destroy(p);
}

int wx_http_pool_count(void)
{
    wx_share *p;
    int n = 0;
    pthread_mutex_lock(&reg_mu);
    for (p = reg; p; p = p->next) n++;
    pthread_mutex_unlock(&reg_mu);
    return n;
}

CURLSH *wx_pool_curlsh(const wx_share *p) { return p->sh; }

int wx_pool_stale(const wx_share *p) { return p->gen != wx_fork_generation(); }
