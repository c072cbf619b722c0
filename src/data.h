/* data.h: the challenge's token shards (spec §1.1), the sequential training stream with its
 * per-rank span split (§1.4), and the validation tokens (§1.3). Shard format: 256 little-endian
 * int32 header (magic 20240520, version 1, token count N), then N little-endian uint16 ids; the
 * file size must be exactly 1024 + 2N. */
#ifndef PGOLF_DATA_H
#define PGOLF_DATA_H

#include <stddef.h>
#include <stdint.h>

#define SHARD_MAGIC 20240520
#define SHARD_VERSION 1
#define SHARD_HEADER_INTS 256

/* Load one shard, checking magic, version, size and (if vocab > 0) every id < vocab. */
int shard_load(const char *path, int vocab, uint16_t **tokens, size_t *n, char *err, size_t errlen);
/* Header and file-size checks only (magic, version, count, size), without reading the tokens. */
int shard_check_header(const char *path, char *err, size_t errlen);
/* Parse a shard already in memory (what = name for messages). */
int shard_parse(const uint8_t *buf, size_t len, const char *what, int vocab, uint16_t **tokens, size_t *n,
                char *err, size_t errlen);
/* Write a shard atomically. */
int shard_write(const char *path, const uint16_t *tokens, size_t n, char *err, size_t errlen);

/* Sorted glob of a pattern (byte order, as Python's sorted(glob(...))). Returns the count, 0 if
 * nothing matched. */
int data_glob(const char *pattern, char ***files);
void data_free_list(char **files, int n);

/* Token stream: shard 0 position 0, wraps after the last shard, spans cross shard ends. */
typedef struct {
    char **files;
    int n_files;
    int file_idx;
    int vocab;
    uint16_t *tokens;
    size_t n_tokens, pos;
} token_stream;

int stream_open(token_stream *s, const char *pattern, int vocab, char *err, size_t errlen);
int stream_take(token_stream *s, size_t n, uint16_t *out, char *err, size_t errlen);
void stream_close(token_stream *s);
/* Position for checkpoints: (file index, offset). */
int stream_seek(token_stream *s, int file_idx, size_t pos, char *err, size_t errlen);

/* DistributedTokenLoader.next_batch: one contiguous chunk of (local+1)*world tokens per call, rank r
 * takes its span; x = span[0:local], y = span[1:local+1] (row-major (local/T, T)). */
typedef struct {
    token_stream stream;
    int rank, world;
    uint16_t *chunk;
    size_t chunk_cap;
} batch_loader;

int loader_open(batch_loader *l, const char *pattern, int vocab, int rank, int world, char *err, size_t errlen);
int loader_next(batch_loader *l, long global_tokens, int grad_accum, int32_t *x, int32_t *y, char *err,
                size_t errlen);
void loader_close(batch_loader *l);

/* Validation tokens: all shards of the pattern concatenated, truncated to usable+1 with
 * usable = floor((N-1)/seq_len)*seq_len. */
int val_tokens_load(const char *pattern, int vocab, long seq_len, uint16_t **tokens, size_t *n_total,
                    size_t *usable, char *err, size_t errlen);

#endif
