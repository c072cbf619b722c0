/* spm.c: SentencePiece `.model` files without libsentencepiece or libprotobuf.
 *
 * - A protobuf wire-format reader for ModelProto (pieces, TrainerSpec, NormalizerSpec, self-test
 *   data, denormalizer spec). Unknown fields and known fields with an unexpected wire type are
 *   skipped as protobuf does; a singular message field seen twice is merged. Every length is
 *   checked against the bytes left before it is used.
 * - The checks SentencePiece 0.1.97 makes when it loads a model (ModelInterface::InitializePieces,
 *   Normalizer::Init): so a file is accepted here exactly when `spm.SentencePieceProcessor` loads it.
 * - The normalizer: the precompiled charsmap (a darts-clone double array over UTF-8 byte strings and
 *   a blob of NUL-terminated replacements), longest match, otherwise one UTF-8 character (an invalid
 *   byte becomes U+FFFD), then remove_extra_whitespaces / add_dummy_prefix / escape to U+2581.
 * - BPE as bpe::Model::SampleEncode(alpha=0): repeatedly merge the adjacent pair whose concatenation
 *   is a piece with the highest score (ties: leftmost), user-defined pieces frozen, unused pieces
 *   re-split, unknown pieces turned into <0xNN> byte pieces (byte_fallback) or merged runs of <unk>.
 *   For speed the merge runs per whitespace-delimited word with a per-thread word cache when that
 *   provably gives the same result (see enc_fast_ok); otherwise over the whole text.
 * - Decoding as SentencePieceProcessor::Decode. */
#include "spm.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* ---------------------------------------------------------------------------------------------- */
/* small helpers                                                                                  */

static const char kWS[3] = {(char)0xE2, (char)0x96, (char)0x81}; /* U+2581 */
static const char kFFFD[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static void sb_reserve(sbuf *b, size_t extra) {
    if (b->n + extra <= b->cap) return;
    size_t c = b->cap ? b->cap : 64;
    while (c < b->n + extra) c *= 2;
    b->p = xrealloc(b->p, c);
    b->cap = c;
}
static void sb_add(sbuf *b, const void *s, size_t n) {
    sb_reserve(b, n + 1);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void sb_byte(sbuf *b, char c) {
    sb_reserve(b, 2);
    b->p[b->n++] = c;
}

typedef struct {
    int32_t *p;
    size_t n, cap;
} ibuf;

static void ib_push(ibuf *b, int32_t v) {
    if (b->n == b->cap) {
        b->cap = b->cap ? b->cap * 2 : 256;
        b->p = xrealloc(b->p, b->cap * sizeof(int32_t));
    }
    b->p[b->n++] = v;
}

/* SentencePiece's string_util::OneCharLen: the length a UTF-8 lead byte announces (1 for
 * continuation bytes). */
static inline size_t one_char_len(uint8_t c) { return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[c >> 4]; }

static inline int is_trail(uint8_t c) { return (c & 0xC0) == 0x80; }
static inline int valid_cp(uint32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); }

/* string_util::IsValidDecodeUTF8: 1 and the character's length, or 0 and length 1. */
static int utf8_char(const uint8_t *s, size_t len, size_t *mblen) {
    *mblen = 1;
    if (s[0] < 0x80) return 1;
    if (len >= 2 && (s[0] & 0xE0) == 0xC0) {
        uint32_t cp = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        if (is_trail(s[1]) && cp >= 0x80 && valid_cp(cp)) return (*mblen = 2), 1;
    } else if (len >= 3 && (s[0] & 0xF0) == 0xE0) {
        uint32_t cp = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
        if (is_trail(s[1]) && is_trail(s[2]) && cp >= 0x800 && valid_cp(cp)) return (*mblen = 3), 1;
    } else if (len >= 4 && (s[0] & 0xF8) == 0xF0) {
        uint32_t cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                      ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        if (is_trail(s[1]) && is_trail(s[2]) && is_trail(s[3]) && cp >= 0x10000 && valid_cp(cp))
            return (*mblen = 4), 1;
    }
    return 0;
}

static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0, l;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        if (!utf8_char(s + i, n - i, &l)) return 0;
        i += l;
    }
    return 1;
}

/* 64-bit hash of a short byte string (8 bytes at a time, multiply-xorshift mixing). */
static inline uint64_t hash_bytes(const uint8_t *s, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xC2B2AE3D27D4EB4Full);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ (v * 0xBF58476D1CE4E5B9ull)) * 0x94D049BB133111EBull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    if (n) {
        uint64_t v = 0;
        memcpy(&v, s, n);
        h = (h ^ (v * 0xBF58476D1CE4E5B9ull)) * 0x94D049BB133111EBull;
        h ^= h >> 29;
    }
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
    return h;
}

/* ---------------------------------------------------------------------------------------------- */
/* model                                                                                          */

typedef struct {
    char *name;
    uint8_t *charsmap;
    size_t charsmap_len;
    int add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    /* decoded charsmap */
    int broken;           /* Normalizer::status() is an error (the blob is malformed) */
    uint32_t *units;      /* darts-clone double array */
    size_t n_units;
    const uint8_t *repl;  /* NUL-separated replacement strings (points into charsmap) */
    size_t repl_len;
} spm_norm;

typedef struct {
    uint32_t hash;
    int32_t normal;   /* id in SentencePiece's pieces_ map (normal/user-defined/unused), or -1 */
    int32_t reserved; /* id in reserved_id_map_ (control/unknown/byte), or -1 */
    uint32_t id_of;   /* PieceToId(piece): reserved if present, else normal */
    uint32_t off, len;
} pent;

/* user-defined symbols: a byte trie for PrefixMatcher (longest match) */
typedef struct {
    int32_t child, sibling;
    uint8_t label, terminal;
} tnode;

struct spm_model {
    uint64_t serial;
    int n;
    char *strs; /* all piece bytes, each NUL-terminated */
    size_t strs_len;
    uint32_t *off, *len;
    float *score;
    uint8_t *type;
    /* TrainerSpec */
    int model_type, trainer_vocab_size, byte_fallback, split_digits, split_by_whitespace,
        split_by_number, split_by_unicode_script, treat_ws_suffix, allow_ws_only, max_piece_length;
    float character_coverage;
    int spec_unk_id, spec_bos_id, spec_eos_id, spec_pad_id;
    char *unk_piece, *bos_piece, *eos_piece, *pad_piece, *unk_surface;
    int has_unk_surface;
    spm_norm norm, denorm;
    int has_denorm;
    int n_self_test;
    /* derived */
    int unk_index; /* unk_id_ of ModelInterface: the UNKNOWN piece */
    int unk_id, bos_id, eos_id, pad_id;
    pent *ents;
    int32_t *slots;
    uint32_t slot_mask;
    uint32_t max_normal_len;
    int32_t byte_id[256];
    int16_t *byte_val;  /* per id: byte value for BYTE pieces, else -1 */
    int32_t *decode_id; /* per id: PieceToId(IdToPiece(id)) */
    tnode *trie;
    int n_trie, n_user, n_unused, n_byte, n_control;
    int fast_ok; /* word-level encoding with a cache gives the same ids (see enc_fast_ok) */
};

static uint64_t g_serial;

static const pent *map_find(const spm_model *m, const uint8_t *s, size_t n) {
    if (!m->slots) return NULL;
    uint64_t h64 = hash_bytes(s, n);
    uint32_t h = (uint32_t)h64;
    for (uint32_t i = (uint32_t)(h64 >> 32) & m->slot_mask;; i = (i + 1) & m->slot_mask) {
        int32_t e = m->slots[i];
        if (e < 0) return NULL;
        const pent *p = &m->ents[e];
        if (p->hash == h && p->len == n && memcmp(m->strs + p->off, s, n) == 0) return p;
    }
}

