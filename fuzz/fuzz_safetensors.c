/* fuzz_safetensors.c: the safetensors reader safetensors_parse (src/statedict.h), the other file
 * format `pgolf eval` and `pgolf export` take from the user, on arbitrary bytes. */
#include <stdlib.h>

#include "common.h"
#include "fuzz_support.h"
#include "statedict.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    statedict sd;
    char err[PG_ERRLEN] = "";
    if (safetensors_parse(data, size, "fuzz.safetensors", &sd, err, sizeof(err)) != 0) {
        fuzz_check_err(err, "safetensors_parse");
        return 0;
    }
    fuzz_note("safetensors_parse: %d tensors", sd.n);
    for (int i = 0; i < sd.n; i++) {
        const sd_tensor *t = &sd.t[i];
        if ((size_t)sd_numel(t) * pg_dtype_size(t->dtype) != t->nbytes) abort();
        if (t->nbytes > size) abort();
    }
    sd_free(&sd);
    return 0;
}
