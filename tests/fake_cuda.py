"""A pytest plugin that makes ``torch.cuda.is_available()`` answer True: the GPU machine's view,
on a machine without one. With it, tests/conftest.py leaves TRITON_INTERPRET unset, so a test
that would call Triton on CPU tensors on a GPU machine fails with "backend='triton' got CPU
tensors", while a test that puts its tensors on the GPU fails with "Found no NVIDIA driver".

    PYTHONPATH=tests pytest -p fake_cuda tests/modules tests/models \
        tests/kernels/test_kernels_op.py tests/kernels/test_kernels_triton.py tests/evaluate \
        -k "not hypothesis"
"""

import torch

torch.cuda.is_available = lambda: True
