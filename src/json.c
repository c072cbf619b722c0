/* json.c: the strict JSON DOM parser declared in json.h. Recursive descent with an explicit depth
 * limit; every read is bounds-checked against the input length. */
#include "json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

#define JSON_MAX_DEPTH 64

typedef struct {
    const char *s;
    size_t n, i;
    const char *what;
    char *err;
    size_t errlen;
    int failed;
} jp;

static int jfail(jp *p, const char *msg) {
    if (!p->failed) pg_err(p->err, p->errlen, "%s: invalid JSON: %s at byte %zu", p->what, msg, p->i);
    p->failed = 1;
    return -1;
}

static void skip_ws(jp *p) {
    while (p->i < p->n) {
        char c = p->s[p->i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->i++;
        else break;
    }
}

static void free_inner(json_value *v) {
    if (!v) return;
    free(v->str);
    for (size_t k = 0; k < v->n; k++) {
        free_inner(&v->items[k]);
        if (v->keys) free(v->keys[k]);
    }
    free(v->items);
    free(v->keys);
    free(v->key_lens);
}

/* Validate one UTF-8 sequence starting at p->i; return its length or -1. */
static int utf8_len(const unsigned char *s, size_t avail) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int n;
    unsigned min;
    if ((c & 0xe0) == 0xc0) n = 2, min = 0x80;
    else if ((c & 0xf0) == 0xe0) n = 3, min = 0x800;
    else if ((c & 0xf8) == 0xf0) n = 4, min = 0x10000;
    else return -1;
    if ((size_t)n > avail) return -1;
    unsigned cp = c & (0xff >> (n + 1));
    for (int k = 1; k < n; k++) {
        if ((s[k] & 0xc0) != 0x80) return -1;
        cp = (cp << 6) | (s[k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return -1;
    return n;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xc0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3f)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

static int hex4(jp *p, unsigned *out) {
    if (p->i + 4 > p->n) return jfail(p, "truncated \\u escape");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i + k];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return jfail(p, "bad hex digit in \\u escape");
    }
    p->i += 4;
    *out = v;
    return 0;
}

/* Parse a string starting at the opening quote. Output is at most as long as the input span. */
static int parse_string(jp *p, char **out, size_t *outlen) {
    p->i++; /* opening quote */
    size_t start = p->i;
    /* find an upper bound on the length: the output never exceeds the raw span */
    char *buf = xmalloc(p->n - start + 1);
    size_t o = 0;
    while (1) {
        if (p->i >= p->n) { free(buf); return jfail(p, "unterminated string"); }
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') { p->i++; break; }
        if (c < 0x20) { free(buf); return jfail(p, "control character in string"); }
        if (c == '\\') {
            p->i++;
            if (p->i >= p->n) { free(buf); return jfail(p, "truncated escape"); }
            char e = p->s[p->i++];
            switch (e) {
            case '"': buf[o++] = '"'; break;
            case '\\': buf[o++] = '\\'; break;
            case '/': buf[o++] = '/'; break;
            case 'b': buf[o++] = '\b'; break;
            case 'f': buf[o++] = '\f'; break;
            case 'n': buf[o++] = '\n'; break;
            case 'r': buf[o++] = '\r'; break;
            case 't': buf[o++] = '\t'; break;
            case 'u': {
                unsigned cp;
                if (hex4(p, &cp)) { free(buf); return -1; }
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    unsigned lo;
                    if (p->i + 2 > p->n || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u') {
                        free(buf);
                        return jfail(p, "unpaired high surrogate");
                    }
                    p->i += 2;
                    if (hex4(p, &lo)) { free(buf); return -1; }
                    if (lo < 0xdc00 || lo > 0xdfff) { free(buf); return jfail(p, "unpaired high surrogate"); }
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                    free(buf);
                    return jfail(p, "unpaired low surrogate");
                }
                o += put_utf8(buf + o, cp);
                break;
            }
            default: free(buf); return jfail(p, "bad escape");
            }
            continue;
        }
        int l = utf8_len((const unsigned char *)p->s + p->i, p->n - p->i);
        if (l < 0) { free(buf); return jfail(p, "invalid UTF-8"); }
        memcpy(buf + o, p->s + p->i, (size_t)l);
        o += (size_t)l;
        p->i += (size_t)l;
    }
    buf[o] = 0;
    *out = buf;
    *outlen = o;
    return 0;
}

static int parse_value(jp *p, json_value *v, int depth);