/* ModelInterface::PieceToId */
static int piece_to_id(const spm_model *m, const uint8_t *s, size_t n) {
    const pent *p = map_find(m, s, n);
    return p ? (int)p->id_of : m->unk_index;
}

/* PrefixMatcher::PrefixMatch: length of the longest user-defined symbol starting s (0 if none). */
static size_t trie_match(const spm_model *m, const uint8_t *s, size_t n) {
    if (!m->n_trie) return 0;
    size_t best = 0;
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = m->trie[node].child;
        while (c >= 0 && m->trie[c].label != s[i]) c = m->trie[c].sibling;
        if (c < 0) break;
        node = c;
        if (m->trie[node].terminal) best = i + 1;
    }
    return best;
}

static void trie_insert(spm_model *m, int *cap, const uint8_t *s, size_t n) {
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = m->trie[node].child;
        while (c >= 0 && m->trie[c].label != s[i]) c = m->trie[c].sibling;
        if (c < 0) {
            if (m->n_trie == *cap) {
                *cap *= 2;
                m->trie = xrealloc(m->trie, (size_t)*cap * sizeof(tnode));
            }
            c = m->n_trie++;
            m->trie[c].child = -1;
            m->trie[c].label = s[i];
            m->trie[c].terminal = 0;
            m->trie[c].sibling = m->trie[node].child;
            m->trie[node].child = c;
        }
        node = c;
    }
    m->trie[node].terminal = 1;
}

/* ---------------------------------------------------------------------------------------------- */
/* protobuf wire format                                                                           */

typedef struct {
    const uint8_t *base; /* start of the file (for offsets in messages) */
    const char *what;
    char *err;
    size_t errlen;
} pbctx;

typedef struct {
    const uint8_t *p, *end;
} pbr;

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

typedef struct {
    uint32_t field;
    int wt;
    uint64_t v;            /* varint / fixed value */
    const uint8_t *d;      /* WT_LEN payload */
    size_t dlen;
} pbfield;

static int pb_fail(pbctx *c, const uint8_t *at, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int pb_fail(pbctx *c, const uint8_t *at, const char *msg, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    return pg_err(c->err, c->errlen, "%s: %s in %s at byte %zu (not a valid SentencePiece model)", c->what,
                  tmp, msg, (size_t)(at - c->base));
}

static int pb_varint(pbr *r, uint64_t *v) {
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end) return -1;
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -2;
}

static int pb_next(pbctx *c, pbr *r, const char *msg, pbfield *f, int depth);

/* skip a group whose start tag (field number `field`) was just read */
static int pb_skip_group(pbctx *c, pbr *r, const char *msg, uint32_t field, int depth) {
    if (depth > 100) return pb_fail(c, r->p, msg, "groups nested too deeply");
    for (;;) {
        if (r->p >= r->end) return pb_fail(c, r->p, msg, "truncated group (field %u)", field);
        pbfield f;
        const uint8_t *at = r->p;
        uint64_t key;
        int rc = pb_varint(r, &key);
        if (rc) return pb_fail(c, at, msg, rc == -1 ? "truncated tag" : "overlong tag varint");
        if ((key & 7) == WT_EGROUP) {
            if ((key >> 3) != field) return pb_fail(c, at, msg, "mismatched end of group %u", field);
            return 0;
        }
        r->p = at;
        if (pb_next(c, r, msg, &f, depth + 1) < 0) return -1; /* 1: one field of the group skipped */
    }
}

/* Read one field. Returns 1 with *f filled, 0 at the end of the message, -1 on error. */
static int pb_next(pbctx *c, pbr *r, const char *msg, pbfield *f, int depth) {
    if (r->p >= r->end) return 0;
    const uint8_t *at = r->p;
    uint64_t key;
    int rc = pb_varint(r, &key);
    if (rc) return pb_fail(c, at, msg, rc == -1 ? "truncated tag" : "overlong tag varint");
    if (key >> 32) return pb_fail(c, at, msg, "field number too large");
    f->field = (uint32_t)(key >> 3);
    f->wt = (int)(key & 7);
    if (f->field == 0) return pb_fail(c, at, msg, "field number 0");
    switch (f->wt) {
    case WT_VARINT:
        rc = pb_varint(r, &f->v);
        if (rc) return pb_fail(c, at, msg, rc == -1 ? "truncated varint (field %u)" : "overlong varint (field %u)", f->field);
        return 1;
    case WT_I64:
        if (r->end - r->p < 8) return pb_fail(c, at, msg, "truncated fixed64 (field %u)", f->field);
        f->v = pg_rd_u64(r->p);
        r->p += 8;
        return 1;
    case WT_I32:
        if (r->end - r->p < 4) return pb_fail(c, at, msg, "truncated fixed32 (field %u)", f->field);
        f->v = pg_rd_u32(r->p);
        r->p += 4;
        return 1;
    case WT_LEN: {
        uint64_t n;
        rc = pb_varint(r, &n);
        if (rc) return pb_fail(c, at, msg, "truncated length (field %u)", f->field);
        if (n > (uint64_t)(r->end - r->p))
            return pb_fail(c, at, msg, "field %u claims %llu bytes but only %zu remain", f->field,
                           (unsigned long long)n, (size_t)(r->end - r->p));
        f->d = r->p;
        f->dlen = (size_t)n;
        r->p += n;
        return 1;
    }
    case WT_SGROUP:
        if (pb_skip_group(c, r, msg, f->field, depth)) return -1;
        return 1;
    case WT_EGROUP:
        return pb_fail(c, at, msg, "unexpected end-group tag (field %u)", f->field);
    default:
        return pb_fail(c, at, msg, "invalid wire type %d (field %u)", f->wt, f->field);
    }
}

typedef struct {
    sbuf strs;
    uint32_t *off, *len;
    float *score;
    uint8_t *type;
    int n, cap;
} piece_acc;

static char *dup_bytes(const uint8_t *d, size_t n) {
    char *s = xmalloc(n + 1);
    memcpy(s, d, n);
    s[n] = 0;
    return s;
}
static void set_str(char **dst, const pbfield *f) {
    free(*dst);
    *dst = dup_bytes(f->d, f->dlen);
}

static int parse_piece(pbctx *c, const uint8_t *d, size_t n, piece_acc *pa) {
    pbr r = {d, d + n};
    pbfield f;
    const uint8_t *pd = (const uint8_t *)"";
    size_t pn = 0;
    float score = 0;
    int type = SPM_NORMAL, rc;
    while ((rc = pb_next(c, &r, "SentencePiece", &f, 0)) > 0) {
        if (f.field == 1 && f.wt == WT_LEN) {
            pd = f.d;
            pn = f.dlen;
        } else if (f.field == 2 && f.wt == WT_I32) {
            uint32_t u = (uint32_t)f.v;
            memcpy(&score, &u, 4);
        } else if (f.field == 3 && f.wt == WT_VARINT) {
            int32_t v = (int32_t)f.v;
            if (v >= 1 && v <= 6) type = v; /* proto2 closed enum: unknown values are ignored */
        }
    }
    if (rc < 0) return -1;
    if (pn > UINT32_MAX - 1 || pa->strs.n + pn + 1 > UINT32_MAX)
        return pg_err(c->err, c->errlen, "%s: pieces too large", c->what);
    if (pa->n == pa->cap) {
        pa->cap = pa->cap ? pa->cap * 2 : 1024;
        pa->off = xrealloc(pa->off, (size_t)pa->cap * sizeof(uint32_t));
        pa->len = xrealloc(pa->len, (size_t)pa->cap * sizeof(uint32_t));
        pa->score = xrealloc(pa->score, (size_t)pa->cap * sizeof(float));
        pa->type = xrealloc(pa->type, (size_t)pa->cap);
    }
    pa->off[pa->n] = (uint32_t)pa->strs.n;
    pa->len[pa->n] = (uint32_t)pn;
    pa->score[pa->n] = score;
    pa->type[pa->n] = (uint8_t)type;
    sb_add(&pa->strs, pd, pn);
    sb_byte(&pa->strs, 0);
    pa->n++;
    return 0;
}

