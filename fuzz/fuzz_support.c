/* fuzz_support.c: see fuzz_support.h. Also the source bundle symbols artifact.c refers to (the
 * fuzz targets never build an artifact with the real bundle). */
#include "fuzz_support.h"

#include <lzma.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include "artifact.h"
#include "common.h"

const unsigned char pgolf_src_bundle[] = {0};
const size_t pgolf_src_bundle_len = 0;
const size_t pgolf_src_bundle_raw_len = 0;
const char pgolf_src_bundle_codec[] = "none";

static void *h_alloc(size_t bytes) { return xcalloc(1, bytes ? bytes : 1); }
static void h_free(void *p) { free(p); }
static void h_zero(void *p, size_t bytes) { memset(p, 0, bytes); }
static void h_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) memmove(dst, src, bytes);
}
static void h_sync(void) {}
static size_t h_peak(void) { return 0; }
static void h_w2c(pg_wc *wc, const float *w, size_t n) {
    if ((const void *)wc != (const void *)w && n) memcpy(wc, w, n * sizeof(float));
}

const pg_ops fuzz_host_ops = {
    .name = "fuzz-host",
    .act_bytes = sizeof(float),
    .wc_bytes = sizeof(float),
    .alloc = h_alloc,
    .free = h_free,
    .zero = h_zero,
    .to_device = h_copy,
    .to_host = h_copy,
    .sync = h_sync,
    .peak_bytes = h_peak,
    .weights_to_compute = h_w2c,
};

int fuzz_memfile(const uint8_t *data, size_t n, char *path, size_t pathlen) {
    int fd = memfd_create("pgolf-fuzz", 0);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < n) {
        ssize_t k = write(fd, data + off, n - off);
        if (k <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)k;
    }
    snprintf(path, pathlen, "/proc/self/fd/%d", fd);
    return fd;
}

/* PGOLF_FUZZ_VERBOSE=1: print every rejection (read before a target clears the environment) */
static int g_verbose;
__attribute__((constructor)) static void read_verbose(void) { g_verbose = getenv("PGOLF_FUZZ_VERBOSE") != NULL; }

void fuzz_note(const char *fmt, ...) {
    if (!g_verbose) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void fuzz_check_err(const char *err, const char *who) {
    fuzz_note("%s: %s", who, err);
    if (!err[0]) {
        fprintf(stderr, "%s failed without an error message\n", who);
        abort();
    }
}

int fuzz_fix_artifact(uint8_t *b, size_t n) {
    if (n < ART_HEADER_BYTES) return 0;
    uint64_t ml = pg_rd_u64(b + 24), pl = pg_rd_u64(b + 32), cl = pg_rd_u64(b + 48);
    size_t body = n - ART_HEADER_BYTES;
    pg_wr_u64(b + 16, n);
    /* keep the header's meta and payload sizes; the code section takes the rest */
    if (ml <= body && pl <= body - ml) {
        cl = body - ml - pl;
        pg_wr_u64(b + 48, cl);
        const uint8_t *m = b + ART_HEADER_BYTES;
        pg_wr_u64(b + 72, lzma_crc64(m, ml, 0));
        pg_wr_u64(b + 80, lzma_crc64(m + ml, pl, 0));
        pg_wr_u64(b + 88, lzma_crc64(m + ml + pl, cl, 0));
    }
    pg_wr_u64(b + 96, lzma_crc64(b, 96, 0));
    return 1;
}

int fuzz_fix_checkpoint(uint8_t *b, size_t n) {
    if (n < 4) return 0;
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, b, (uInt)(n - 4));
    pg_wr_u32(b + n - 4, (uint32_t)c);
    return 1;
}
