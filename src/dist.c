/* dist.c: ranks and collectives (see dist.h). Built with MPI when the Makefile finds mpicc
 * (PGOLF_MPI), with NCCL too when it also builds the CUDA backend (PGOLF_NCCL). */
#include "dist.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

#ifdef PGOLF_MPI
#include <mpi.h>
#endif

static int g_rank, g_world = 1, g_local = 0;
#ifdef PGOLF_MPI
static int g_mpi; /* MPI_Init done, MPI_Finalize not yet */
#endif

/* collectives run whenever MPI is up, on one rank too: `mpirun -np 1` exercises every path (NCCL's on
 * one GPU) with results equal to a plain run's */
static int collectives_on(void) {
#ifdef PGOLF_MPI
    return g_mpi;
#else
    return 0;
#endif
}

int dist_rank(void) { return g_rank; }
int dist_world(void) { return g_world; }
int dist_local_rank(void) { return g_local; }

/* An MPI launcher left its mark in the environment (Open MPI, PMIx, PMI-1/2 of MPICH, Intel MPI,
 * Slurm's srun, MVAPICH). */
static int launched_by_mpi(void) {
    static const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "MV2_COMM_WORLD_SIZE"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        if (getenv(vars[i])) return 1;
    return 0;
}

#ifdef PGOLF_MPI
/* an environment value set by a launcher must agree with MPI's */
static void agree(const char *key, int mpi_value) {
    const char *v = getenv(key);
    char buf[32];
    snprintf(buf, sizeof(buf), "%d", mpi_value);
    if (v && *v && strcmp(v, buf))
        pg_die("%s=%s disagrees with MPI, which started this process as %s %d (unset %s or fix the launch)", key, v,
               key, mpi_value, key);
    setenv(key, buf, 1);
}

static void abort_all(int code) {
    fflush(stdout);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}
#endif

void dist_init(void) {
    if (!launched_by_mpi()) {
        const char *w = getenv("WORLD_SIZE");
        if (w && *w && strcmp(w, "1") && strcmp(w, "0"))
            pg_die("WORLD_SIZE=%s but this process was not started by an MPI launcher: run `mpirun -np %s pgolf "
                   "train ...` (pgolf's collectives go through MPI%s)",
                   w, w,
#ifdef PGOLF_MPI
                   ""
#else
                   "; this pgolf was built without it: install libopenmpi-dev and rebuild"
#endif
            );
        return;
    }
#ifdef PGOLF_MPI
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) pg_die("MPI_Init failed");
    g_mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_world);
    MPI_Comm node;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &g_local);
    MPI_Comm_free(&node);
    if (g_world > 1) {
        snprintf(pg_die_prefix, sizeof(pg_die_prefix), "[rank %d/%d] ", g_rank, g_world);
        pg_die_exit = abort_all;
    }
    agree("RANK", g_rank);
    agree("WORLD_SIZE", g_world);
    agree("LOCAL_RANK", g_local);
#ifdef PGOLF_NCCL
    pg_cuda_select_device(g_local);
#endif
#else
    pg_die("this process was started by an MPI launcher, but this pgolf was built without MPI: install "
           "libopenmpi-dev (Debian) and rebuild");
#endif
}

void dist_finalize(void) {
#ifdef PGOLF_MPI
    if (!g_mpi) return;
#ifdef PGOLF_NCCL
    pg_nccl_finalize();
#endif
    pg_die_exit = NULL;
    pg_die_prefix[0] = 0;
    fflush(stdout);
    MPI_Finalize();
    g_mpi = 0;
#endif
}

/* ---- configuration agreement ---- */

typedef struct {
    char *buf;
    size_t len, cap;
} strbuf;

/* KEY=VALUE of every setting (config_dump's lines less the "config " prefix and the " (source)"
 * suffix), without the keys that differ per rank by design */
static void collect_line(const char *line, void *ctx) {
    static const char *skip[] = {"RANK=", "LOCAL_RANK=", "RUN_ID="};
    if (!strncmp(line, "config ", 7)) line += 7;
    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (!strncmp(line, skip[i], strlen(skip[i]))) return;
    strbuf *b = ctx;
    const char *src = strrchr(line, '(');
    size_t n = src && src > line && src[-1] == ' ' ? (size_t)(src - 1 - line) : strlen(line);
    if (b->len + n + 2 > b->cap) {
        b->cap = 2 * (b->len + n + 2);
        b->buf = xrealloc(b->buf, b->cap);
    }
    memcpy(b->buf + b->len, line, n);
    b->len += n;
    b->buf[b->len++] = '\n';
    b->buf[b->len] = 0;
}

void dist_check_config(pg_config *c) {
    if (g_world <= 1) return;
    /* RUN_ID: rank 0's */
    char id[256] = {0};
    if (g_rank == 0) snprintf(id, sizeof(id), "%s", c->run_id);
    dist_bcast_host(id, sizeof(id), 0);
    free(c->run_id);
    c->run_id = xstrdup(id);
    strbuf mine = {0};
    config_dump(c, collect_line, &mine);
    unsigned long long len = mine.len;
    dist_bcast_host(&len, sizeof(len), 0);
    char *ref = xmalloc(len + 1);
    if (g_rank == 0) memcpy(ref, mine.buf, len);
    dist_bcast_host(ref, len, 0);
    ref[len] = 0;
    double differ = (len != mine.len || memcmp(ref, mine.buf, len)) ? 1.0 : 0.0;
    double any = differ;
    dist_max_f64(&any, 1);
    if (differ) { /* name the first differing setting */
        const char *a = mine.buf, *b = ref;
        while (*a && *b) {
            const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
            if (ea - a != eb - b || memcmp(a, b, (size_t)(ea - a))) break;
            a = ea + 1;
            b = eb + 1;
        }
        const char *ea = strchr(a, '\n'), *eb = strchr(b, '\n');
        fprintf(stderr, "pgolf: error: %sthis rank's configuration differs from rank 0's: %.*s here, %.*s on rank 0\n",
                pg_die_prefix, (int)(ea ? ea - a : 0), a, (int)(eb ? eb - b : 0), b);
    }
    free(ref);
    free(mine.buf);
    if (any != 0) {
        dist_finalize();
        exit(1);
    }
}

