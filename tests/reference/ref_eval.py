"""ref_eval.py: bits-per-byte accounting and validation of the reference.

- LUTs from the SentencePiece model (spec baseline-pr65-pr453.md §1.5).
- validation tokens: shards concatenated, truncated to usable + 1 (§1.3).
- standard non-overlapping eval (§2.8).
- sliding-window eval: the exact rule (every target once, with the longest left context among windows
  starting at multiples of the stride) and the records' own window rules: pr65 (§3.7), pr315 (§4.9,
  also PR1311 §2.9 and PR1392 §3.9, with the tail re-scoring), pr187 (second spec §4.9).
All sums are float64; val_bpb = (val_loss / ln 2) * (token_count / byte_count).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from ref_config import Config
from ref_io import load_shard
from ref_model import Model, RunState


@dataclass
class Luts:
    base_bytes: np.ndarray  # int16 [N]
    has_leading_space: np.ndarray  # bool [N]
    is_boundary: np.ndarray  # bool [N]


def build_luts(model_path: str, size: int) -> Luts:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model_path)
    n_sp = int(sp.vocab_size())
    n = max(n_sp, size)
    base = np.zeros(n, dtype=np.int16)
    space = np.zeros(n, dtype=np.bool_)
    boundary = np.ones(n, dtype=np.bool_)
    for i in range(n_sp):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue  # 0 bytes, boundary
        boundary[i] = False
        if sp.is_byte(i):
            base[i] = 1
            continue
        piece = sp.id_to_piece(i)
        if piece.startswith("\u2581"):
            space[i] = True
            piece = piece[1:]
        base[i] = len(piece.encode("utf-8"))
    return Luts(base, space, boundary)


def load_val_tokens(paths: Sequence[str], trunc: int) -> Tuple[np.ndarray, int]:
    """Concatenate shards (in the given order) and keep the first usable + 1 tokens (spec §1.3)."""
    tokens = np.concatenate([load_shard(p) for p in paths]) if paths else np.zeros(0, dtype=np.int64)
    usable = ((len(tokens) - 1) // trunc) * trunc
    if usable <= 0:
        raise ValueError(f"validation split too short for sequence length {trunc}")
    return tokens[: usable + 1], usable


def token_bytes(luts: Luts, tgt: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """nbytes(y, p) = base_bytes[y] + (leading_space[y] and not boundary[p])."""
    return luts.base_bytes[tgt].astype(np.int64) + (luts.has_leading_space[tgt] & ~luts.is_boundary[prev]).astype(np.int64)


@dataclass
class EvalResult:
    loss_sum: float
    token_count: float
    byte_count: float
    usable_tokens: int
    windows: int = 0

    @property
    def val_loss(self) -> float:
        return self.loss_sum / self.token_count

    @property
    def val_bpb(self) -> float:
        bits_per_token = self.val_loss / math.log(2.0)
        tokens_per_byte = self.token_count / self.byte_count
        return bits_per_token * tokens_per_byte

    def as_json(self) -> Dict[str, object]:
        return {"val_loss": self.val_loss, "val_bpb": self.val_bpb, "loss_sum": self.loss_sum,
                "token_count": self.token_count, "byte_count": self.byte_count, "usable_tokens": self.usable_tokens,
                "windows": self.windows}


def _max_batch(cfg: Config, T: int) -> int:
    # keep the attention score tensor under ~64M elements
    per_seq = cfg["NUM_HEADS"] * T * T + T * max(cfg["VOCAB_SIZE"], 4 * cfg.d)
    return max(1, int(64_000_000 // per_seq))


def _nll(model: Model, x: np.ndarray, y: np.ndarray, st: RunState, temperature: float = 1.0) -> torch.Tensor:
    xi = torch.from_numpy(np.ascontiguousarray(x)).long()
    yi = torch.from_numpy(np.ascontiguousarray(y)).long()
    with torch.no_grad():
        return model.token_nll(xi, yi, st, temperature).double()


def eval_standard(model: Model, cfg: Config, val: np.ndarray, usable: int, luts: Luts, st: RunState,
                  seq_len: int) -> EvalResult:
    """Non-overlapping eval (spec §2.8): targets val[1:usable+1] in rows of seq_len, context restarting."""
    T = seq_len
    total_seqs = usable // T
    batch = min(max(1, cfg["VAL_BATCH_SIZE"] // 8 // T), _max_batch(cfg, T))
    loss_sum = 0.0
    count = 0.0
    nbytes = 0.0
    for s in range(0, total_seqs, batch):
        e = min(s + batch, total_seqs)
        chunk = val[s * T: e * T + 1]
        x = chunk[:-1].reshape(-1, T)
        y = chunk[1:].reshape(-1, T)
        nll = _nll(model, x, y, st)
        loss_sum += float(nll.sum())
        count += float(y.size)
        nbytes += float(token_bytes(luts, y.reshape(-1), x.reshape(-1)).sum())
    return EvalResult(loss_sum, count, nbytes, usable)


def sliding_windows(style: str, n_targets: int, S: int, stride: int) -> List[Tuple[int, int, int]]:
    """Windows (start, score_from, score_to) in window-local positions; window input val[start:start+wlen]
    with wlen = min(start+S, N) - start, targets val[start+1 : start+wlen+1]. N = number of targets."""
    N = n_targets
    out: List[Tuple[int, int, int]] = []
    if style == "exact":
        prev_end = 0
        ws = 0
        while prev_end < N:
            end = min(ws + S, N)
            if end > prev_end:
                out.append((ws, prev_end - ws, end - ws))
                prev_end = end
            ws += stride
    elif style == "pr65":  # §3.7: full windows only, last `stride` targets of each
        if N < S:
            raise ValueError("pr65 sliding eval needs at least one full window")
        W = max((N - S) // stride + 1, 1)
        for w in range(W):
            out.append((w * stride, S - stride, S))
    elif style == "pr315":  # §4.9: every start < N; first window fully scored; tail windows re-score
        for ws in range(0, N, stride):
            wlen = min(ws + S, N) - ws
            if wlen < 1:
                continue
            s = 0 if ws == 0 else max(wlen - stride, 0)
            out.append((ws, s, wlen))
    elif style == "pr187":  # second spec §4.9: full windows while pos + S < N + 1
        pos = 0
        while pos + S < N + 1:
            out.append((pos, 0 if pos == 0 else S - stride, S))
            pos += stride
    else:
        raise ValueError(f"unknown sliding style {style}")
    return out


def eval_sliding(model: Model, cfg: Config, val: np.ndarray, usable: int, luts: Luts, st: RunState, S: int,
                 stride: int, style: str, temperature: float = 1.0) -> EvalResult:
    """Sliding-window eval. Short windows are zero-padded to S (as the records do), so the NTK RoPE
    table is always the one for length S; causal attention makes the padding invisible to scored tokens."""
    if stride <= 0 or stride > S:
        raise ValueError("stride must be in 1..seq_len")
    N = len(val) - 1
    wins = sliding_windows(style, N, S, stride)
    batch = _max_batch(cfg, S)
    loss_sum = 0.0
    count = 0.0
    nbytes = 0.0
    for b in range(0, len(wins), batch):
        group = wins[b:b + batch]
        x = np.zeros((len(group), S), dtype=np.int64)
        y = np.zeros((len(group), S), dtype=np.int64)
        for i, (ws, _, _) in enumerate(group):
            wlen = min(ws + S, N) - ws
            x[i, :wlen] = val[ws: ws + wlen]
            y[i, :wlen] = val[ws + 1: ws + wlen + 1]
        nll = _nll(model, x, y, st, temperature)
        for i, (ws, s, e) in enumerate(group):
            loss_sum += float(nll[i, s:e].sum())
            count += float(e - s)
            nbytes += float(token_bytes(luts, y[i, s:e], x[i, s:e]).sum())
    return EvalResult(loss_sum, count, nbytes, usable, windows=len(wins))


def infer_sliding_style(cfg: Config) -> str:
    if cfg["SLIDING_STYLE"]:
        return cfg["SLIDING_STYLE"]
    if cfg["PRE_ENRICH"] or cfg["ENCODER_RECURRENCE"]:
        return "pr187"
    if cfg.smear_mode == "pre" or cfg["BIGRAM_HASH_BUCKETS"] > 0:
        return "pr65"
    return "pr315"