static int parse_trainer(pbctx *c, const uint8_t *d, size_t n, spm_model *m) {
    pbr r = {d, d + n};
    pbfield f;
    int rc;
    while ((rc = pb_next(c, &r, "TrainerSpec", &f, 0)) > 0) {
        if (f.wt == WT_VARINT) {
            int32_t v = (int32_t)f.v;
            int b = f.v != 0;
            switch (f.field) {
            case 3:
                if (v >= 1 && v <= 4) m->model_type = v;
                break;
            case 4: m->trainer_vocab_size = v; break;
            case 20: m->max_piece_length = v; break;
            case 21: m->split_by_unicode_script = b; break;
            case 22: m->split_by_whitespace = b; break;
            case 23: m->split_by_number = b; break;
            case 24: m->treat_ws_suffix = b; break;
            case 25: m->split_digits = b; break;
            case 26: m->allow_ws_only = b; break;
            case 35: m->byte_fallback = b; break;
            case 40: m->spec_unk_id = v; break;
            case 41: m->spec_bos_id = v; break;
            case 42: m->spec_eos_id = v; break;
            case 43: m->spec_pad_id = v; break;
            default: break;
            }
        } else if (f.wt == WT_LEN) {
            switch (f.field) {
            case 44:
                set_str(&m->unk_surface, &f);
                m->has_unk_surface = 1;
                break;
            case 45: set_str(&m->unk_piece, &f); break;
            case 46: set_str(&m->bos_piece, &f); break;
            case 47: set_str(&m->eos_piece, &f); break;
            case 48: set_str(&m->pad_piece, &f); break;
            default: break;
            }
        } else if (f.wt == WT_I32 && f.field == 10) {
            uint32_t u = (uint32_t)f.v;
            memcpy(&m->character_coverage, &u, 4);
        }
    }
    return rc < 0 ? -1 : 0;
}

static int parse_normalizer(pbctx *c, const uint8_t *d, size_t n, spm_norm *nm, const char *msg) {
    pbr r = {d, d + n};
    pbfield f;
    int rc;
    while ((rc = pb_next(c, &r, msg, &f, 0)) > 0) {
        if (f.wt == WT_LEN && f.field == 1) {
            set_str(&nm->name, &f);
        } else if (f.wt == WT_LEN && f.field == 2) {
            free(nm->charsmap);
            nm->charsmap = (uint8_t *)dup_bytes(f.d, f.dlen);
            nm->charsmap_len = f.dlen;
        } else if (f.wt == WT_VARINT && f.field == 3) {
            nm->add_dummy_prefix = f.v != 0;
        } else if (f.wt == WT_VARINT && f.field == 4) {
            nm->remove_extra_whitespaces = f.v != 0;
        } else if (f.wt == WT_VARINT && f.field == 5) {
            nm->escape_whitespaces = f.v != 0;
        }
    }
    return rc < 0 ? -1 : 0;
}

/* SelfTestData is only checked for well-formedness (protobuf parses it); its samples are not run. */
static int parse_self_test(pbctx *c, const uint8_t *d, size_t n, int *count) {
    pbr r = {d, d + n};
    pbfield f;
    int rc;
    while ((rc = pb_next(c, &r, "SelfTestData", &f, 0)) > 0) {
        if (f.field == 1 && f.wt == WT_LEN) {
            pbr s = {f.d, f.d + f.dlen};
            pbfield g;
            int rc2;
            while ((rc2 = pb_next(c, &s, "SelfTestData.Sample", &g, 0)) > 0) {
            }
            if (rc2 < 0) return -1;
            (*count)++;
        }
    }
    return rc < 0 ? -1 : 0;
}

static void norm_defaults(spm_norm *nm) {
    memset(nm, 0, sizeof(*nm));
    nm->add_dummy_prefix = nm->remove_extra_whitespaces = nm->escape_whitespaces = 1;
}

/* Normalizer::Init / DecodePrecompiledCharsMap */
static void norm_init(spm_norm *nm) {
    nm->broken = 0;
    if (!nm->charsmap_len) return;
    const uint8_t *b = nm->charsmap;
    size_t n = nm->charsmap_len;
    if (n <= 4) {
        nm->broken = 1;
        return;
    }
    uint32_t tsize = pg_rd_u32(b);
    if (tsize >= n) {
        nm->broken = 1;
        return;
    }
    /* the trie takes tsize bytes after the size field; SentencePiece checks tsize < n, so the trie may
     * run up to 4 bytes past the blob: clamp to what exists (only a malformed blob does this) */
    size_t avail = n - 4;
    size_t tbytes = tsize < avail ? tsize : avail;
    nm->n_units = tbytes / 4;
    nm->units = xmalloc((nm->n_units ? nm->n_units : 1) * sizeof(uint32_t));
    for (size_t i = 0; i < nm->n_units; i++) nm->units[i] = pg_rd_u32(b + 4 + 4 * i);
    nm->repl = b + 4 + tbytes;
    nm->repl_len = avail - tbytes;
}

static void norm_free(spm_norm *nm) {
    free(nm->name);
    free(nm->charsmap);
    free(nm->units);
}

void spm_free(spm_model *m);

static spm_model *load_fail(spm_model *m, piece_acc *pa) {
    if (pa) {
        free(pa->strs.p);
        free(pa->off);
        free(pa->len);
        free(pa->score);
        free(pa->type);
    }
    spm_free(m);
    return NULL;
}

/* PieceToByte: "<0xNN>" with two upper-case hex digits -> NN, else -1 */
static int piece_to_byte(const char *s, size_t n) {
    if (n != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char ch = s[i];
        int d;
        if (ch >= '0' && ch <= '9') d = ch - '0';
        else if (ch >= 'A' && ch <= 'F') d = ch - 'A' + 10;
        else return -1;
        v = v * 16 + d;
    }
    return v;
}

static int special_id(const spm_model *m, const char *piece, const char *dflt, int want_type) {
    const char *s = (piece && *piece) ? piece : dflt;
    int id = piece_to_id(m, (const uint8_t *)s, strlen(s)); /* SentencePiece passes .data(): C string */
    return m->type[id] == want_type ? id : -1;
}

