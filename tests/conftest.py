"""Fixtures shared across test directories."""
from __future__ import annotations

import pytest


@pytest.fixture(params=["emulator", pytest.param("cuda", marks=pytest.mark.gpu)])
def gpu_ctx(request, monkeypatch):
    """gpu(0): the CPU emulator of the PTX kernels (MXC_GPU_EMULATOR=1), or a real CUDA
    device (the ``gpu`` marker; skipped without a driver)."""
    import mxc as mx
    from mxc.runtime import cuda

    if request.param == "cuda":
        if not cuda.cuda_status()[0]:
            pytest.skip(f"no GPU: {cuda.cuda_status()[1]}")
    else:
        monkeypatch.setenv("MXC_GPU_EMULATOR", "1")
    return mx.gpu(0)
