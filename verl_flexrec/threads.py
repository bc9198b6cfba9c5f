"""Torch's CPU thread count for one block of code."""

from __future__ import annotations

import contextlib

__all__ = ["torch_threads"]


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads and restore the previous count after it.

    ``None`` leaves torch's setting alone. One thread is often the fastest choice for small models
    on a shared CPU: an OpenMP fork/join costs more than a small op, and on a busy machine each
    parallel region can wait a whole scheduler slice.
    """
    if n is None:
        yield
        return
    n = int(n)
    if n < 1:
        raise ValueError(f"torch threads must be >= 1 (or None to keep torch's setting), got {n}")
    import torch

    old = torch.get_num_threads()
    if n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