spm_model *spm_load_mem(const uint8_t *buf, size_t len, const char *what, char *err, size_t errlen) {
    if (!what) what = "<memory>";
    if (len > (size_t)INT_MAX)
        return pg_err(err, errlen, "%s: too large for a SentencePiece model (%zu bytes)", what, len), NULL;
    spm_model *m = xcalloc(1, sizeof(*m));
    m->serial = __atomic_add_fetch(&g_serial, 1, __ATOMIC_RELAXED);
    m->model_type = 1; /* UNIGRAM is the proto default */
    m->trainer_vocab_size = 8000;
    m->split_by_whitespace = m->split_by_number = m->split_by_unicode_script = 1;
    m->max_piece_length = 16;
    m->character_coverage = 0.9995f;
    m->spec_unk_id = 0;
    m->spec_bos_id = 1;
    m->spec_eos_id = 2;
    m->spec_pad_id = -1;
    norm_defaults(&m->norm);
    norm_defaults(&m->denorm);

    pbctx c = {buf ? buf : (const uint8_t *)"", what, err, errlen};
    pbr r = {c.base, c.base + len};
    piece_acc pa = {0};
    pbfield f;
    int rc;
    while ((rc = pb_next(&c, &r, "ModelProto", &f, 0)) > 0) {
        if (f.wt != WT_LEN) continue;
        switch (f.field) {
        case 1:
            if (parse_piece(&c, f.d, f.dlen, &pa)) return load_fail(m, &pa);
            break;
        case 2:
            if (parse_trainer(&c, f.d, f.dlen, m)) return load_fail(m, &pa);
            break;
        case 3:
            if (parse_normalizer(&c, f.d, f.dlen, &m->norm, "NormalizerSpec")) return load_fail(m, &pa);
            break;
        case 4:
            if (parse_self_test(&c, f.d, f.dlen, &m->n_self_test)) return load_fail(m, &pa);
            break;
        case 5:
            m->has_denorm = 1;
            if (parse_normalizer(&c, f.d, f.dlen, &m->denorm, "denormalizer NormalizerSpec")) return load_fail(m, &pa);
            break;
        default: break;
        }
    }
    if (rc < 0) return load_fail(m, &pa);

    m->n = pa.n;
    m->strs = pa.strs.p ? pa.strs.p : xcalloc(1, 1);
    m->strs_len = pa.strs.n;
    m->off = pa.off;
    m->len = pa.len;
    m->score = pa.score;
    m->type = pa.type;
    if (!m->n) {
        pg_err(err, errlen, "%s: not a SentencePiece model (no pieces)", what);
        return load_fail(m, NULL);
    }

    /* ModelInterface::InitializePieces */
    uint32_t cap = 16;
    while (cap < (uint32_t)m->n * 2u) cap *= 2;
    m->slot_mask = cap - 1;
    m->slots = xmalloc(cap * sizeof(int32_t));
    memset(m->slots, 0xFF, cap * sizeof(int32_t));
    m->ents = xmalloc((size_t)m->n * sizeof(pent));
    int n_ents = 0, byte_found = 0;
    uint8_t seen_byte[256] = {0};
    int tcap = 16;
    m->trie = xmalloc((size_t)tcap * sizeof(tnode));
    m->trie[0] = (tnode){-1, -1, 0, 0};
    m->n_trie = 1;
    m->unk_index = -1;
    m->byte_val = xmalloc((size_t)m->n * sizeof(int16_t));
    for (int i = 0; i < m->n; i++) {
        const uint8_t *s = (const uint8_t *)m->strs + m->off[i];
        size_t n = m->len[i];
        int t = m->type[i];
        m->byte_val[i] = -1;
        if (n == 0) {
            pg_err(err, errlen, "%s: piece %d is empty", what, i);
            return load_fail(m, NULL);
        }
        int normal = (t == SPM_NORMAL || t == SPM_USER_DEFINED || t == SPM_UNUSED);
        uint64_t h64 = hash_bytes(s, n);
        uint32_t slot = (uint32_t)(h64 >> 32) & m->slot_mask;
        pent *e = NULL;
        for (;; slot = (slot + 1) & m->slot_mask) {
            int32_t k = m->slots[slot];
            if (k < 0) break;
            if (m->ents[k].hash == (uint32_t)h64 && m->ents[k].len == n && memcmp(m->strs + m->ents[k].off, s, n) == 0) {
                e = &m->ents[k];
                break;
            }
        }
        if (!e) {
            e = &m->ents[n_ents];
            *e = (pent){(uint32_t)h64, -1, -1, 0, m->off[i], (uint32_t)n};
            m->slots[slot] = n_ents++;
        }
        int32_t *dst = normal ? &e->normal : &e->reserved;
        if (*dst >= 0) {
            pg_err(err, errlen, "%s: piece %d (\"%.40s\") is already defined as piece %d", what, i, (const char *)s, *dst);
            return load_fail(m, NULL);
        }
        *dst = i;
        e->id_of = (uint32_t)(e->reserved >= 0 ? e->reserved : e->normal);
        if (t == SPM_USER_DEFINED) {
            m->n_user++;
            /* the darts trie of PrefixMatcher takes C strings: the key ends at the first NUL */
            size_t kl = strnlen((const char *)s, n);
            if (kl) trie_insert(m, &tcap, s, kl);
        }
        if (t == SPM_UNUSED) m->n_unused++;
        if (t == SPM_CONTROL) m->n_control++;
        if (t == SPM_UNKNOWN) {
            if (m->unk_index >= 0) {
                pg_err(err, errlen, "%s: piece %d: a second unknown piece (the first is piece %d)", what, i, m->unk_index);
                return load_fail(m, NULL);
            }
            m->unk_index = i;
        }
        if (t == SPM_BYTE) {
            m->n_byte++;
            if (!m->byte_fallback) {
                pg_err(err, errlen, "%s: byte piece %d (\"%.40s\") although byte_fallback is false", what, i, (const char *)s);
                return load_fail(m, NULL);
            }
            int b = piece_to_byte((const char *)s, n);
            if (b < 0) {
                pg_err(err, errlen, "%s: byte piece %d (\"%.40s\") is not of the form <0xNN>", what, i, (const char *)s);
                return load_fail(m, NULL);
            }
            if (!seen_byte[b]) byte_found++;
            seen_byte[b] = 1;
            m->byte_val[i] = (int16_t)b;
        }
    }
    if (m->unk_index < 0) {
        pg_err(err, errlen, "%s: no unknown piece (<unk>) is defined", what);
        return load_fail(m, NULL);
    }
    if (m->byte_fallback && byte_found != 256) {
        pg_err(err, errlen, "%s: byte_fallback is true but only %d of the 256 byte pieces exist", what, byte_found);
        return load_fail(m, NULL);
    }
    norm_init(&m->norm);
    if (m->norm.broken) {
        pg_err(err, errlen, "%s: the precompiled_charsmap of the normalizer is broken", what);
        return load_fail(m, NULL);
    }
    if (m->has_denorm) norm_init(&m->denorm);

    /* derived tables */
    for (int b = 0; b < 256; b++) {
        char p[8];
        snprintf(p, sizeof(p), "<0x%02X>", b);
        m->byte_id[b] = m->byte_fallback ? piece_to_id(m, (const uint8_t *)p, 6) : -1;
    }
    m->decode_id = xmalloc((size_t)m->n * sizeof(int32_t));
    for (int i = 0; i < m->n; i++) {
        m->decode_id[i] = piece_to_id(m, (const uint8_t *)m->strs + m->off[i], m->len[i]);
        int t = m->type[i];
        if ((t == SPM_NORMAL || t == SPM_USER_DEFINED || t == SPM_UNUSED) && m->len[i] > m->max_normal_len)
            m->max_normal_len = m->len[i];
    }
    m->unk_id = special_id(m, m->unk_piece, "<unk>", SPM_UNKNOWN);
    m->bos_id = special_id(m, m->bos_piece, "<s>", SPM_CONTROL);
    m->eos_id = special_id(m, m->eos_piece, "</s>", SPM_CONTROL);
    m->pad_id = special_id(m, m->pad_piece, "<pad>", SPM_CONTROL);

    /* Word-level encoding (split before every U+2581, cache the ids of each word) gives the ids of
     * the whole-text merge when no merge can cross a word start: no piece of pieces_ holds U+2581
     * after its first byte, no user-defined symbols (which could span words in the matcher), no
     * unused pieces (their re-split table depends on the whole text), whitespace as prefix. */
    m->fast_ok = m->model_type == 2 && !m->treat_ws_suffix && !m->n_user && !m->n_unused;
    for (int i = 0; i < m->n && m->fast_ok; i++) {
        int t = m->type[i];
        if (!(t == SPM_NORMAL || t == SPM_USER_DEFINED || t == SPM_UNUSED)) continue;
        const char *s = m->strs + m->off[i];
        size_t n = m->len[i];
        for (size_t j = 1; j + 3 <= n; j++)
            if (memcmp(s + j, kWS, 3) == 0) {
                m->fast_ok = 0;
                break;
            }
    }
    return m;
}

