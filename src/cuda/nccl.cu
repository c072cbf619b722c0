/* nccl.cu: the CUDA backend's collectives (dist.h): one NCCL communicator over every rank, its
 * unique id made by rank 0 and broadcast through MPI by dist.c. Collectives run on the backend's
 * stream, ordered with the kernels around them. NCCL_* environment settings reach NCCL as they are. */
#include <nccl.h>
#include <string.h>

#include "cuda_common.cuh"

extern "C" {
#include "../dist.h"
}

static ncclComm_t g_comm;
static int g_have;

#define NCCL_CHECK(call)                                                                                   \
    do {                                                                                                   \
        ncclResult_t r_ = (call);                                                                          \
        if (r_ != ncclSuccess) pg_die("NCCL: %s failed: %s (%s:%d)", #call, ncclGetErrorString(r_), __FILE__, \
                                      __LINE__);                                                           \
    } while (0)

extern "C" void pg_cuda_select_device(int local_rank) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n <= 0) {
        cudaGetLastError(); /* no GPU: the CPU backend runs; clear the error */
        return;
    }
    CU_CHECK(cudaSetDevice(local_rank % n));
}

extern "C" int pg_nccl_unique_id(void *id, size_t idlen, char *err, size_t errlen) {
    if (idlen < sizeof(ncclUniqueId)) return pg_err(err, errlen, "unique id buffer too small");
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess) return pg_err(err, errlen, "ncclGetUniqueId: %s", ncclGetErrorString(r));
    memcpy(id, &u, sizeof(u));
    return 0;
}

extern "C" int pg_nccl_init(const void *id, int rank, int world, char *err, size_t errlen) {
    pg_cu_init();
    ncclUniqueId u;
    memcpy(&u, id, sizeof(u));
    ncclResult_t r = ncclCommInitRank(&g_comm, world, u, rank);
    if (r != ncclSuccess)
        return pg_err(err, errlen, "ncclCommInitRank (rank %d of %d): %s", rank, world, ncclGetErrorString(r));
    g_have = 1;
    return 0;
}

extern "C" void pg_nccl_allreduce_sum(float *x, size_t n) {
    NCCL_CHECK(ncclAllReduce(x, x, n, ncclFloat32, ncclSum, g_comm, pg_cu_stream));
}

extern "C" void pg_nccl_bcast_many(float *const *p, const size_t *n, const int *root, int count) {
    NCCL_CHECK(ncclGroupStart());
    for (int i = 0; i < count; i++) NCCL_CHECK(ncclBroadcast(p[i], p[i], n[i], ncclFloat32, root[i], g_comm, pg_cu_stream));
    NCCL_CHECK(ncclGroupEnd());
}

extern "C" void pg_nccl_finalize(void) {
    if (!g_have) return;
    cudaStreamSynchronize(pg_cu_stream);
    ncclCommDestroy(g_comm);
    g_have = 0;
}
