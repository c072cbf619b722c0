/* spm.h: SentencePiece `.model` files read natively (own protobuf wire-format parser): pieces,
 * scores, piece types, trainer and normalizer specs; the byte-count tables of the challenge's
 * val_bpb; encoding and decoding identical to SentencePiece 0.1.97 (BPE models). */
#ifndef PGOLF_SPM_H
#define PGOLF_SPM_H

#include <stddef.h>
#include <stdint.h>

/* Piece types, numbered as in sentencepiece_model.proto. */
enum {
    SPM_NORMAL = 1,
    SPM_UNKNOWN = 2,
    SPM_CONTROL = 3,
    SPM_USER_DEFINED = 4,
    SPM_UNUSED = 5,
    SPM_BYTE = 6,
};

typedef struct spm_model spm_model;

/* Load from a file or from memory. On error returns NULL with one line "<what>: <problem>" in err
 * (truncated field, bad wire type, not a SentencePiece model, ...). Never reads out of bounds. */
spm_model *spm_load(const char *path, char *err, size_t errlen);
spm_model *spm_load_mem(const uint8_t *buf, size_t len, const char *what, char *err, size_t errlen);
void spm_free(spm_model *m);

int spm_vocab_size(const spm_model *m);
const char *spm_id_to_piece(const spm_model *m, int id); /* UTF-8, NUL-terminated */
float spm_score(const spm_model *m, int id);
int spm_piece_type(const spm_model *m, int id); /* SPM_* */
int spm_bos_id(const spm_model *m);
int spm_eos_id(const spm_model *m);
int spm_unk_id(const spm_model *m);
int spm_pad_id(const spm_model *m);
/* Byte length of piece id (pieces may in principle hold NUL bytes); 0 for an id out of range. */
size_t spm_piece_len(const spm_model *m, int id);
/* SentencePiece's PieceToId: control/unknown/byte pieces first, then the others; unk id if absent. */
int spm_piece_to_id(const spm_model *m, const char *piece, size_t len);

/* What the model file says (TrainerSpec / NormalizerSpec), for `pgolf info` and checks. split_digits
 * and the split_by_* options are trainer settings: they shaped the vocabulary, and encoding needs
 * nothing more (SentencePiece 0.1.97's BPE encoder does no pre-tokenization either). */
typedef struct {
    int model_type; /* 1 unigram, 2 bpe, 3 word, 4 char (only bpe encodes) */
    int trainer_vocab_size;
    int byte_fallback, split_digits, split_by_whitespace, split_by_number, split_by_unicode_script;
    int treat_whitespace_as_suffix, allow_whitespace_only_pieces, max_sentencepiece_length;
    float character_coverage;
    int add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    const char *normalizer_name; /* "nmt_nfkc", ... ("" if unset); owned by the model */
    size_t precompiled_charsmap_bytes;
    int has_denormalizer;
    int n_control, n_user_defined, n_unused, n_byte, n_self_test_samples;
} spm_info;
void spm_get_info(const spm_model *m, spm_info *info);

/* The byte-count lookup tables of train_gpt.py's build_sentencepiece_luts, of size table_size
 * (>= vocab size; entries past the vocab keep the defaults bytes=0, leading_space=0, boundary=1):
 *   control/unknown/unused ids: bytes 0, boundary 1;
 *   byte pieces: bytes 1;
 *   other pieces: a leading U+2581 sets has_leading_space and is stripped, bytes = UTF-8 length. */
void spm_byte_luts(const spm_model *m, int table_size, int16_t *base_bytes, uint8_t *has_leading_space,
                   uint8_t *is_boundary);

/* Encode UTF-8 text exactly as SentencePiece 0.1.97's `sp.encode(text)` (no BOS/EOS). Returns the
 * number of ids written to *ids (malloc'd, caller frees), or -1 with err set. */
long spm_encode(const spm_model *m, const char *text, size_t len, int32_t **ids, char *err, size_t errlen);
/* Decode ids exactly as `sp.decode(ids)`. Returns a malloc'd NUL-terminated string (length in
 * *out_len if non-NULL), or NULL with err set (an id out of range). */
char *spm_decode(const spm_model *m, const int32_t *ids, size_t n, size_t *out_len, char *err, size_t errlen);

/* The normalizer alone (precompiled charsmap, whitespace rules, U+2581 escaping): the string the
 * BPE merges run on. malloc'd, NUL-terminated, length in *out_len if non-NULL. */
char *spm_normalize(const spm_model *m, const char *text, size_t len, size_t *out_len);

#endif