spm_model *spm_load(const char *path, char *err, size_t errlen) {
    uint8_t *data;
    size_t len;
    if (pg_read_file(path, &data, &len, err, errlen)) return NULL;
    spm_model *m = spm_load_mem(data, len, path, err, errlen);
    free(data);
    return m;
}

/* ---------------------------------------------------------------------------------------------- */
/* per-thread word cache                                                                          */

#define WC_MAX_WORD 96
#define WC_MAX_ENTRIES (1u << 19)
#define WC_MAX_BYTES (16u << 20)

typedef struct {
    uint64_t hash;
    uint32_t koff, ioff;
    uint16_t klen, nid;
} wc_ent;

typedef struct {
    uint64_t serial;
    int32_t *slots; /* entry index or -1 */
    uint32_t mask;
    wc_ent *ents;
    uint32_t n_ents, cap_ents;
    sbuf keys;
    ibuf ids;
} wcache;

static pthread_key_t g_wc_key;
static pthread_once_t g_wc_once = PTHREAD_ONCE_INIT;
static _Thread_local wcache *tls_wc;

static void wc_destroy(void *p) {
    wcache *c = p;
    if (!c) return;
    free(c->slots);
    free(c->ents);
    free(c->keys.p);
    free(c->ids.p);
    free(c);
}
static void wc_key_init(void) {
    if (pthread_key_create(&g_wc_key, wc_destroy) != 0) { /* without the key the cache just leaks at thread exit */
    }
}

static void wc_reset(wcache *c, uint64_t serial) {
    c->serial = serial;
    memset(c->slots, 0xFF, (size_t)(c->mask + 1) * sizeof(int32_t));
    c->n_ents = 0;
    c->keys.n = 0;
    c->ids.n = 0;
}

static wcache *wc_get(const spm_model *m) {
    wcache *c = tls_wc;
    if (!c) {
        pthread_once(&g_wc_once, wc_key_init);
        c = xcalloc(1, sizeof(*c));
        c->mask = (1u << 12) - 1;
        c->slots = xmalloc((size_t)(c->mask + 1) * sizeof(int32_t));
        c->cap_ents = 1u << 11;
        c->ents = xmalloc(c->cap_ents * sizeof(wc_ent));
        wc_reset(c, m->serial);
        tls_wc = c;
        pthread_setspecific(g_wc_key, c);
    }
    if (c->serial != m->serial) wc_reset(c, m->serial);
    return c;
}

static const wc_ent *wc_find(const wcache *c, const uint8_t *s, size_t n, uint64_t h) {
    for (uint32_t i = (uint32_t)h & c->mask;; i = (i + 1) & c->mask) {
        int32_t e = c->slots[i];
        if (e < 0) return NULL;
        const wc_ent *w = &c->ents[e];
        if (w->hash == h && w->klen == n && memcmp(c->keys.p + w->koff, s, n) == 0) return w;
    }
}

static void wc_insert(wcache *c, const uint8_t *s, size_t n, uint64_t h, const int32_t *ids, size_t nid) {
    if (nid > 0xFFFF) return;
    if (c->n_ents >= WC_MAX_ENTRIES || c->keys.n + n > WC_MAX_BYTES || c->ids.n + nid > WC_MAX_BYTES)
        wc_reset(c, c->serial);
    if ((c->n_ents + 1) * 2 > c->mask + 1) { /* grow the slot table */
        uint32_t nm = c->mask * 2 + 1;
        free(c->slots);
        c->slots = xmalloc((size_t)(nm + 1) * sizeof(int32_t));
        memset(c->slots, 0xFF, (size_t)(nm + 1) * sizeof(int32_t));
        c->mask = nm;
        for (uint32_t e = 0; e < c->n_ents; e++) {
            uint32_t i = (uint32_t)c->ents[e].hash & nm;
            while (c->slots[i] >= 0) i = (i + 1) & nm;
            c->slots[i] = (int32_t)e;
        }
    }
    if (c->n_ents == c->cap_ents) {
        c->cap_ents *= 2;
        c->ents = xrealloc(c->ents, c->cap_ents * sizeof(wc_ent));
    }
    wc_ent *w = &c->ents[c->n_ents];
    w->hash = h;
    w->koff = (uint32_t)c->keys.n;
    w->klen = (uint16_t)n;
    w->ioff = (uint32_t)c->ids.n;
    w->nid = (uint16_t)nid;
    sb_add(&c->keys, s, n);
    for (size_t i = 0; i < nid; i++) ib_push(&c->ids, ids[i]);
    uint32_t i = (uint32_t)h & c->mask;
    while (c->slots[i] >= 0) i = (i + 1) & c->mask;
    c->slots[i] = (int32_t)c->n_ents++;
}

/* ---------------------------------------------------------------------------------------------- */
/* normalizer                                                                                     */

/* Normalizer::NormalizePrefix: replacement (*out, *outlen) for the start of s; returns the number
 * of input bytes consumed (>= 1). *valid is cleared when the replacement is not valid UTF-8. */
static size_t norm_prefix(const spm_model *m, const spm_norm *nm, int use_matcher, const uint8_t *s, size_t n,
                          const uint8_t **out, size_t *outlen, int *valid) {
    if (use_matcher) {
        size_t l = trie_match(m, s, n);
        if (l) {
            *out = s;
            *outlen = l;
            if (!utf8_valid(s, l)) *valid = 0;
            return l;
        }
    }
    size_t longest = 0;
    uint32_t value = 0;
    if (nm->n_units) {
        /* darts-clone DoubleArray::commonPrefixSearch; the longest match wins */
        const uint32_t *a = nm->units;
        size_t na = nm->n_units;
        uint32_t u = a[0];
        size_t pos = (u >> 10) << ((u & (1u << 9)) >> 6);
        for (size_t i = 0; i < n; i++) {
            pos ^= s[i];
            if (pos >= na) break;
            u = a[pos];
            if ((u & ((1u << 31) | 0xFF)) != s[i]) break;
            pos ^= (u >> 10) << ((u & (1u << 9)) >> 6);
            if ((u >> 8) & 1) {
                if (pos >= na) break;
                longest = i + 1;
                value = a[pos] & ((1u << 31) - 1);
            }
        }
    }
    if (longest == 0) {
        size_t l;
        if (!utf8_char(s, n, &l)) {
            *out = (const uint8_t *)kFFFD;
            *outlen = 3;
            return 1;
        }
        *out = s;
        *outlen = l;
        return l;
    }
    if (value >= nm->repl_len) { /* malformed map: an offset past the replacement strings */
        *out = (const uint8_t *)"";
        *outlen = 0;
        return longest;
    }
    *out = nm->repl + value;
    *outlen = strnlen((const char *)*out, nm->repl_len - value);
    if (!utf8_valid(*out, *outlen)) *valid = 0;
    return longest;
}

static void add_ws(sbuf *o, const spm_norm *nm) {
    if (nm->escape_whitespaces) sb_add(o, kWS, 3);
    else sb_byte(o, ' ');
}

