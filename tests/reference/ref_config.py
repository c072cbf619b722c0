"""ref_config.py: the configuration vocabulary of the reference.

A config is a flat JSON object of `train_gpt.py` environment-variable names -> values (numbers or
strings). Every key is listed once in KEYS with its type and default. Defaults are the baseline
`train_gpt.py` ones (spec baseline-pr65-pr453.md §2.1); every record feature is *off* by default
and its sub-parameters default to the value of the record that introduced it. Keys that the records
do not have (the records hard-code the behaviour) are marked "[ref]" (their help text says what they select).
An unknown key, or a value that would switch on a code path the records never ran, is an error.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

BASE_CONTROL = "attn_scale,attn_scales,mlp_scale,mlp_scales,resid_mix,resid_mixes,q_gain,skip_weight,skip_weights"

# name: (type, default, help). type is one of int, float, bool, str.
KEYS: Dict[str, Tuple[type, Any, str]] = {
    # --- baseline train_gpt.py (spec §2.1) ---
    "DATA_PATH": (str, "./data/datasets/fineweb10B_sp1024", "ignored by the reference"),
    "TOKENIZER_PATH": (str, "./data/tokenizers/fineweb_1024_bpe.model", "ignored (use --tokenizer)"),
    "RUN_ID": (str, "", "ignored"),
    "SEED": (int, 1337, "init seed (init command; --seed overrides)"),
    "VAL_BATCH_SIZE": (int, 524288, "standard eval batch tokens (8 micro-steps)"),
    "VAL_LOSS_EVERY": (int, 1000, "ignored"),
    "TRAIN_LOG_EVERY": (int, 200, "ignored"),
    "ITERATIONS": (int, 20000, "used only by the 1311 EMA start rule"),
    "WARMDOWN_ITERS": (int, 1200, "ignored (schedule comes from lr_mult)"),
    "WARMUP_STEPS": (int, 20, "ignored (no compile priming, spec §2.7)"),
    "TRAIN_BATCH_TOKENS": (int, 524288, "ignored (batches come from the file)"),
    "TRAIN_SEQ_LEN": (int, 1024, "sequence length for eval"),
    "EVAL_SEQ_LEN": (int, 0, "PR315+: eval window length (0 = TRAIN_SEQ_LEN)"),
    "MAX_WALLCLOCK_SECONDS": (float, 600.0, "ignored"),
    "QK_GAIN_INIT": (float, 1.5, "q_gain init"),
    "VOCAB_SIZE": (int, 1024, "vocabulary size"),
    "NUM_LAYERS": (int, 9, "physical layers"),
    "NUM_KV_HEADS": (int, 4, "KV heads"),
    "MODEL_DIM": (int, 512, "model dim"),
    "NUM_HEADS": (int, 8, "query heads"),
    "MLP_MULT": (float, 2.0, "MLP hidden = int(MLP_MULT * MODEL_DIM)"),
    "TIE_EMBEDDINGS": (bool, True, "tied input/output embedding"),
    "ROPE_BASE": (float, 10000.0, "RoPE base"),
    "LOGIT_SOFTCAP": (float, 30.0, "c in c*tanh(z/c)"),
    "EMBED_LR": (float, 0.6, "token lr when untied"),
    "HEAD_LR": (float, 0.008, "lm_head lr when untied"),
    "TIED_EMBED_LR": (float, 0.05, "token lr when tied"),
    "TIED_EMBED_INIT_STD": (float, 0.005, "tok_emb init std when tied"),
    "MATRIX_LR": (float, 0.04, "Muon lr"),
    "SCALAR_LR": (float, 0.04, "scalar Adam lr"),
    "MUON_MOMENTUM": (float, 0.95, "Muon momentum after warmup"),
    "MUON_BACKEND_STEPS": (int, 5, "Newton-Schulz steps"),
    "MUON_MOMENTUM_WARMUP_START": (float, 0.85, "Muon momentum at step 0"),
    "MUON_MOMENTUM_WARMUP_STEPS": (int, 500, "momentum warmup length"),
    "BETA1": (float, 0.9, "Adam beta1"),
    "BETA2": (float, 0.95, "Adam beta2"),
    "ADAM_EPS": (float, 1e-8, "Adam eps"),
    "GRAD_CLIP_NORM": (float, 0.0, "global grad-norm clip (0 = off)"),
    "CONTROL_TENSOR_NAME_PATTERNS": (str, BASE_CONTROL, "control (scalar-group / fp32) name patterns"),
    "INT8_KEEP_FLOAT_FP32_NAME_PATTERNS": (str, "", "export fp32 patterns (empty = CONTROL_TENSOR_NAME_PATTERNS)"),
    # --- PR #65 ---
    "MUON_WEIGHT_DECAY": (float, 0.0, "PR65 name for Muon decoupled WD (same as MUON_WD)"),
    "BIGRAM_HASH_BUCKETS": (int, 0, "PR65/PR187 BigramHash buckets (mult-add hash; 0 = off)"),
    "BIGRAM_HASH_DIM": (int, 128, "PR65/PR187 BigramHash dim"),
    "USE_SMEARGATE": (bool, False, "PR65 SmearGate (same as SMEAR_MODE=pre)"),
    "EVAL_STRIDE": (int, 0, "sliding-eval stride (the eval command uses --stride)"),
    "FP16_PASSTHROUGH_PATTERNS": (str, "tok_emb,bigram_hash", "PR65 export fp16 passthrough patterns"),
    "SW_EVAL_BATCH": (int, 32, "ignored"),
    # --- PR #315 / #453 ---
    "MUON_WD": (float, 0.0, "Muon decoupled weight decay"),
    "ADAM_WD": (float, 0.0, "AdamW decoupled weight decay for the token and scalar groups"),
    "EMA_ENABLED": (bool, False, "EMA of the weights"),
    "EMA_DECAY": (float, 0.997, "EMA decay"),
    "SWA_ENABLED": (bool, False, "SWA accumulation"),
    "SWA_EVERY": (int, 200, "SWA every N steps"),
    "XSA_LAST_N": (int, 0, "XSA on the last N physical attention blocks"),
    "ROPE_DIMS": (int, 0, "partial RoPE dims (0 = full head dim)"),
    "LN_SCALE": (bool, False, "sublayer-input scale 1/sqrt(layer+1)"),
    "LATE_QAT": (bool, False, "PR315 late QAT flag (inert in the records; see LATE_QAT_ACTIVE)"),
    "QAT_THRESHOLD": (float, 0.1, "PR315/453 late-QAT lr threshold"),
    "QAT_ENABLED": (bool, False, "PR315 QAT from step 0 (never run by a record; error if set)"),
    "BIGRAM_VOCAB_SIZE": (int, 0, "PR315+ BigramHashEmbedding buckets (XOR hash; 0 = off)"),
    "BIGRAM_DIM": (int, 128, "PR315+ bigram dim"),
    "MTP_NUM_HEADS": (int, 0, "multi-token heads (off in every record; error if set)"),
    "MTP_LOSS_WEIGHT": (float, 0.2, "ignored"),
    "MUON_BETA2": (float, 0.95, "read but unused by the records"),
    # --- PR #453 loop gate ---
    "LOOP_CORE_LAYERS": (int, 0, "looped core layers (0 = no loop)"),
    "LOOP_REPEATS": (int, 5, "loop repeats"),
    "LOOP_ATTN_EVERY": (int, 2, "attention loop blocks every k repeats"),
    "REFINE_MLP_MULT": (float, 1.0, "refinement-block MLP multiplier"),
    "REFINE_LOCAL_MIX": (bool, True, "refinement-block local mix"),
    "LOOP_ADAPTER_DIM": (int, 64, "loop adapter dim (0 = none)"),
    "LOOP_REPEAT_EMBED": (bool, True, "per-repeat embedding"),
    "BACKOUT_LAYER": (int, 0, "backout depth (0 = off)"),
    "BACKOUT_INIT": (float, 0.0, "backout lambda init"),
    "MUON_CAUTIOUS_WD": (bool, False, "decay only where O*W > 0"),
    # --- PR #1311 ---
    "VE_ENABLED": (bool, False, "value embeddings"),
    "VE_DIM": (int, 128, "value-embedding dim"),
    "VE_LAYERS": (str, "9,10", "layers that add the value embedding"),
    "LATE_QAT_THRESHOLD": (float, 0.0, "PR1311/1392 late-QAT lr threshold (inert in the records)"),
    "LR_WARMUP_STEPS": (int, 0, "PR1311 lr warmup (fold it into lr_mult); gates late QAT"),
    "EMA_START_FRAC": (float, 0.0, "PR1311 EMA start fraction (effective start: step 10, spec §2.6)"),
    "EVAL_TEMPERATURE": (float, 1.0, "PR1311 sliding-eval temperature"),
    "GATED_ATTENTION": (bool, False, "never run by a record (error if set)"),
    "VALUE_RESIDUAL": (bool, False, "never run by a record (error if set)"),
    "TRIGRAM_VOCAB_SIZE": (int, 0, "never run by a record (error if set)"),
    "TRIGRAM_DIM": (int, 128, "ignored"),
    "DEPTH_RECUR_LAYERS": (str, "", "PR1311 plain layer re-execution (disabled in the record)"),
    "DEPTH_RECUR_PASSES": (int, 1, "PR1311 passes per recurrent layer"),
    "TORCH_COMPILE": (bool, True, "ignored"),
    "TTT_ENABLED": (bool, False, "test-time training (not in the reference; error if set)"),
    # --- PR #1392 ---
    "MUON_EQ_R": (bool, False, "MuonEq-R row normalisation before Newton-Schulz"),
    "RECUR_LAYERS": (str, "", "PR1392 depth recurrence layers (only encoder layers recur)"),
    "RECUR_START_STEP": (int, 3000, "step at which recurrence switches on"),
    "PARALLEL_START_LAYER": (int, -1, "parallel residuals from this layer (-1 = off)"),
    "TRIGRAM": (bool, False, "never run by a record (error if set)"),
    "GPTQ_DAMP": (float, 0.01, "GPTQ damping"),
    "GPTQ_BLOCK_SIZE": (int, 128, "GPTQ block size"),
    "GPTQ_CALIB_BATCHES": (int, 256, "ignored"),
    "GPTQ_FULL_HESSIAN": (bool, True, "ignored"),
    "TARGET_MB": (float, 15.9, "ignored"),
    "SWA_LR_THRESHOLD": (float, 0.5, "[ref] SWA when lr_mult < this (PR315 0.5, PR1311/1392 0.2)"),
    "HADAMARD_ROTATION": (bool, False, "error if set"),
    "SOFT_ROUND_QAT": (bool, False, "error if set"),
    "PREQUANT_TTT": (bool, False, "error if set"),
    "MIXED_BITWIDTH": (bool, False, "error if set"),
    "NGRAM_ENABLED": (bool, False, "error if set"),
    "LAWA_ENABLED": (bool, False, "error if set"),
    "DTG_ENABLED": (bool, False, "error if set"),
    "CROWN_Q_ENABLED": (bool, False, "error if set"),
    # --- PR #187 ---
    "ENCODER_RECURRENCE": (bool, False, "PR187 encoder run twice with RMSNorm between passes"),
    # --- reference keys for behaviour the records hard-code ([ref]); those that pgolf has too carry
    #     pgolf's name (PGOLF_*), so one config file drives both ---
    "PGOLF_MLP_ACTIVATION": (str, "relu2", "[ref] relu2 | leaky_relu2 (PR1311/1392) | gelu"),
    "PGOLF_LEAKY_RELU_SLOPE": (float, 0.5, "[ref] negative slope of leaky_relu2"),
    "PGOLF_SMEAR_MODE": (str, "", "[ref] off | pre (PR65/187: before the norm, g*x, init 3) | post (PR315+: after the norm, (1-g)*x, init 0); empty = pre if USE_SMEARGATE else off"),
    "PGOLF_ROPE_NTK": (bool, False, "[ref] PR315+ Rotary: fp32 tables with NTK base when T > 1024, else the bf16 buffer path"),
    "PGOLF_ROPE_NTK_REF_LEN": (int, 1024, "[ref] the Rotary reference length hard-coded by the records"),
    "PRE_ENRICH": (bool, False, "[ref] PR187 GELU pre-enrichment (hidden = 3*d//2)"),
    "OVERTONE_INIT": (bool, False, "[ref] PR187 overtone tok_emb init"),
    "PGOLF_INIT_STYLE": (str, "default", "[ref] default | ortho (PR65) | ortho_mup (PR315/453) | banked (PR1311/1392)"),
    "BIGRAM_HASH_PROJ_INIT": (str, "zero", "[ref] zero (PR65) | default (PR187: U(+-1/sqrt(in)))"),
    "PGOLF_OPT_PARTITION": (str, "default", "[ref] default | banked (PR1311/1392) | pr187"),
    "MUON_WD_PLACEMENT": (str, "before", "[ref] before (PR65/315/1311/1392) | after (PR187)"),
    "PGOLF_QAT_MODE": (str, "off", "[ref] off | quantile (PR65, always on) | rowmax (PR187, always on)"),
    "PGOLF_LATE_QAT_ACTIVE": (bool, False, "[ref] make the late QAT of LATE_QAT/LATE_QAT_THRESHOLD really run"),
    "PGOLF_LATE_QAT_CLAMP_LOW": (int, -32, "[ref] lower clamp of the late-QAT grid (-32 PR315/1311, -31 PR1392)"),
    "EMA_START_STEP": (int, -1, "[ref] -1: EMA starts from the initial weights; k: from the weights after update k"),
    "RECUR_ACTIVE": (str, "auto", "[ref] auto | 0 | 1: force depth recurrence on/off (grad, eval)"),
    "PARALLEL_MODE": (str, "sum", "[ref] sum (PR1392) | lanes or lanes1289 (PR1289 lane_merge/resid_mix_mlp/route) | "
                                  "lanes1334 (PR1334: MLP lane without x0 mix, lane_merge)"),
    "PARAM_NAMES": (str, "", "[ref] default | pr1311 | pr187 (state-dict naming; empty = follow the input)"),
    "PARAM_BANKS": (str, "", "[ref] 0 | 1: banked state dict (qo_bank ...); empty = follow the input"),
    "SLIDING_STYLE": (str, "", "[ref] records-compat sliding style: pr65 | pr315 | pr187 (empty = inferred)"),
}

# keys whose non-default value switches on code that no record ran: rejected.
_MUST_BE_OFF = ("QAT_ENABLED", "MTP_NUM_HEADS", "GATED_ATTENTION", "VALUE_RESIDUAL", "TRIGRAM_VOCAB_SIZE",
                "TTT_ENABLED", "TRIGRAM", "HADAMARD_ROTATION", "SOFT_ROUND_QAT", "PREQUANT_TTT", "MIXED_BITWIDTH",
                "NGRAM_ENABLED", "LAWA_ENABLED", "DTG_ENABLED", "CROWN_Q_ENABLED")

_CHOICES = {
    "PGOLF_MLP_ACTIVATION": ("relu2", "leaky_relu2", "gelu"),
    "PGOLF_SMEAR_MODE": ("", "off", "pre", "post"),
    "PGOLF_INIT_STYLE": ("default", "ortho", "ortho_mup", "banked"),
    "BIGRAM_HASH_PROJ_INIT": ("zero", "default"),
    "PGOLF_OPT_PARTITION": ("default", "banked", "pr187"),
    "MUON_WD_PLACEMENT": ("before", "after"),
    "PGOLF_QAT_MODE": ("off", "quantile", "rowmax"),
    "RECUR_ACTIVE": ("auto", "0", "1"),
    "PARALLEL_MODE": ("sum", "lanes", "lanes1289", "lanes1334"),
    "PARAM_NAMES": ("", "default", "pr1311", "pr187"),
    "PARAM_BANKS": ("", "0", "1"),
    "SLIDING_STYLE": ("", "exact", "pr65", "pr315", "pr187"),
}


def _convert(key: str, typ: type, value: Any) -> Any:
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)):
            return bool(int(value))
        s = str(value).strip().lower()
        if s in ("1", "true", "yes"):
            return True
        if s in ("0", "false", "no", ""):
            return False
        raise ValueError(f"config {key}: not a boolean: {value!r}")
    if typ is int:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, float):
            if value != int(value):
                raise ValueError(f"config {key}: not an integer: {value!r}")
            return int(value)
        return int(str(value).strip())
    if typ is float:
        return float(value)
    return str(value)


def _int_list(s: str) -> List[int]:
    return [int(p) for p in s.split(",") if p.strip()]


@dataclass
class Config:
    """Resolved configuration: raw values plus derived quantities used by the model and optimizers."""
    raw: Dict[str, Any]
    given: Dict[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    # ---- derived ----
    @property
    def d(self) -> int:
        return self.raw["MODEL_DIM"]

    @property
    def head_dim(self) -> int:
        return self.raw["MODEL_DIM"] // self.raw["NUM_HEADS"]

    @property
    def kv_dim(self) -> int:
        return self.raw["NUM_KV_HEADS"] * self.head_dim

    @property
    def mlp_hidden(self) -> int:
        return max(1, int(self.raw["MLP_MULT"] * self.raw["MODEL_DIM"]))

    @property
    def rope_dims(self) -> int:
        rd = self.raw["ROPE_DIMS"]
        return rd if rd > 0 else self.head_dim

    @property
    def smear_mode(self) -> str:
        m = self.raw["PGOLF_SMEAR_MODE"]
        if m == "":
            return "pre" if self.raw["USE_SMEARGATE"] else "off"
        return m

    @property
    def muon_wd(self) -> float:
        a, b = self.raw["MUON_WD"], self.raw["MUON_WEIGHT_DECAY"]
        return a if a != 0.0 else b

    @property
    def ve_layers(self) -> List[int]:
        return _int_list(self.raw["VE_LAYERS"]) if self.raw["VE_ENABLED"] else []

    @property
    def recur_layers(self) -> List[int]:
        return _int_list(self.raw["RECUR_LAYERS"])

    @property
    def depth_recur_layers(self) -> List[int]:
        return _int_list(self.raw["DEPTH_RECUR_LAYERS"]) if self.raw["DEPTH_RECUR_PASSES"] > 1 else []

    @property
    def loop_enabled(self) -> bool:
        return self.raw["LOOP_CORE_LAYERS"] > 0 and self.raw["LOOP_REPEATS"] > 1

    @property
    def control_patterns(self) -> Tuple[str, ...]:
        return tuple(p for p in self.raw["CONTROL_TENSOR_NAME_PATTERNS"].split(",") if p)

    @property
    def keep_fp32_patterns(self) -> Tuple[str, ...]:
        s = self.raw["INT8_KEEP_FLOAT_FP32_NAME_PATTERNS"] or self.raw["CONTROL_TENSOR_NAME_PATTERNS"]
        return tuple(p for p in s.split(",") if p)

    @property
    def eval_seq_len(self) -> int:
        return self.raw["EVAL_SEQ_LEN"] or self.raw["TRAIN_SEQ_LEN"]

    @property
    def val_trunc_len(self) -> int:
        """Validation truncation unit (spec §1.3): max(TRAIN_SEQ_LEN, EVAL_SEQ_LEN) when EVAL_SEQ_LEN is set."""
        return max(self.raw["TRAIN_SEQ_LEN"], self.eval_seq_len)

    @property
    def ema_start_step(self) -> int:
        if self.raw["EMA_START_STEP"] >= 0:
            return self.raw["EMA_START_STEP"]
        if self.raw["EMA_START_FRAC"] > 0:
            # PR1311 (spec §2.6): the estimated total step count equals the current step, so the
            # start rule step >= max(frac*step, 10) is first true at step 10.
            return 10
        return -1

    @property
    def late_qat_threshold(self) -> float:
        if self.raw["LATE_QAT_THRESHOLD"] > 0:
            return self.raw["LATE_QAT_THRESHOLD"]
        if self.raw["LATE_QAT"]:
            return self.raw["QAT_THRESHOLD"]
        return 0.0


def load_config(path: Optional[str] = None, overrides: Optional[Dict[str, Any]] = None) -> Config:
    given: Dict[str, Any] = {}
    if path:
        with open(path, "r", encoding="utf-8") as f:
            obj = json.load(f)
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: config must be a JSON object")
        given.update(obj)
    if overrides:
        given.update(overrides)
    raw: Dict[str, Any] = {k: v[1] for k, v in KEYS.items()}
    for k, v in given.items():
        if k not in KEYS:
            raise ValueError(f"config: unknown key {k!r}")
        raw[k] = _convert(k, KEYS[k][0], v)
    cfg = Config(raw=raw, given=dict(given))
    _validate(cfg)
    return cfg


def _validate(cfg: Config) -> None:
    r = cfg.raw
    for k in _MUST_BE_OFF:
        if r[k] != KEYS[k][1]:
            raise ValueError(f"config {k}={r[k]!r}: this code path was never run by a record and is not in the reference")
    for k, choices in _CHOICES.items():
        if r[k] not in choices:
            raise ValueError(f"config {k}={r[k]!r}: expected one of {choices}")
    if r["MODEL_DIM"] % r["NUM_HEADS"] != 0 or r["NUM_HEADS"] % r["NUM_KV_HEADS"] != 0:
        raise ValueError("config: MODEL_DIM must divide by NUM_HEADS and NUM_HEADS by NUM_KV_HEADS")
    if cfg.head_dim % 2 != 0 or cfg.rope_dims % 2 != 0 or cfg.rope_dims > cfg.head_dim:
        raise ValueError("config: head dim and ROPE_DIMS must be even, ROPE_DIMS <= head dim")
    if r["PGOLF_ROPE_NTK"] and cfg.rope_dims <= 2:
        raise ValueError("config: NTK RoPE needs ROPE_DIMS > 2")
    if r["LOGIT_SOFTCAP"] <= 0:
        raise ValueError("config: LOGIT_SOFTCAP must be positive")
    if r["MUON_WD"] != 0.0 and r["MUON_WEIGHT_DECAY"] != 0.0 and r["MUON_WD"] != r["MUON_WEIGHT_DECAY"]:
        raise ValueError("config: MUON_WD and MUON_WEIGHT_DECAY disagree")
    if r["BIGRAM_HASH_BUCKETS"] > 0 and r["BIGRAM_VOCAB_SIZE"] > 0:
        raise ValueError("config: BIGRAM_HASH_BUCKETS (PR65/187) and BIGRAM_VOCAB_SIZE (PR315+) are exclusive")
    if r["USE_SMEARGATE"] and r["PGOLF_SMEAR_MODE"] not in ("", "pre"):
        raise ValueError("config: USE_SMEARGATE=1 is PR65's SmearGate (PGOLF_SMEAR_MODE=pre)")
    if r["BIGRAM_VOCAB_SIZE"] == 1:
        raise ValueError("config: BIGRAM_VOCAB_SIZE must be 0 or >= 2")
    L = r["NUM_LAYERS"]
    for i in cfg.ve_layers + cfg.recur_layers + cfg.depth_recur_layers:
        if not 0 <= i < L:
            raise ValueError(f"config: layer index {i} out of range")
    if cfg.loop_enabled:
        if r["LOOP_CORE_LAYERS"] > L:
            raise ValueError("config: LOOP_CORE_LAYERS > NUM_LAYERS")
        if r["VE_ENABLED"] or cfg.recur_layers or r["PARALLEL_START_LAYER"] >= 0 or r["ENCODER_RECURRENCE"] \
                or cfg.depth_recur_layers or r["LOOP_ATTN_EVERY"] < 1:
            raise ValueError("config: the PR453 loop is only combined with the PR315 features")
    if r["BACKOUT_LAYER"] < 0 or r["BACKOUT_LAYER"] > L:
        raise ValueError("config: BACKOUT_LAYER out of range")
    if r["ENCODER_RECURRENCE"] and (cfg.recur_layers or r["PARALLEL_START_LAYER"] >= 0 or cfg.depth_recur_layers):
        raise ValueError("config: ENCODER_RECURRENCE is not combined with other recurrence/parallel features")
    if r["PARALLEL_MODE"] != "sum" and r["PARALLEL_START_LAYER"] >= 0:
        if cfg.recur_layers or cfg.depth_recur_layers:
            raise ValueError("config: lane-parallel residuals are not combined with depth recurrence")
        if r["PARALLEL_START_LAYER"] < L // 2:
            raise ValueError("config: lane-parallel residuals must start in the decoder (PR1289 assertion; PR1334 "
                             "enters its lanes in the decoder loop only)")
    if r["VE_ENABLED"] and not cfg.ve_layers:
        raise ValueError("config: VE_ENABLED with empty VE_LAYERS")
    if r["PRE_ENRICH"] and cfg.d * 3 // 2 < 1:
        raise ValueError("config: PRE_ENRICH needs MODEL_DIM >= 1")


def describe_keys() -> str:
    lines = []
    for k, (t, dflt, h) in KEYS.items():
        lines.append(f"{k} ({t.__name__}, default {dflt!r}): {h}")
    return "\n".join(lines)


def _finite(x: float) -> bool:
    return math.isfinite(x)
