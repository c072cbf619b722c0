/* nccl.cu: the CUDA backend's collectives (dist.h): one NCCL communicator over every rank, its
 * unique id made by rank 0 and broadcast through MPI by dist.c. Every collective runs on one
 * communication stream (so they execute in the order issued, as NCCL requires), after the kernels
 * issued before it on the backend's stream (an event); dist_reduce_wait and the blocking
 * collectives make the backend's stream wait for the communication stream, so the sums of the
 * backward's gradients overlap the kernels that follow their start. NCCL_* environment settings
 * reach NCCL as they are. */
#include <nccl.h>
#include <string.h>

#include "cuda_common.cuh"

extern "C" {
#include "../dist.h"
}

static ncclComm_t g_comm;
static int g_have;
static cudaStream_t g_comm_stream;
static cudaEvent_t g_fork, g_join;

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
    CU_CHECK(cudaStreamCreateWithFlags(&g_comm_stream, cudaStreamNonBlocking));
    CU_CHECK(cudaEventCreateWithFlags(&g_fork, cudaEventDisableTiming));
    CU_CHECK(cudaEventCreateWithFlags(&g_join, cudaEventDisableTiming));
    g_have = 1;
    return 0;
}

/* the communication stream waits for everything issued so far on the backend's stream */
static void fork_comm(void) {
    CU_CHECK(cudaEventRecord(g_fork, pg_cu_stream));
    CU_CHECK(cudaStreamWaitEvent(g_comm_stream, g_fork, 0));
}

extern "C" void pg_nccl_reduce_start(float *x, size_t n, int root) {
    fork_comm();
    if (root == DIST_ALL) NCCL_CHECK(ncclAllReduce(x, x, n, ncclFloat32, ncclSum, g_comm, g_comm_stream));
    else NCCL_CHECK(ncclReduce(x, x, n, ncclFloat32, ncclSum, root, g_comm, g_comm_stream));
}

/* the backend's stream waits for every collective issued so far */
extern "C" void pg_nccl_reduce_wait(void) {
    CU_CHECK(cudaEventRecord(g_join, g_comm_stream));
    CU_CHECK(cudaStreamWaitEvent(pg_cu_stream, g_join, 0));
}

extern "C" void pg_nccl_bcast_many(float *const *p, const size_t *n, const int *root, int count) {
    fork_comm();
    NCCL_CHECK(ncclGroupStart());
    for (int i = 0; i < count; i++) NCCL_CHECK(ncclBroadcast(p[i], p[i], n[i], ncclFloat32, root[i], g_comm, g_comm_stream));
    NCCL_CHECK(ncclGroupEnd());
    pg_nccl_reduce_wait();
}

extern "C" void pg_nccl_finalize(void) {
    if (!g_have) return;
    cudaStreamSynchronize(pg_cu_stream);
    cudaStreamSynchronize(g_comm_stream);
    ncclCommDestroy(g_comm);
    cudaEventDestroy(g_fork);
    cudaEventDestroy(g_join);
    cudaStreamDestroy(g_comm_stream);
    g_have = 0;
}