/* Normalizer::Normalize into o (cleared first). Returns 1 if the output is valid UTF-8. */
static int normalize(const spm_model *m, const spm_norm *nm, int treat_suffix, int use_matcher, const uint8_t *in,
                     size_t n, sbuf *o) {
    o->n = 0;
    int valid = 1;
    if (n == 0) return 1;
    if (nm->broken) return 1; /* Normalize() returns an error and the caller gets "" */
    const uint8_t *rep;
    size_t rl;
    if (nm->remove_extra_whitespaces) {
        while (n) {
            int v2 = 1;
            size_t c = norm_prefix(m, nm, use_matcher, in, n, &rep, &rl, &v2);
            if (!(rl == 1 && rep[0] == ' ')) break;
            in += c;
            n -= c;
        }
    }
    if (n == 0) return 1;
    sb_reserve(o, n * 3 + 8);
    if (!treat_suffix && nm->add_dummy_prefix) add_ws(o, nm);
    int is_prev_space = nm->remove_extra_whitespaces;
    while (n) {
        size_t c;
        /* fast path: printable ASCII that the map leaves alone (the first trie step fails) */
        if (in[0] > 0x20 && in[0] < 0x7F && !use_matcher) {
            int plain = 1;
            if (nm->n_units) {
                uint32_t u0 = nm->units[0];
                size_t pos = ((u0 >> 10) << ((u0 & (1u << 9)) >> 6)) ^ in[0];
                plain = pos >= nm->n_units || (nm->units[pos] & ((1u << 31) | 0xFF)) != in[0];
            }
            if (plain) {
                sb_reserve(o, 4);
                o->p[o->n++] = (char)in[0];
                is_prev_space = 0;
                in++;
                n--;
                continue;
            }
        }
        c = norm_prefix(m, nm, use_matcher, in, n, &rep, &rl, &valid);
        if (is_prev_space)
            while (rl && rep[0] == ' ') rep++, rl--;
        if (rl) {
            sb_reserve(o, rl * 3 + 4);
            for (size_t k = 0; k < rl; k++) {
                if (nm->escape_whitespaces && rep[k] == ' ') {
                    memcpy(o->p + o->n, kWS, 3);
                    o->n += 3;
                } else {
                    o->p[o->n++] = (char)rep[k];
                }
            }
            is_prev_space = rep[rl - 1] == ' ';
        }
        in += c;
        n -= c;
        if (!nm->remove_extra_whitespaces) is_prev_space = 0;
    }
    if (nm->remove_extra_whitespaces) {
        size_t sl = nm->escape_whitespaces ? 3 : 1;
        const char *sp = nm->escape_whitespaces ? kWS : " ";
        while (o->n >= sl && memcmp(o->p + o->n - sl, sp, sl) == 0) o->n -= sl;
    }
    if (treat_suffix && nm->add_dummy_prefix) add_ws(o, nm);
    return valid;
}

/* ---------------------------------------------------------------------------------------------- */
/* BPE                                                                                            */

typedef struct {
    int32_t prev, next;
    uint32_t start, len;
    int32_t id; /* PieceToId of the merged piece, or -2 when not known yet */
    uint8_t freeze;
} bsym;

typedef struct {
    float score;
    int32_t left, right;
    uint32_t size;
    int32_t id;
} bpair;

/* rev_merge of bpe_model.cc (only with unused pieces): merged piece -> its two halves */
typedef struct {
    uint32_t start, len;      /* key: a substring of the normalized text */
    uint32_t ls, ll, rs, rl;  /* halves */
    uint64_t hash;
} rment;

typedef struct {
    const spm_model *m;
    bsym *sym;
    size_t sym_cap;
    bpair *heap;
    size_t heap_n, heap_cap;
    ibuf out; /* result ids for the current segment */
    /* rev_merge */
    rment *rm;
    size_t rm_n, rm_cap; /* slots: rm_cap is a power of two, rm_n used */
    int use_rm;
    uint32_t *stack;
    size_t stack_cap;
} bpe_state;

