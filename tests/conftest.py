"""Test session setup shared by every test folder."""

import os

import torch

# Triton kernels run on CPU tensors only through the interpreter, which reads this variable when a
# kernel is defined: set it before any test imports dcsd's Triton module.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
