/* fuzz_checkpoint.c: the checkpoint reader ckpt_load (src/checkpoint.h) on arbitrary bytes, given
 * through an in-memory file. The model is a 96-float arena on host memory (fuzz_host_ops) with the
 * default configuration, the one gen_seeds writes its seeds with. Each input runs as it is and
 * with its trailing CRC-32 recomputed, so mutations reach the configuration block and the sizes;
 * the EMA/SWA arrays are passed to match the input's array count (4, 5 or 6). */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint.h"
#include "common.h"
#include "fuzz_support.h"

#define NF 96

static pg_config g_cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    config_defaults(&g_cfg);
    return 0;
}

static void one(const uint8_t *data, size_t size, int fix) {
    uint8_t *buf = malloc(size ? size : 1);
    if (size) memcpy(buf, data, size);
    if (fix && !fuzz_fix_checkpoint(buf, size)) {
        free(buf);
        return;
    }
    char path[64];
    int fd = fuzz_memfile(buf, size, path, sizeof(path));
    free(buf);
    if (fd < 0) return;
    uint32_t na = size >= 16 ? pg_rd_u32(data + 12) : 4;
    float w[NF], am[NF], av[NF], mb[NF], ema[NF], swa[NF];
    gpt_model m;
    memset(&m, 0, sizeof(m));
    m.ops = &fuzz_host_ops;
    m.n_floats = NF;
    m.w = w;
    m.wc = (pg_wc *)w;
    optimizer o;
    memset(&o, 0, sizeof(o));
    o.m = &m;
    o.adam_m = am;
    o.adam_v = av;
    o.muon_buf = mb;
    ckpt_progress p;
    memset(&p, 0, sizeof(p));
    char err[PG_ERRLEN] = "";
    float *e = na >= 5 ? ema : NULL, *s = na == 5 ? NULL : (na >= 6 ? swa : NULL);
    if (na == 5 && (size % 2)) e = NULL, s = swa; /* a 5-array file is EMA or SWA: try both */
    int rc = ckpt_load(path, &g_cfg, &m, &o, e, s, &p, err, sizeof(err));
    if (rc != 0) fuzz_check_err(err, "ckpt_load");
    else fuzz_note("ckpt_load: loaded step %ld (%u arrays%s)", p.step, na, fix ? ", CRC repaired" : "");
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    one(data, size, 0);
    one(data, size, 1);
    return 0;
}