static inline int pair_better(const bpair *a, const bpair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(bpe_state *st, bpair p) {
    if (st->heap_n == st->heap_cap) {
        st->heap_cap = st->heap_cap ? st->heap_cap * 2 : 256;
        st->heap = xrealloc(st->heap, st->heap_cap * sizeof(bpair));
    }
    size_t i = st->heap_n++;
    while (i > 0) {
        size_t par = (i - 1) / 2;
        if (!pair_better(&p, &st->heap[par])) break;
        st->heap[i] = st->heap[par];
        i = par;
    }
    st->heap[i] = p;
}

static bpair heap_pop(bpe_state *st) {
    bpair top = st->heap[0];
    bpair last = st->heap[--st->heap_n];
    size_t n = st->heap_n, i = 0;
    if (n) {
        for (;;) {
            size_t l = 2 * i + 1, best;
            if (l >= n) break;
            best = (l + 1 < n && pair_better(&st->heap[l + 1], &st->heap[l])) ? l + 1 : l;
            if (!pair_better(&st->heap[best], &last)) break;
            st->heap[i] = st->heap[best];
            i = best;
        }
        st->heap[i] = last;
    }
    return top;
}

static void rm_put(bpe_state *st, const uint8_t *text, uint32_t start, uint32_t len, uint32_t ls, uint32_t ll,
                   uint32_t rs, uint32_t rl) {
    if ((st->rm_n + 1) * 2 > st->rm_cap) {
        size_t nc = st->rm_cap ? st->rm_cap * 2 : 64;
        rment *nr = xcalloc(nc, sizeof(rment));
        for (size_t i = 0; i < st->rm_cap; i++) {
            if (!st->rm[i].len) continue;
            size_t j = st->rm[i].hash & (nc - 1);
            while (nr[j].len) j = (j + 1) & (nc - 1);
            nr[j] = st->rm[i];
        }
        free(st->rm);
        st->rm = nr;
        st->rm_cap = nc;
    }
    uint64_t h = hash_bytes(text + start, len);
    size_t j = h & (st->rm_cap - 1);
    while (st->rm[j].len) {
        if (st->rm[j].hash == h && st->rm[j].len == len && memcmp(text + st->rm[j].start, text + start, len) == 0) break;
        j = (j + 1) & (st->rm_cap - 1);
    }
    if (!st->rm[j].len) st->rm_n++;
    st->rm[j] = (rment){start, len, ls, ll, rs, rl, h};
}

static const rment *rm_get(const bpe_state *st, const uint8_t *text, uint32_t start, uint32_t len) {
    if (!st->rm_cap) return NULL;
    uint64_t h = hash_bytes(text + start, len);
    size_t j = h & (st->rm_cap - 1);
    while (st->rm[j].len) {
        if (st->rm[j].hash == h && st->rm[j].len == len && memcmp(text + st->rm[j].start, text + start, len) == 0)
            return &st->rm[j];
        j = (j + 1) & (st->rm_cap - 1);
    }
    return NULL;
}

static void maybe_add_pair(bpe_state *st, const uint8_t *text, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const bsym *L = &st->sym[left], *R = &st->sym[right];
    if (L->freeze || R->freeze) return;
    uint32_t size = L->len + R->len;
    if (size > st->m->max_normal_len) return;
    const pent *e = map_find(st->m, text + L->start, size);
    if (!e || e->normal < 0) return;
    bpair p = {st->m->score[e->normal], left, right, size, (int32_t)e->id_of};
    heap_push(st, p);
    if (st->use_rm && st->m->type[e->normal] == SPM_UNUSED) rm_put(st, text, L->start, size, L->start, L->len, R->start, R->len);
}

/* emit one result piece: ids of PopulateSentencePieceText (byte fallback for unknown pieces) */
static void emit_piece(bpe_state *st, const uint8_t *text, uint32_t start, uint32_t len, int32_t id) {
    const spm_model *m = st->m;
    if (m->type[id] == SPM_UNKNOWN && m->byte_fallback) {
        for (uint32_t k = 0; k < len; k++) ib_push(&st->out, m->byte_id[text[start + k]]);
    } else {
        ib_push(&st->out, id);
    }
}

static void resegment(bpe_state *st, const uint8_t *text, uint32_t start, uint32_t len, int32_t id) {
    const spm_model *m = st->m;
    if (id == -2) id = piece_to_id(m, text + start, len);
    if (!st->use_rm || m->type[id] != SPM_UNUSED) {
        emit_piece(st, text, start, len, id);
        return;
    }
    /* explicit stack of (start, len) in place of SentencePiece's recursion */
    size_t sp = 0;
    if (st->stack_cap < 2) {
        st->stack_cap = 64;
        st->stack = xrealloc(st->stack, st->stack_cap * sizeof(uint32_t));
    }
    st->stack[sp++] = start;
    st->stack[sp++] = len;
    while (sp) {
        uint32_t l = st->stack[--sp], s = st->stack[--sp];
        int32_t i2 = piece_to_id(m, text + s, l);
        const rment *r = m->type[i2] == SPM_UNUSED ? rm_get(st, text, s, l) : NULL;
        if (!r) {
            emit_piece(st, text, s, l, i2);
            continue;
        }
        if (sp + 4 > st->stack_cap) {
            st->stack_cap *= 2;
            st->stack = xrealloc(st->stack, st->stack_cap * sizeof(uint32_t));
        }
        uint32_t rs = r->rs, rl = r->rl, ls = r->ls, ll = r->ll;
        st->stack[sp++] = rs; /* right half after the left one */
        st->stack[sp++] = rl;
        st->stack[sp++] = ls;
        st->stack[sp++] = ll;
    }
}

/* bpe::Model::SampleEncode(alpha = 0) over text[start, end): appends result ids to st->out. */
static void bpe_segment(bpe_state *st, const uint8_t *text, size_t start, size_t end, int use_matcher) {
    const spm_model *m = st->m;
    size_t nsym = 0;
    if (end - start > st->sym_cap) {
        st->sym_cap = (end - start) + 64;
        st->sym = xrealloc(st->sym, st->sym_cap * sizeof(bsym));
    }
    for (size_t p = start; p < end;) {
        size_t l = use_matcher ? trie_match(m, text + p, end - p) : 0;
        uint8_t fr = l > 0;
        if (!l) {
            l = one_char_len(text[p]);
            if (l > end - p) l = end - p;
        }
        bsym *s = &st->sym[nsym];
        s->prev = (int32_t)nsym - 1;
        s->next = p + l < end ? (int32_t)nsym + 1 : -1;
        s->start = (uint32_t)p;
        s->len = (uint32_t)l;
        s->id = -2;
        s->freeze = fr;
        nsym++;
        p += l;
    }
    if (!nsym) return;
    st->heap_n = 0;
    st->rm_n = 0;
    if (st->rm_cap) memset(st->rm, 0, st->rm_cap * sizeof(rment));
    if (nsym == 1) {
        resegment(st, text, st->sym[0].start, st->sym[0].len, -2);
        return;
    }
    for (size_t i = 1; i < nsym; i++) maybe_add_pair(st, text, (int32_t)i - 1, (int32_t)i);
    while (st->heap_n) {
        bpair top = heap_pop(st);
        bsym *L = &st->sym[top.left], *R = &st->sym[top.right];
        if (L->len == 0 || R->len == 0 || L->len + R->len != top.size) continue;
        L->len += R->len;
        L->id = top.id;
        L->next = R->next;
        if (R->next >= 0) st->sym[R->next].prev = top.left;
        R->len = 0;
        maybe_add_pair(st, text, L->prev, top.left);
        maybe_add_pair(st, text, top.left, L->next);
    }
    for (int32_t i = 0; i != -1; i = st->sym[i].next) resegment(st, text, st->sym[i].start, st->sym[i].len, st->sym[i].id);
}

/* ---------------------------------------------------------------------------------------------- */
/* encode / decode                                                                                */

long spm_encode(const spm_model *m, const char *text, size_t len, int32_t **ids, char *err, size_t errlen) {
    *ids = NULL;
    if (m->model_type != 2) {
        static const char *names[] = {"?", "unigram", "bpe", "word", "char"};
        pg_err(err, errlen, "SentencePiece model type %s is not supported for encoding (BPE only)",
               names[m->model_type >= 1 && m->model_type <= 4 ? m->model_type : 0]);
        return -1;
    }
    if (len > (size_t)INT_MAX / 4) {
        pg_err(err, errlen, "text of %zu bytes is too long to encode at once", len);
        return -1;
    }
    sbuf norm = {0};
    int use_matcher = m->n_user > 0;
    int valid = normalize(m, &m->norm, m->treat_ws_suffix, use_matcher, (const uint8_t *)text, len, &norm);
    const uint8_t *t = (const uint8_t *)norm.p;
    size_t n = norm.n;
    if (n >= UINT32_MAX) {
        free(norm.p);
        pg_err(err, errlen, "text of %zu bytes normalizes to more than 4 GiB", len);
        return -1;
    }
    bpe_state st = {0};
    st.m = m;
    if (m->fast_ok && valid) {
        wcache *wc = wc_get(m);
        size_t p = 0;
        while (p < n) {
            /* the word: from p to the next U+2581 after it */
            size_t q = p + 1;
            for (;;) {
                const uint8_t *e = q < n ? memchr(t + q, 0xE2, n - q) : NULL;
                if (!e) {
                    q = n;
                    break;
                }
                q = (size_t)(e - t);
                if (q + 3 <= n && e[1] == 0x96 && e[2] == 0x81) break;
                q++;
            }
            size_t wl = q - p;
            if (wl <= WC_MAX_WORD) {
                uint64_t h = hash_bytes(t + p, wl);
                const wc_ent *w = wc_find(wc, t + p, wl, h);
                if (w) {
                    for (uint32_t k = 0; k < w->nid; k++) ib_push(&st.out, wc->ids.p[w->ioff + k]);
                } else {
                    size_t before = st.out.n;
                    bpe_segment(&st, t, p, q, 0);
                    wc_insert(wc, t + p, wl, h, st.out.p + before, st.out.n - before);
                }
            } else {
                bpe_segment(&st, t, p, q, 0);
            }
            p = q;
        }
    } else {
        st.use_rm = m->n_unused > 0;
        bpe_segment(&st, t, 0, n, use_matcher);
    }
    /* a run of unknown pieces becomes one <unk> (without byte fallback) */
    if (!m->byte_fallback && st.out.n) {
        size_t w = 0;
        for (size_t i = 0; i < st.out.n; i++) {
            int32_t id = st.out.p[i];
            if (w > 0 && m->type[id] == SPM_UNKNOWN && m->type[st.out.p[w - 1]] == SPM_UNKNOWN) continue;
            st.out.p[w++] = id;
        }
        st.out.n = w;
    }
    free(norm.p);
    free(st.sym);
    free(st.heap);
    free(st.rm);
    free(st.stack);
    /* a piece that resolves to a control id (PieceToId prefers the reserved map) has no surface, so
     * SentencePiece's Encode fails its "all normalized characters are not consumed" check and
     * returns nothing; refuse the text the same way instead of emitting ids it never would */
    if (m->n_control > 0)
        for (size_t i = 0; i < st.out.n; i++)
            if (m->type[st.out.p[i]] == SPM_CONTROL) {
                int32_t id = st.out.p[i];
                free(st.out.p);
                pg_err(err, errlen,
                       "the text contains the surface of control piece %d (\"%.40s\"); SentencePiece cannot encode "
                       "it with this model (all normalized characters are not consumed)",
                       id, spm_id_to_piece(m, id));
                return -1;
            }
    *ids = st.out.p ? st.out.p : xmalloc(sizeof(int32_t));
    return (long)st.out.n;
}

/* append bytes[0..n) as SentencePiece's ProcessBytePieces does: valid UTF-8 characters as they are,
 * each other byte as U+FFFD */
static void flush_bytes(sbuf *o, const uint8_t *b, size_t n) {
    size_t i = 0, l;
    while (i < n) {
        if (utf8_char(b + i, n - i, &l)) sb_add(o, b + i, l);
        else sb_add(o, kFFFD, 3);
        i += l;
    }
}

char *spm_decode(const spm_model *m, const int32_t *ids, size_t n, size_t *out_len, char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->n) {
            pg_err(err, errlen, "token id %d at position %zu is out of range [0, %d)", ids[i], i, m->n);
            return NULL;
        }
    sbuf o = {0};
    sb_reserve(&o, n * 4 + 16);
    uint8_t *bytes = xmalloc(n ? n : 1);
    size_t nb = 0;
    int is_bos_ws = 1, bos_ws_seen = 0;
    const spm_norm *ns = &m->norm;
    const char *unk_surface = m->has_unk_surface ? m->unk_surface : " \xE2\x81\x87 ";
    for (size_t i = 0; i < n; i++) {
        int32_t d = m->decode_id[ids[i]];
        int t = m->type[d];
        if (t == SPM_BYTE) {
            bytes[nb++] = (uint8_t)m->byte_val[d];
            continue;
        }
        flush_bytes(&o, bytes, nb);
        nb = 0;
        if (bos_ws_seen || o.n) is_bos_ws = 0;
        bos_ws_seen = 0;
        if (t == SPM_CONTROL) continue;
        if (t == SPM_UNKNOWN) {
            sb_add(&o, unk_surface, strlen(unk_surface));
            continue;
        }
        const char *p = m->strs + m->off[ids[i]];
        size_t pl = m->len[ids[i]];
        if (is_bos_ws && (ns->add_dummy_prefix || ns->remove_extra_whitespaces)) {
            if (pl >= 3 && memcmp(p, kWS, 3) == 0) {
                p += 3;
                pl -= 3;
                bos_ws_seen = !ns->remove_extra_whitespaces;
            }
        }
        sb_reserve(&o, pl + 1);
        for (size_t k = 0; k < pl;) {
            if (k + 3 <= pl && memcmp(p + k, kWS, 3) == 0) {
                o.p[o.n++] = ' ';
                k += 3;
            } else {
                o.p[o.n++] = p[k++];
            }
        }
    }
    flush_bytes(&o, bytes, nb);
    free(bytes);
    if (m->has_denorm && m->denorm.charsmap_len) {
        sbuf d = {0};
        normalize(m, &m->denorm, 0, 0, (const uint8_t *)o.p, o.n, &d);
        free(o.p);
        o = d;
    }
    sb_reserve(&o, 1);
    o.p[o.n] = 0;
    if (out_len) *out_len = o.n;
    return o.p;
}

