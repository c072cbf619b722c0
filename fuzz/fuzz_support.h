/* fuzz_support.h: shared pieces of the libFuzzer targets in fuzz/ (see docs/fuzzing.md): a host
 * memory "backend" so checkpoint code runs without OpenBLAS/OpenMP, a memfd helper for readers
 * that take a path, and checksum repair so mutated inputs get past the CRC checks. */
#ifndef PGOLF_FUZZ_SUPPORT_H
#define PGOLF_FUZZ_SUPPORT_H

#include <stddef.h>
#include <stdint.h>

#include "ops.h"

/* Host-memory ops (alloc/free/zero/to_device/to_host/weights_to_compute/sync/peak only); the
 * compute kernels are NULL: nothing here runs a forward pass. */
extern const pg_ops fuzz_host_ops;

/* An anonymous in-memory file holding data[0..n): returns its fd and writes "/proc/self/fd/N" to
 * path (for readers that take a path); -1 on failure. Close the fd when done. */
int fuzz_memfile(const uint8_t *data, size_t n, char *path, size_t pathlen);

/* Abort (a finding) unless err holds a non-empty message after a reader returned an error. */
void fuzz_check_err(const char *err, const char *who);

/* With PGOLF_FUZZ_VERBOSE set: print a line to stderr (what a target accepted or refused). */
void fuzz_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Recompute the CRC-64 fields of a pgolf artifact in place from its own section sizes (file size
 * set to n). Returns 1 if the header is long enough to repair, 0 otherwise. */
int fuzz_fix_artifact(uint8_t *buf, size_t n);
/* Recompute the trailing CRC-32 of a checkpoint in place. 1 if repaired, 0 if too short. */
int fuzz_fix_checkpoint(uint8_t *buf, size_t n);

#endif
