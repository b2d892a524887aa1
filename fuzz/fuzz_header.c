/* wx_parse_header_line: every response header line libcurl hands us.
 * Properties: the result is -1, 0, 1 or 2; for a header (1) the name is a
 * non-empty run of RFC 7230 token characters followed by ':' and both spans
 * lie inside the input, the value holds no NUL and is trimmed of blanks; for
 * a status line (2) the status has three digits; a blank line (0) holds
 * nothing but CR/LF. */
#include "fuzz_common.h"

static int tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *line = fuzz_copy(data, size);
    const char *name = NULL, *value = NULL;
    size_t nl = (size_t)-1, vl = (size_t)-1, i;
    int status = -1;
    int r = wx_parse_header_line(line, size, &name, &nl, &value, &vl, &status);
    CHECK(r >= -1 && r <= 2);
    if (r == 0) {
        for (i = 0; i < size; i++) CHECK(line[i] == '\r' || line[i] == '\n');
    } else if (r == 1) {
        CHECK(name == line);
        CHECK(nl >= 1 && nl < size && line[nl] == ':');
        for (i = 0; i < nl; i++) CHECK(tchar((unsigned char)name[i]));
        CHECK(value >= line + nl + 1 && value + vl <= line + size);
        CHECK(memchr(value, '\0', vl) == NULL);
        if (vl) {
            CHECK(value[0] != ' ' && value[0] != '\t');
            CHECK(value[vl - 1] != ' ' && value[vl - 1] != '\t');
        }
    } else if (r == 2) {
        CHECK(size >= 5 && memcmp(line, "HTTP/", 5) == 0);
        CHECK(status >= 0 && status <= 999);
    }
    free(line);
    return 0;
}
