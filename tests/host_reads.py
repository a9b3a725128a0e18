"""HostReads: the operators that make a CUDA host wait for the GPU, recorded on any device (so on the CPU too)."""

import traceback
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

WAITING = ("aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select")


class HostReads(TorchDispatchMode):
    """While active, ``sites`` collects ``(operator, file, line)`` of every scalar read, ``nonzero``, masked select
    and indexing with a bool mask, at its caller: the innermost Python frame outside torch."""

    def __init__(self):
        super().__init__()
        self.sites: list[tuple[str, str, int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        masks = args[1] if name == "aten::index" else []
        if name in WAITING or any(isinstance(m, torch.Tensor) and m.dtype == torch.bool for m in masks):
            caller = next(f for f in reversed(traceback.extract_stack()[:-1]) if "/torch/" not in f.filename)
            self.sites.append((name, caller.filename, caller.lineno))
        return func(*args, **(kwargs or {}))

    def inside(self, folder) -> list[str]:
        """The sites whose caller lies under ``folder``, as ``"operator at file:line"``."""
        folder = str(folder)
        return [f"{name} at {Path(file).name}:{line}" for name, file, line in self.sites if file.startswith(folder)]
