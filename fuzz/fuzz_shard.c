/* fuzz_shard.c: the token shard readers of src/data.h on arbitrary bytes: shard_parse (from
 * memory, with and without a vocabulary bound) and shard_check_header (the header-only check
 * `pgolf train` runs on every shard before starting, through an in-memory file). The two must
 * agree on the header: a file shard_parse accepts passes shard_check_header. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common.h"
#include "data.h"
#include "fuzz_support.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[PG_ERRLEN] = "";
    uint16_t *tok = NULL;
    size_t n = 0;
    int ok_parse = shard_parse(data, size, "fuzz.bin", 0, &tok, &n, err, sizeof(err)) == 0;
    if (ok_parse) {
        if (n != (size - 1024) / 2) abort();
        fuzz_note("shard_parse: %zu tokens", n);
        free(tok);
    } else {
        fuzz_check_err(err, "shard_parse");
    }
    int vocab = size > 12 ? 1 + data[12] * 4 : 1024;
    err[0] = 0;
    if (shard_parse(data, size, "fuzz.bin", vocab, &tok, &n, err, sizeof(err)) == 0) {
        for (size_t i = 0; i < n; i++)
            if (tok[i] >= vocab) abort();
        free(tok);
    } else {
        fuzz_check_err(err, "shard_parse(vocab)");
    }
    char path[64];
    int fd = fuzz_memfile(data, size, path, sizeof(path));
    if (fd < 0) return 0;
    err[0] = 0;
    int ok_hdr = shard_check_header(path, err, sizeof(err)) == 0;
    if (!ok_hdr) fuzz_check_err(err, "shard_check_header");
    close(fd);
    if (ok_parse && !ok_hdr) {
        fprintf(stderr, "shard_parse accepted the shard, shard_check_header refused it: %s\n", err);
        abort();
    }
    return 0;
}
