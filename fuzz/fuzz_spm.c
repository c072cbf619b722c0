/* fuzz_spm.c: SentencePiece .model reader (spm_load_mem) on arbitrary bytes. When a model loads:
 * spm_get_info, spm_byte_luts, the id <-> piece accessors, and spm_normalize / spm_encode /
 * spm_decode of a few short texts taken from the input itself plus fixed ones (ASCII, multi-byte
 * UTF-8, invalid UTF-8, whitespace runs, digits). Invariants checked: every encoded id is in range,
 * decoding the ids of an encode succeeds, decoding an out-of-range id fails with a message. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "fuzz_support.h"
#include "spm.h"

static void roundtrip(const spm_model *m, const char *text, size_t len) {
    char err[PG_ERRLEN] = "";
    size_t nl = 0;
    char *norm = spm_normalize(m, text, len, &nl);
    if (!norm) abort();
    if (strlen(norm) > nl) abort(); /* NUL-terminated at nl */
    free(norm);
    int32_t *ids = NULL;
    long n = spm_encode(m, text, len, &ids, err, sizeof(err));
    if (n < 0) {
        fuzz_check_err(err, "spm_encode");
        free(ids);
        return;
    }
    const int V = spm_vocab_size(m);
    fuzz_note("spm_encode: %zu bytes -> %ld ids", len, n);
    for (long i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= V) {
            fprintf(stderr, "spm_encode produced id %d outside [0, %d)\n", ids[i], V);
            abort();
        }
    size_t dl = 0;
    err[0] = 0;
    char *dec = spm_decode(m, ids, (size_t)n, &dl, err, sizeof(err));
    if (!dec) {
        fprintf(stderr, "spm_decode of spm_encode's ids failed: %s\n", err);
        abort();
    }
    free(dec);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[PG_ERRLEN] = "";
    spm_model *m = spm_load_mem(data, size, "fuzz.model", err, sizeof(err));
    if (!m) {
        fuzz_check_err(err, "spm_load_mem");
        return 0;
    }
    const int V = spm_vocab_size(m);
    if (V <= 0) abort();
    fuzz_note("spm_load_mem: %d pieces", V);
    spm_info info;
    spm_get_info(m, &info);
    for (int id = -1; id <= V; id++) {
        const char *p = spm_id_to_piece(m, id);
        size_t pl = spm_piece_len(m, id);
        if (id >= 0 && id < V) {
            if (!p || pl == 0) abort();
            if (spm_piece_to_id(m, p, pl) < 0) abort();
        }
        (void)spm_score(m, id);
        (void)spm_piece_type(m, id);
    }
    int16_t *bb = malloc((size_t)(V + 3) * sizeof(int16_t));
    uint8_t *ls = malloc((size_t)V + 3), *bd = malloc((size_t)V + 3);
    spm_byte_luts(m, V + 3, bb, ls, bd);
    for (int i = V; i < V + 3; i++)
        if (bb[i] != 0 || ls[i] != 0 || bd[i] != 1) abort();
    free(bb);
    free(ls);
    free(bd);

    static const char *fixed[] = {
        "Hello, world!  The quick brown fox 1234567.",
        " \t leading and  trailing   spaces \n",
        "caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80 \xe2\x96\x81x \xef\xbc\xa1\xef\xbd\x82",
        "bad \xff\xfe utf8 \xc3 \xe2\x82 \xed\xa0\x80",
        "",
    };
    for (size_t i = 0; i < sizeof(fixed) / sizeof(*fixed); i++) roundtrip(m, fixed[i], strlen(fixed[i]));
    /* texts from the input: its tail and a window from the middle (arbitrary bytes, NULs included) */
    size_t k = size < 48 ? size : 48;
    roundtrip(m, (const char *)data + size - k, k);
    if (size > 200) roundtrip(m, (const char *)data + size / 2, 64);
    /* pieces glued together */
    char buf[256];
    size_t bl = 0;
    for (int j = 0; j < 6 && V > 0; j++) {
        int id = (int)((size > (size_t)j ? data[j] * 131u + (unsigned)j * 7919u : (unsigned)j) % (unsigned)V);
        size_t pl = spm_piece_len(m, id);
        if (bl + pl + 1 >= sizeof(buf)) break;
        memcpy(buf + bl, spm_id_to_piece(m, id), pl);
        bl += pl;
        buf[bl++] = ' ';
    }
    roundtrip(m, buf, bl);
    /* decode: ids from the input, then an out-of-range id */
    int32_t ids[16];
    size_t ni = 0;
    for (size_t j = 0; j < 16 && j < size; j++) ids[ni++] = (int32_t)(data[j] % (unsigned)V);
    size_t dl;
    err[0] = 0;
    char *dec = spm_decode(m, ids, ni, &dl, err, sizeof(err));
    if (!dec) {
        fprintf(stderr, "spm_decode of in-range ids failed: %s\n", err);
        abort();
    }
    free(dec);
    ids[0] = V;
    err[0] = 0;
    dec = spm_decode(m, ids, 1, &dl, err, sizeof(err));
    if (dec) {
        fprintf(stderr, "spm_decode accepted id %d of a %d-piece model\n", V, V);
        abort();
    }
    fuzz_check_err(err, "spm_decode");
    spm_free(m);
    return 0;
}
