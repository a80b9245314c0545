"""Test session setup shared by every test folder."""

import os

import pytest
import torch

# Triton kernels run on CPU tensors only through the interpreter, which reads this variable when a
# kernel is defined: set it before any test imports dcsd's Triton module. With CUDA the kernels
# compile for the GPU, and Triton tests must put their tensors there (the triton_device fixture).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def triton_device() -> torch.device:
    """Where backend="triton" runs in this session: the GPU if there is one, else the CPU under
    the interpreter."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