static int parse_number(jp *p, json_value *v) {
    size_t st = p->i;
    if (p->i < p->n && p->s[p->i] == '-') p->i++;
    if (p->i >= p->n) return jfail(p, "bad number");
    if (p->s[p->i] == '0') p->i++;
    else if (p->s[p->i] >= '1' && p->s[p->i] <= '9') {
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    } else return jfail(p, "bad number");
    int integral = 1;
    if (p->i < p->n && p->s[p->i] == '.') {
        integral = 0;
        p->i++;
        if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return jfail(p, "bad number");
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        integral = 0;
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-')) p->i++;
        if (p->i >= p->n || p->s[p->i] < '0' || p->s[p->i] > '9') return jfail(p, "bad number");
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') p->i++;
    }
    size_t len = p->i - st;
    char tmp[64];
    if (len >= sizeof(tmp)) {
        /* long numbers: only the double value is kept */
        char *t = xmalloc(len + 1);
        memcpy(t, p->s + st, len);
        t[len] = 0;
        v->number = strtod(t, NULL);
        free(t);
        v->type = JSON_NUMBER;
        return 0;
    }
    memcpy(tmp, p->s + st, len);
    tmp[len] = 0;
    v->type = JSON_NUMBER;
    v->number = strtod(tmp, NULL);
    if (integral) {
        /* exact int64 parse with overflow detection */
        const char *q = tmp;
        int neg = *q == '-';
        if (neg) q++;
        uint64_t acc = 0;
        int ovf = 0;
        for (; *q; q++) {
            unsigned d = (unsigned)(*q - '0');
            if (acc > (UINT64_MAX - d) / 10) { ovf = 1; break; }
            acc = acc * 10 + d;
        }
        if (!ovf && (neg ? acc <= (uint64_t)INT64_MAX + 1 : acc <= (uint64_t)INT64_MAX)) {
            v->is_integer = 1;
            v->integer = neg ? (int64_t)(0 - acc) : (int64_t)acc;
        }
    }
    return 0;
}

static int parse_lit(jp *p, const char *lit) {
    size_t l = strlen(lit);
    if (p->i + l > p->n || memcmp(p->s + p->i, lit, l) != 0) return jfail(p, "unexpected token");
    p->i += l;
    return 0;
}

static int parse_value(jp *p, json_value *v, int depth) {
    memset(v, 0, sizeof(*v));
    if (depth > JSON_MAX_DEPTH) return jfail(p, "nesting too deep");
    skip_ws(p);
    if (p->i >= p->n) return jfail(p, "unexpected end of input");
    char c = p->s[p->i];
    if (c == '"') {
        v->type = JSON_STRING;
        return parse_string(p, &v->str, &v->len);
    }
    if (c == '{' || c == '[') {
        int obj = c == '{';
        v->type = obj ? JSON_OBJECT : JSON_ARRAY;
        p->i++;
        size_t cap = 0;
        skip_ws(p);
        if (p->i < p->n && p->s[p->i] == (obj ? '}' : ']')) { p->i++; return 0; }
        while (1) {
            if (v->n == cap) {
                cap = cap ? cap * 2 : 8;
                v->items = xrealloc(v->items, cap * sizeof(json_value));
                if (obj) {
                    v->keys = xrealloc(v->keys, cap * sizeof(char *));
                    v->key_lens = xrealloc(v->key_lens, cap * sizeof(size_t));
                }
            }
            if (obj) {
                skip_ws(p);
                if (p->i >= p->n || p->s[p->i] != '"') return jfail(p, "expected object key");
                if (parse_string(p, &v->keys[v->n], &v->key_lens[v->n])) return -1;
                skip_ws(p);
                if (p->i >= p->n || p->s[p->i] != ':') {
                    free(v->keys[v->n]);
                    return jfail(p, "expected ':'");
                }
                p->i++;
            }
            if (parse_value(p, &v->items[v->n], depth + 1)) {
                free_inner(&v->items[v->n]);
                if (obj) free(v->keys[v->n]);
                return -1;
            }
            v->n++;
            skip_ws(p);
            if (p->i >= p->n) return jfail(p, "unexpected end of input");
            if (p->s[p->i] == ',') { p->i++; continue; }
            if (p->s[p->i] == (obj ? '}' : ']')) { p->i++; return 0; }
            return jfail(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    if (c == 't') { v->type = JSON_BOOL; v->boolean = 1; return parse_lit(p, "true"); }
    if (c == 'f') { v->type = JSON_BOOL; return parse_lit(p, "false"); }
    if (c == 'n') { v->type = JSON_NULL; return parse_lit(p, "null"); }
    if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p, v);
    return jfail(p, "unexpected character");
}

json_value *json_parse(const char *buf, size_t len, const char *what, char *err, size_t errlen) {
    jp p = {buf, len, 0, what ? what : "json", err, errlen, 0};
    json_value *v = xcalloc(1, sizeof(json_value));
    if (parse_value(&p, v, 0) != 0) {
        free_inner(v);
        free(v);
        return NULL;
    }
    skip_ws(&p);
    if (p.i != p.n) {
        jfail(&p, "trailing characters");
        free_inner(v);
        free(v);
        return NULL;
    }
    return v;
}

void json_free(json_value *v) {
    if (!v) return;
    free_inner(v);
    free(v);
}

const json_value *json_get(const json_value *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    size_t kl = strlen(key);
    for (size_t k = 0; k < obj->n; k++)
        if (obj->key_lens[k] == kl && memcmp(obj->keys[k], key, kl) == 0) return &obj->items[k];
    return NULL;
}
