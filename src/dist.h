/* dist.h: data parallelism across processes (docs/distributed.md). Launched by an MPI launcher
 * (mpirun, mpiexec, srun with PMI), pgolf takes its rank, world size and local rank from MPI and
 * exports them as RANK, WORLD_SIZE and LOCAL_RANK before the configuration is read (values a
 * launcher already set must agree). Collectives on host memory use MPI; on backend memory they use
 * MPI for the CPU backend and NCCL for CUDA (the unique id exchanged through MPI). Started without
 * a launcher, pgolf is one process and every collective is a no-op.
 *
 * Failure handling: once more than one process runs, pg_die prefixes its line with the rank and
 * calls MPI_Abort, so one rank's error ends every rank instead of leaving them in a collective. */
#ifndef PGOLF_DIST_H
#define PGOLF_DIST_H

#include <stddef.h>

#include "config.h"
#include "ops.h"

/* Starts MPI if an MPI launcher started this process. Dies with one line if WORLD_SIZE > 1 is set
 * without one, or if RANK/WORLD_SIZE/LOCAL_RANK disagree with MPI's. */
void dist_init(void);
int dist_rank(void);
int dist_world(void);
int dist_local_rank(void);
/* MPI_Finalize (after the last collective); pg_die no longer aborts the other ranks */
void dist_finalize(void);

/* After config_resolve on every rank: RUN_ID is rank 0's (a generated uuid differs per process),
 * and every other setting must equal rank 0's: else each differing rank names the first differing
 * key and all ranks exit 1. */
void dist_check_config(pg_config *c);

/* host collectives (no-ops on one process) */
void dist_sum_f64(double *x, int n);
void dist_max_f64(double *x, int n);
void dist_bcast_host(void *p, size_t bytes, int root);

/* backend-memory collectives, fp32. Sums run in the background: dist_reduce_start sums x (n
 * floats) over the ranks into every rank's x (root DIST_ALL) or into rank root's alone (the other
 * ranks' x is left as it was); x must not be touched until dist_reduce_wait, which completes every
 * sum started (on the CUDA backend it orders the backend's stream after them without blocking the
 * host). Every rank starts the same sums in the same order. */
#define DIST_ALL (-1)
void dist_reduce_start(const pg_ops *ops, float *x, size_t n, int root);
void dist_reduce_wait(const pg_ops *ops);
/* whether collectives run (MPI is up, on one rank too) */
int dist_collectives(void);
/* several broadcasts at once: buffer i (n[i] floats) from rank root[i] */
void dist_bcast_many(const pg_ops *ops, float *const *p, const size_t *n, const int *root, int count);

#ifdef PGOLF_NCCL
/* src/cuda/nccl.cu: the NCCL communicator of the CUDA backend */
int pg_nccl_unique_id(void *id, size_t idlen, char *err, size_t errlen); /* rank 0 */
int pg_nccl_init(const void *id, int rank, int world, char *err, size_t errlen);
void pg_nccl_reduce_start(float *x, size_t n, int root); /* root DIST_ALL: all-reduce */
void pg_nccl_reduce_wait(void);
void pg_nccl_bcast_many(float *const *p, const size_t *n, const int *root, int count);
void pg_nccl_finalize(void);
/* cudaSetDevice(local_rank modulo the visible devices), before the backend starts */
void pg_cuda_select_device(int local_rank);
#endif

#endif