char *spm_normalize(const spm_model *m, const char *text, size_t len, size_t *out_len) {
    sbuf o = {0};
    normalize(m, &m->norm, m->treat_ws_suffix, m->n_user > 0, (const uint8_t *)text, len, &o);
    sb_reserve(&o, 1);
    o.p[o.n] = 0;
    if (out_len) *out_len = o.n;
    return o.p;
}

/* ---------------------------------------------------------------------------------------------- */
/* accessors                                                                                      */

void spm_free(spm_model *m) {
    if (!m) return;
    if (tls_wc && tls_wc->serial == m->serial) wc_reset(tls_wc, 0);
    free(m->strs);
    free(m->off);
    free(m->len);
    free(m->score);
    free(m->type);
    free(m->unk_piece);
    free(m->bos_piece);
    free(m->eos_piece);
    free(m->pad_piece);
    free(m->unk_surface);
    norm_free(&m->norm);
    norm_free(&m->denorm);
    free(m->ents);
    free(m->slots);
    free(m->byte_val);
    free(m->decode_id);
    free(m->trie);
    free(m);
}

int spm_vocab_size(const spm_model *m) { return m->n; }
const char *spm_id_to_piece(const spm_model *m, int id) {
    return (id >= 0 && id < m->n) ? m->strs + m->off[id] : NULL;
}
size_t spm_piece_len(const spm_model *m, int id) { return (id >= 0 && id < m->n) ? m->len[id] : 0; }
float spm_score(const spm_model *m, int id) { return (id >= 0 && id < m->n) ? m->score[id] : 0.0f; }
int spm_piece_type(const spm_model *m, int id) { return (id >= 0 && id < m->n) ? m->type[id] : 0; }
int spm_bos_id(const spm_model *m) { return m->bos_id; }
int spm_eos_id(const spm_model *m) { return m->eos_id; }
int spm_unk_id(const spm_model *m) { return m->unk_id; }
int spm_pad_id(const spm_model *m) { return m->pad_id; }
int spm_piece_to_id(const spm_model *m, const char *piece, size_t len) {
    return piece_to_id(m, (const uint8_t *)piece, len);
}

void spm_get_info(const spm_model *m, spm_info *info) {
    memset(info, 0, sizeof(*info));
    info->model_type = m->model_type;
    info->trainer_vocab_size = m->trainer_vocab_size;
    info->byte_fallback = m->byte_fallback;
    info->split_digits = m->split_digits;
    info->split_by_whitespace = m->split_by_whitespace;
    info->split_by_number = m->split_by_number;
    info->split_by_unicode_script = m->split_by_unicode_script;
    info->treat_whitespace_as_suffix = m->treat_ws_suffix;
    info->allow_whitespace_only_pieces = m->allow_ws_only;
    info->max_sentencepiece_length = m->max_piece_length;
    info->character_coverage = m->character_coverage;
    info->add_dummy_prefix = m->norm.add_dummy_prefix;
    info->remove_extra_whitespaces = m->norm.remove_extra_whitespaces;
    info->escape_whitespaces = m->norm.escape_whitespaces;
    info->normalizer_name = m->norm.name ? m->norm.name : "";
    info->precompiled_charsmap_bytes = m->norm.charsmap_len;
    info->has_denormalizer = m->has_denorm && m->denorm.charsmap_len > 0;
    info->n_control = m->n_control;
    info->n_user_defined = m->n_user;
    info->n_unused = m->n_unused;
    info->n_byte = m->n_byte;
    info->n_self_test_samples = m->n_self_test;
}

void spm_byte_luts(const spm_model *m, int table_size, int16_t *base_bytes, uint8_t *has_leading_space,
                   uint8_t *is_boundary) {
    for (int i = 0; i < table_size; i++) {
        base_bytes[i] = 0;
        has_leading_space[i] = 0;
        is_boundary[i] = 1;
    }
    int n = m->n < table_size ? m->n : table_size;
    for (int i = 0; i < n; i++) {
        int t = m->type[i];
        if (t == SPM_CONTROL || t == SPM_UNKNOWN || t == SPM_UNUSED) continue;
        is_boundary[i] = 0;
        if (t == SPM_BYTE) {
            base_bytes[i] = 1;
            continue;
        }
        const char *p = m->strs + m->off[i];
        size_t l = m->len[i];
        if (l >= 3 && memcmp(p, kWS, 3) == 0) {
            has_leading_space[i] = 1;
            l -= 3;
        }
        base_bytes[i] = (int16_t)l;
    }
}
