/* tokenize.h: `pgolf tokenize`, text -> challenge-format shards with the conventions of the
 * challenge's exporter (data/download_hf_docs_and_tokenize.py): every document is BOS followed by
 * its ids (no EOS); the first val_docs documents go to fineweb_val_NNNNNN.bin, the rest to
 * fineweb_train_NNNNNN.bin; every shard holds shard_tokens tokens except the last of each split
 * (documents run across shard ends). The driver is exposed with the encoder behind a function
 * pointer so tests can run it with a fake tokenizer; docs/tokenize.md describes the policies. */
#ifndef PGOLF_TOKENIZE_H
#define PGOLF_TOKENIZE_H

#include <stddef.h>
#include <stdint.h>

/* Encode text[0..len) (valid UTF-8) into *ids (malloc'd); returns the count or -1 with err set.
 * Called from several threads at once with the same ctx. */
typedef long (*tk_encode_fn)(void *ctx, const char *text, size_t len, int32_t **ids, char *err, size_t errlen);

enum { TK_FORMAT_AUTO, TK_FORMAT_JSONL, TK_FORMAT_TEXT };

typedef struct {
    const char *const *inputs; /* paths; "-" is stdin */
    int n_inputs;
    const char *out_dir;
    int format;               /* TK_FORMAT_* */
    const char *text_key;     /* JSONL member holding the document ("text") */
    long long val_docs;       /* first N documents -> validation (50,000) */
    long long shard_tokens;   /* tokens per shard (10^8) */
    long long max_docs;       /* stop after this many documents (<0: all) */
    int threads;
    int skip_bad;             /* skip malformed lines (reported) instead of failing */
    int fix_utf8;             /* replace invalid UTF-8 with U+FFFD (reported) instead of failing */
    int skip_empty;           /* drop documents that encode to no ids (reported) instead of a lone BOS */
    int progress;             /* 0: none, 1: progress line on stderr */
} tk_options;

typedef struct {
    long long docs, docs_val, docs_train;
    long long tokens_val, tokens_train;
    int files_val, files_train;
    long long lines;           /* input lines read */
    long long bytes_in;        /* decompressed input bytes */
    long long empty_kept, empty_skipped, bad_skipped, utf8_fixed, blank_lines;
    double seconds;
} tk_stats;

void tk_options_default(tk_options *o);

/* Run the whole job. Returns 0, or -1 with one line in err; on failure no shard is left in
 * out_dir (new shards are renamed into place only after every document was written, and the
 * existing fineweb_{val,train}_*.bin that the new set does not overwrite are removed then, as the
 * exporter does). Warnings about skipped/fixed lines go to stderr. */
int tokenize_run(const tk_options *o, tk_encode_fn enc, void *ctx, int bos_id, int vocab, tk_stats *st, char *err,
                 size_t errlen);

/* Replace ill-formed UTF-8 in s[0..n) with U+FFFD exactly as Python's bytes.decode("utf-8",
 * "replace") does (one U+FFFD per maximal ill-formed subpart). Returns a malloc'd copy (length in
 * *out_n) and the number of replacements in *n_repl. */
char *tk_utf8_replace(const char *s, size_t n, size_t *out_n, size_t *n_repl);
/* Offset of the first ill-formed UTF-8 byte in s[0..n), or n if it is all valid. */
size_t tk_utf8_check(const char *s, size_t n);

#endif
