import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
if not torch.cuda.is_available():
    # Triton decides at decoration time whether its kernels run under the interpreter; set it before any test
    # module imports attncredit.attention.triton_stats, so the kernels' parity tests run on CPU tensors.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    """Folders of tiny random models (head_dim 64, GQA 4 query / 2 KV heads), one per architecture."""
    from attncredit.testing import ARCHS, save_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: save_tiny_model(root / arch, arch=arch) for arch in ARCHS}


@pytest.fixture(scope="session")
def tiny_qwen2(tiny_model_dirs):
    return tiny_model_dirs["qwen2"]
