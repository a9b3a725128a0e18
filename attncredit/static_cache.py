"""One static KV cache per generation shape, reused across ``generate`` calls, so a compiled decoding step replays.

With ``cache_implementation="static"`` transformers builds a new ``StaticCache`` for every ``generate`` call
(``GenerationMixin._prepare_static_cache``). Its key/value tensors are marked as static addresses for
``torch.compile``, so CUDA graph trees, which replay a recorded graph only while its static inputs keep their
addresses, record the compiled decoding step again on every call: on an H100 each training step of the learning
study spent about 63 ms recording and about 80 ms of host time in ``cudaMalloc``/``cudaFree`` for the new graph's
memory (docs/experiments.md, Study 2). :func:`reuse_static_caches` keeps the cache of the latest call per batch size
and hands it back, emptied by ``StaticCache.reset()`` (zeros in place, same tensors), when the next call needs the
same shape; a call of another length replaces it. The decoding computes the same numbers: every call starts from an
empty cache either way. A kept cache stays allocated between calls (one per batch size: the training rollout's and
the evaluation's), memory that PyTorch's caching allocator would otherwise keep reserved after the call.
"""

from __future__ import annotations

import functools
import inspect

from torch import nn
from transformers import PreTrainedModel, StaticCache


class StaticCachePool:
    """Wraps a model's ``_prepare_static_cache``: the first call of a (cache implementation, batch size, per-layer
    lengths) keeps transformers' new cache; later calls of that shape get it back reset. One kept cache per
    (implementation, batch size): a longer one replaces it (transformers never shrinks the length within a model)."""

    def __init__(self, prepare):
        self._prepare = prepare
        self._signature = inspect.signature(prepare)
        self._kept: dict[tuple, tuple[tuple, StaticCache]] = {}

    def __call__(self, *args, **kwargs):
        cache = self._prepare(*args, **kwargs)
        if type(cache) is not StaticCache:  # encoder-decoder pairs, subclasses: as transformers made them
            return cache
        bound = self._signature.bind(*args, **kwargs).arguments
        key = (bound["cache_implementation"], bound["batch_size"])
        lengths = tuple(layer.get_max_length() for layer in cache.layers)
        kept = self._kept.get(key)
        if kept is not None and kept[0] == lengths:
            kept[1].reset()
            return kept[1]
        self._kept[key] = (lengths, cache)
        return cache


def reuse_static_caches(model: nn.Module) -> StaticCachePool:
    """Make ``model`` reuse its static caches (module docstring): the transformers model itself, or the outermost one
    inside a wrapper (PEFT, DDP), whose ``generate`` calls ``self._prepare_static_cache``. Idempotent; returns the
    pool."""
    if not isinstance(model, PreTrainedModel):
        model = next(m for m in model.modules() if isinstance(m, PreTrainedModel))
    current = model.__dict__.get("_prepare_static_cache")
    if isinstance(current, StaticCachePool):
        return current
    pool = StaticCachePool(functools.partial(type(model)._prepare_static_cache, model))
    model.__dict__["_prepare_static_cache"] = pool
    return pool


__all__ = ["StaticCachePool", "reuse_static_caches"]
