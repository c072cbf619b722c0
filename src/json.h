/* json.h: a small, strict JSON parser (RFC 8259) producing a DOM, used for safetensors headers,
 * JSONL documents and artifact metadata. Strings are unescaped to UTF-8 (\uXXXX and surrogate
 * pairs included); an unpaired surrogate, a control character in a string, invalid UTF-8 in the
 * input, trailing garbage or nesting deeper than 64 levels is an error with a byte offset. Numbers
 * keep both their double value and, when integral and in range, an exact int64. */
#ifndef PGOLF_JSON_H
#define PGOLF_JSON_H

#include <stddef.h>
#include <stdint.h>

typedef enum { JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT } json_type;

typedef struct json_value json_value;
struct json_value {
    json_type type;
    int boolean;
    double number;
    int64_t integer; /* valid when is_integer */
    int is_integer;
    char *str;      /* JSON_STRING: UTF-8, NUL-terminated (may contain embedded NULs: see len) */
    size_t len;     /* string byte length */
    json_value *items; /* ARRAY elements / OBJECT values */
    char **keys;       /* OBJECT keys (UTF-8) */
    size_t *key_lens;
    size_t n;
};

/* Parse buf[0..len). Returns NULL on error with "<what>: <reason> at byte N" in err. */
json_value *json_parse(const char *buf, size_t len, const char *what, char *err, size_t errlen);
void json_free(json_value *v);
/* Object member lookup (first match) or NULL. */
const json_value *json_get(const json_value *obj, const char *key);

#endif