/* ---- collectives ---- */

#ifdef PGOLF_MPI
#define MPI_CHUNK ((size_t)1 << 28)
#endif

void dist_sum_f64(double *x, int n) {
#ifdef PGOLF_MPI
    if (collectives_on()) MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
#else
    (void)x, (void)n;
#endif
}

void dist_max_f64(double *x, int n) {
#ifdef PGOLF_MPI
    if (collectives_on()) MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
#else
    (void)x, (void)n;
#endif
}

void dist_bcast_host(void *p, size_t bytes, int root) {
#ifdef PGOLF_MPI
    if (!collectives_on()) return;
    for (size_t o = 0; o < bytes; o += MPI_CHUNK) {
        size_t k = bytes - o < MPI_CHUNK ? bytes - o : MPI_CHUNK;
        MPI_Bcast((char *)p + o, (int)k, MPI_BYTE, root, MPI_COMM_WORLD);
    }
#else
    (void)p, (void)bytes, (void)root;
#endif
}

#ifdef PGOLF_NCCL
/* the NCCL communicator, made on first use by a CUDA-backend collective */
static int g_nccl;
static void nccl_ready(void) {
    if (g_nccl) return;
    unsigned char id[256] = {0}; /* ncclUniqueId is 128 bytes */
    char err[PG_ERRLEN] = "";
    int bad = 0;
    if (g_rank == 0) bad = pg_nccl_unique_id(id, sizeof(id), err, sizeof(err)) != 0;
    if (bad) pg_die("NCCL: %s", err);
    dist_bcast_host(id, sizeof(id), 0);
    if (pg_nccl_init(id, g_rank, g_world, err, sizeof(err)) != 0) pg_die("NCCL: %s", err);
    g_nccl = 1;
}
#endif

/* Non-blocking sums: requests kept until dist_reduce_wait; each start also lets MPI progress the
 * earlier ones (Open MPI moves a non-blocking collective on only inside MPI calls) */
#ifdef PGOLF_MPI
static MPI_Request *g_req;
static int g_nreq, g_capreq;
#endif

int dist_collectives(void) { return collectives_on(); }

void dist_reduce_start(const pg_ops *ops, float *x, size_t n, int root) {
    if (!collectives_on()) return;
    PG_CHECK(root >= DIST_ALL && root < g_world);
#ifdef PGOLF_NCCL
    if (ops != &pg_cpu_ops) {
        nccl_ready();
        pg_nccl_reduce_start(x, n, root);
        return;
    }
#endif
#ifdef PGOLF_MPI
    PG_CHECK(ops == &pg_cpu_ops);
    for (size_t o = 0; o < n; o += MPI_CHUNK) {
        int k = (int)(n - o < MPI_CHUNK ? n - o : MPI_CHUNK);
        if (g_nreq == g_capreq) {
            g_capreq = g_capreq ? 2 * g_capreq : 64;
            g_req = xrealloc(g_req, (size_t)g_capreq * sizeof(MPI_Request));
        }
        MPI_Request *r = &g_req[g_nreq++];
        if (root == DIST_ALL) MPI_Iallreduce(MPI_IN_PLACE, x + o, k, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, r);
        else if (root == g_rank) MPI_Ireduce(MPI_IN_PLACE, x + o, k, MPI_FLOAT, MPI_SUM, root, MPI_COMM_WORLD, r);
        else MPI_Ireduce(x + o, NULL, k, MPI_FLOAT, MPI_SUM, root, MPI_COMM_WORLD, r);
    }
    int done = 0;
    MPI_Testall(g_nreq, g_req, &done, MPI_STATUSES_IGNORE);
#else
    (void)ops, (void)x, (void)n;
#endif
}

void dist_reduce_wait(const pg_ops *ops) {
    if (!collectives_on()) return;
#ifdef PGOLF_NCCL
    if (ops != &pg_cpu_ops) {
        nccl_ready();
        pg_nccl_reduce_wait();
        return;
    }
#endif
#ifdef PGOLF_MPI
    MPI_Waitall(g_nreq, g_req, MPI_STATUSES_IGNORE);
    g_nreq = 0;
#endif
    (void)ops;
}

void dist_bcast_many(const pg_ops *ops, float *const *p, const size_t *n, const int *root, int count) {
    if (!collectives_on()) return;
#ifdef PGOLF_NCCL
    if (ops != &pg_cpu_ops) {
        nccl_ready();
        pg_nccl_bcast_many(p, n, root, count);
        return;
    }
#endif
#ifdef PGOLF_MPI
    PG_CHECK(ops == &pg_cpu_ops);
    MPI_Request *rq = xmalloc((size_t)(count > 0 ? count : 1) * sizeof(MPI_Request));
    for (int i = 0; i < count; i++) {
        PG_CHECK(n[i] < ((size_t)1 << 31));
        MPI_Ibcast(p[i], (int)n[i], MPI_FLOAT, root[i], MPI_COMM_WORLD, &rq[i]);
    }
    MPI_Waitall(count, rq, MPI_STATUSES_IGNORE);
    free(rq);
#else
    (void)ops, (void)p, (void)n, (void)root, (void)count;
#endif
}
