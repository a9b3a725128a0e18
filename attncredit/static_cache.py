"""The latest generation shape's static KV cache, reused across ``generate`` calls so a compiled decoding step replays.

With ``cache_implementation="static"`` transformers builds a new ``StaticCache`` for every ``generate`` call
(``GenerationMixin._prepare_static_cache``). Its key/value tensors are marked as static addresses for
``torch.compile``, so CUDA graph trees, which replay a recorded graph only while its static inputs keep their
addresses, record the compiled decoding step again on every call: on an H100 each training step of the learning
study spent about 63 ms recording and about 80 ms of host time in ``cudaMalloc``/``cudaFree`` for the new graph's
memory (docs/experiments.md, Study 2). :func:`reuse_static_caches` keeps the cache of the latest call and hands it
back, emptied by ``StaticCache.reset()`` (zeros in place, same tensors), when the next call has the same shape (batch
size and per-layer lengths); a call of another shape replaces it. The decoding computes the same numbers: every call
starts from an empty cache either way. One cache at most is kept: an evaluation's batch replaces the training
rollout's cache and the next rollout replaces it back, one new recording of the graph each time. An earlier version
kept one cache per batch size, which held the evaluation's cache (in the learning study 640 sequences x 336
positions, about 5 GB) through all the training steps between two evaluations.
"""

from __future__ import annotations

import functools
import inspect

from torch import nn
from transformers import PreTrainedModel, StaticCache


class StaticCachePool:
    """Wraps a model's ``_prepare_static_cache``: the first call of a (cache implementation, batch size, per-layer
    lengths) keeps transformers' new cache; later calls of that shape get it back reset, and a call of any other
    shape replaces it. transformers allocates a ``StaticCache``'s tensors lazily, at the first update, so a new cache
    that is thrown away for the kept one has allocated nothing."""

    def __init__(self, prepare):
        self._prepare = prepare
        self._signature = inspect.signature(prepare)
        self._kept: tuple[tuple, StaticCache] | None = None  # (shape, cache) of the latest call

    def __call__(self, *args, **kwargs):
        cache = self._prepare(*args, **kwargs)
        if type(cache) is not StaticCache:  # encoder-decoder pairs, subclasses: as transformers made them
            return cache
        bound = self._signature.bind(*args, **kwargs).arguments
        shape = (bound["cache_implementation"], bound["batch_size"],
                 tuple(layer.get_max_length() for layer in cache.layers))
        if self._kept is not None and self._kept[0] == shape:
            self._kept[1].reset()
            return self._kept[1]
        self._kept = (shape, cache)  # the previous cache is released here, before this call fills the new one
        return cache

    @property
    def kept_shape(self) -> tuple | None:
        """(cache implementation, batch size, per-layer lengths) of the kept cache; None before the first call."""
        return None if self._kept is None else self._kept[0]


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
