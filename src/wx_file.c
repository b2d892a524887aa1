/* wxpay C core: private files (the key file, the certificate cache): read
 * without following links where asked, written atomically with mode 0600,
 * directories checked for owner and mode.  Key material read here is wiped
 * before its buffer is freed. */
#define _GNU_SOURCE
#include "wx_core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <openssl/crypto.h>

/* ---- private files -------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *what, const char *path, int e)
{
    if (e) snprintf(err, errlen, "%s %s: %s", what, path, strerror(e));
    else snprintf(err, errlen, "%s %s", what, path);
}

/* Reads an open regular file of at most max bytes (checked before and
 * while reading: it may grow).  *data is malloc'd with a NUL after it. */
static int read_fd(int fd, const char *path, size_t max, char **data, size_t *len,
                   unsigned *mode, char *err, size_t errlen)
{
    struct stat st;
    char *buf;
    size_t cap, n = 0;
    *data = NULL;
    *len = 0;
    if (fstat(fd, &st) != 0) { set_err(err, errlen, "cannot stat", path, errno); return -1; }
    if (!S_ISREG(st.st_mode)) { set_err(err, errlen, "not a regular file:", path, 0); return -1; }
    if (st.st_size < 0 || (unsigned long long)st.st_size > max) {
        snprintf(err, errlen, "%s is larger than %zu bytes", path, max);
        return -1;
    }
    if (mode) *mode = (unsigned)(st.st_mode & 07777);
    cap = (size_t)st.st_size + 1;          /* one more: see whether it grew */
    if (cap > max + 1) cap = max + 1;
    if (!(buf = malloc(cap + 1))) { snprintf(err, errlen, "out of memory"); return -1; }
    for (;;) {
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            set_err(err, errlen, "cannot read", path, errno);
            OPENSSL_cleanse(buf, n);
            free(buf);
            return -1;
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n == cap) {                     /* grew since fstat */
            char *b2;
            if (n > max) {
                snprintf(err, errlen, "%s is larger than %zu bytes", path, max);
                OPENSSL_cleanse(buf, n);
                free(buf);
                return -1;
            }
            cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            if (!(b2 = malloc(cap + 1))) {
                OPENSSL_cleanse(buf, n);
                free(buf);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            memcpy(b2, buf, n);
            OPENSSL_cleanse(buf, n);
            free(buf);
            buf = b2;
        }
    }
    buf[n] = '\0';
    *data = buf;
    *len = n;
    return 0;
}

static int open_file(const char *path, int nofollow, char *err, size_t errlen)
{
    int fd;
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | (nofollow ? O_NOFOLLOW : 0));
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        if (nofollow && errno == ELOOP) set_err(err, errlen, "refusing a symbolic link:", path, 0);
        else set_err(err, errlen, "cannot open", path, errno);
    }
    return fd;
}

int wx_read_file(const char *path, size_t max_bytes, int nofollow, char **data,
                 size_t *len, unsigned *mode, char *err, size_t errlen)
{
    int rc, fd = open_file(path, nofollow, err, errlen);
    if (fd < 0) return -1;
    rc = read_fd(fd, path, max_bytes, data, len, mode, err, errlen);
    close(fd);
    return rc;
}

EVP_PKEY *wx_private_key_from_file(const char *path, unsigned *mode, char *err,
                                   size_t errlen)
{
    char *pem = NULL;
    size_t len = 0;
    const char *perr = NULL;
    EVP_PKEY *k;
    if (wx_read_file(path, WX_KEY_FILE_MAX, 0, &pem, &len, mode, err, errlen)) return NULL;
    k = wx_private_key_from_pem(pem, len, &perr);
    OPENSSL_cleanse(pem, len);
    free(pem);
    /* perr is one of our fixed messages: never the file's content */
    if (!k) snprintf(err, errlen, "%s: %s", path, perr);
    return k;
}

int wx_private_dir(const char *path, char *err, size_t errlen)
{
    struct stat st;
    int fd, made = 0;
    if (lstat(path, &st) != 0) {
        if (errno != ENOENT) { set_err(err, errlen, "cannot stat", path, errno); return -1; }
        if (mkdir(path, 0700) == 0) made = 1;
        else if (errno != EEXIST) {
            if (errno == ENOENT) set_err(err, errlen, "the parent directory does not exist:", path, 0);
            else set_err(err, errlen, "cannot create directory", path, errno);
            return -1;
        }
        if (lstat(path, &st) != 0) { set_err(err, errlen, "cannot stat", path, errno); return -1; }
    }
    if (S_ISLNK(st.st_mode)) { set_err(err, errlen, "refusing a symbolic link:", path, 0); return -1; }
    if (!S_ISDIR(st.st_mode)) { set_err(err, errlen, "not a directory:", path, 0); return -1; }
    /* from here on the checks hold for the directory itself, not a name that
     * could be swapped: O_NOFOLLOW | O_DIRECTORY and fstat on the descriptor */
    do {
        fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        if (errno == ELOOP) set_err(err, errlen, "refusing a symbolic link:", path, 0);
        else if (errno == ENOTDIR) set_err(err, errlen, "not a directory:", path, 0);
        else set_err(err, errlen, "cannot open directory", path, errno);
        return -1;
    }
    if (made) (void)fchmod(fd, 0700);      /* whatever the umask took away */
    if (fstat(fd, &st) != 0) {
        set_err(err, errlen, "cannot stat", path, errno);
        close(fd);
        return -1;
    }
    close(fd);
    if (st.st_uid != geteuid()) {
        snprintf(err, errlen, "%s is owned by uid %lu, not by this process's user (uid %lu)",
                 path, (unsigned long)st.st_uid, (unsigned long)geteuid());
        return -1;
    }
    if (st.st_mode & 022) {
        snprintf(err, errlen, "%s is writable by group or others (mode %03o): chmod 700 it",
                 path, (unsigned)(st.st_mode & 0777));
        return -1;
    }
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int wx_write_private(const char *path, const void *data, size_t len, char *err,
                     size_t errlen)
{
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) : 0;
    const char *base = slash ? slash + 1 : path;
    char *tmp, *dir, rnd[17];
    size_t tlen;
    int fd, e, dfd;
    if (*base == '\0') { set_err(err, errlen, "not a file name:", path, 0); return -1; }
    if (wx_nonce(rnd, 16)) { snprintf(err, errlen, "the CSPRNG failed"); return -1; }
    rnd[16] = '\0';
    tlen = strlen(path) + 32;
    if (!(tmp = malloc(tlen)) || !(dir = malloc(dlen + 2))) {
        free(tmp);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* the temporary file: same directory (rename stays atomic), hidden,
     * random, created exclusively, never through a link */
    snprintf(tmp, tlen, "%.*s%s.%s.%s.tmp", (int)dlen, path, slash ? "/" : "", base, rnd);
    if (slash) { memcpy(dir, path, dlen ? dlen : 1); dir[dlen ? dlen : 1] = '\0'; }
    else strcpy(dir, ".");
    do {
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        set_err(err, errlen, "cannot create a temporary file beside", path, errno);
        free(tmp);
        free(dir);
        return -1;
    }
    if (fchmod(fd, 0600) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        e = errno;
        close(fd);
        unlink(tmp);
        set_err(err, errlen, "cannot write", path, e);
        free(tmp);
        free(dir);
        return -1;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        set_err(err, errlen, "cannot replace", path, e);
        free(tmp);
        free(dir);
        return -1;
    }
    /* make the rename itself durable */
    if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(tmp);
    free(dir);
    return 0;
}
