"""common.py: pieces the record adapters share.

  TENSOR_FLOAT      torch.Tensor.float as torch defines it
  f64_aranges()     context: torch.arange(..., dtype=float32) gives float64 (the records build RoPE
                    tables with an explicit float32 dtype, which .double() cannot lift)
  exact()           context, only under XCHECK_EXACT=1: f64_aranges, and Tensor.float() leaves float64
                    tensors alone (the records' logits .float() before the cross entropy)
  bf16_qat_forward(cls, qat_on)
                    wraps cls.forward (a record's CastedLinear): while qat_on() and training, the
                    fake-quantised weight's float32 -> float64 cast is rounded through bf16, as its
                    cast to x.dtype = bf16 under autocast is in the real run; the grid's own
                    `self.weight.float()` stays float32 (also under XCHECK_EXACT)
  rec_name, train_mode   the identity name map; plain model.train()
"""
import contextlib
import os

import torch
from torch.overrides import TorchFunctionMode

TENSOR_FLOAT = torch.Tensor.float


@contextlib.contextmanager
def f64_aranges():
    ar = torch.arange

    def arange(*a, **k):
        if k.get("dtype") == torch.float32:
            k["dtype"] = torch.float64
        return ar(*a, **k)

    torch.arange = arange
    try:
        yield
    finally:
        torch.arange = ar


@contextlib.contextmanager
def exact():
    if not os.environ.get("XCHECK_EXACT"):
        yield
        return
    torch.Tensor.float = lambda t: t if t.dtype == torch.float64 else TENSOR_FLOAT(t)
    try:
        with f64_aranges():
            yield
    finally:
        torch.Tensor.float = TENSOR_FLOAT


class _Bf16Wq(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to and isinstance(args[0], torch.Tensor) and args[0].dtype == torch.float32 \
                and (torch.float64 in args[1:] or kwargs.get("dtype") == torch.float64):
            return func(args[0].bfloat16(), *args[1:], **kwargs)
        return func(*args, **kwargs)


def bf16_qat_forward(cls, qat_on):
    orig = cls.forward
    if getattr(orig, "_xcheck_bf16_wq", False):
        return

    def forward(self, x):
        if not (qat_on() and self.training):
            return orig(self, x)
        lifted, torch.Tensor.float = torch.Tensor.float, TENSOR_FLOAT
        try:
            with _Bf16Wq():
                return orig(self, x)
        finally:
            torch.Tensor.float = lifted

    forward._xcheck_bf16_wq = True
    cls.forward = forward


def rec_name(ref_name):
    return ref_name


def train_mode(mod, model):
    model.train()
