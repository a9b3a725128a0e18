"""Record attention statistics inside a real transformers forward (docs/method.md, "Attention statistics").

attncredit registers one attention function, ``attncredit_sdpa``, in transformers' ``AttentionInterface`` (and
transformers' own ``sdpa_mask`` under the same name in ``AttentionMaskInterface``, so padding masks are still built).
It returns exactly what transformers' ``sdpa_attention_forward`` returns: logits are bit-identical to stock
``sdpa``. While a :func:`record_attention` context is active, the attention modules of the probe layers carry a
recorder; for them (and only them) the function also computes the statistics of Eq. 7, 9, 10 (the kernel chosen
by :mod:`attncredit.attention.stats`) from the post-RoPE query [B, Hq, N, D] and the pre-GQA-repeat key
[B, Hkv, N, D] it receives, under ``no_grad`` on detached tensors. Every other layer, and every layer outside a
context, costs one dict lookup.

Usage::

    enable_recording(model)                                  # once; PEFT/DDP wrappers are fine
    with record_attention(model, [12, 15, 18, 21, 24], attention_mask, completion_mask) as rec:
        out = model(input_ids, attention_mask=attention_mask)  # the forward you run anyway
    rec.stats[15].waad                                       # [B, Hq, N]

Semantics:

* **record once**: each probe layer is recorded by the first forward inside the context; later calls (a second
  forward, or the recomputation of a gradient-checkpointed layer during backward) pass straight through to SDPA.
* **no wrong numbers**: :func:`enable_recording` refuses models whose attention bypasses the interface (checked
  from the class and by a probe forward); leaving a context whose forward did not reach every probe layer raises.
  Probe layers with a sliding window shorter than the sequence, a KV-cache prefix, or softcapping/sinks raise.
* the masks are the caller's [B, N] ``attention_mask`` (1 = real token, left and/or right padding) and
  ``response_mask`` (1 = completion token), checked once when the context is created by
  :func:`attncredit.attention.stats.check_masks`: real tokens contiguous, responses inside them. Packed sequences
  (several documents in one row) are not supported.
"""

from __future__ import annotations

import time

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..errors import ConfigError
from . import stats as _stats
from .probes import probe_layers
from .types import AttentionStats

ATTN_IMPLEMENTATION = "attncredit_sdpa"
_RECORDER_ATTR = "_attncredit_recorder"  # set in an attention module's __dict__ while it is recorded
_UNSUPPORTED_KWARGS = ("softcap", "s_aux", "position_bias")  # modifiers attention_stats does not model


class RecordingUnsupportedError(ConfigError):
    """The model's attention cannot be recorded through transformers' AttentionInterface."""


def attncredit_sdpa_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' ``sdpa_attention_forward``, plus statistics for the module's layer while it is recorded."""
    recorder = module.__dict__.get(_RECORDER_ATTR)
    if recorder is not None:
        recorder(module, query, key, kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register_attention_function() -> str:
    """Register ``attncredit_sdpa`` with transformers (idempotent); returns the name.

    After this, ``from_pretrained(..., attn_implementation="attncredit_sdpa")`` works too.
    """
    AttentionInterface.register(ATTN_IMPLEMENTATION, attncredit_sdpa_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
    return ATTN_IMPLEMENTATION


register_attention_function()


def _in_backward() -> bool:
    """True while autograd runs a backward pass (e.g. activation checkpointing recomputes a layer)."""
    return torch._C._current_graph_task_id() != -1


def _transformers_model(model: nn.Module) -> PreTrainedModel:
    """The outermost transformers model inside ``model`` (itself, or under PEFT / DDP / FSDP wrappers)."""
    if isinstance(model, PreTrainedModel):
        return model
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            return module
    raise RecordingUnsupportedError(
        f"{type(model).__name__} is not (and does not wrap) a transformers PreTrainedModel, so attncredit cannot record "
        "its attention through transformers' AttentionInterface"
    )


def _layer_modules(model: nn.Module, layers) -> list[nn.Module]:
    """Modules of ``model`` whose ``layer_idx`` is in ``layers`` (attention modules and possibly their blocks)."""
    return [m for m in model.modules() if m.__dict__.get("layer_idx") in layers]


def _num_layers(base: PreTrainedModel) -> int:
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    return int(config.num_hidden_layers)


class _LayerDiscovery:
    """Recorder used by the probe forward of :func:`enable_recording`: notes which layers reach the function."""

    def __init__(self):
        self.layers: set[int] = set()

    def __call__(self, module, query, key, kwargs):
        self.layers.add(module.layer_idx)


def enable_recording(model: nn.Module, *, verify: bool = True) -> nn.Module:
    """Switch ``model`` to the ``attncredit_sdpa`` attention function (same numbers as ``sdpa``); returns ``model``.

    Works on a transformers model or anything wrapping one (PEFT, DDP). Call it once, before training/recording;
    it replaces the model's current attention implementation (e.g. ``flash_attention_2``) with SDPA.

    Args:
        model: the policy.
        verify: run a 2-token probe forward to check that every attention layer actually calls the function. Call
            it on every rank at once under sharded training (FSDP/ZeRO-3 gather parameters), or pass ``False``;
            :func:`record_attention` still refuses to return incomplete statistics.

    Raises:
        RecordingUnsupportedError: (a ``ConfigError``) the model's attention does not go through transformers'
            ``AttentionInterface`` (e.g. Falcon, GPT-Neo, a custom module), so its attention cannot be recorded.
    """
    register_attention_function()
    base = _transformers_model(model)
    name = type(base).__name__
    can_set = getattr(type(base), "_can_set_attn_implementation", None)
    if can_set is None or not can_set():
        raise RecordingUnsupportedError(
            f"{name} computes attention in its own modeling code, not through transformers' AttentionInterface, so "
            "attncredit cannot record its attention; use a model family that supports attention-implementation "
            "switching (e.g. Qwen2, Qwen3, Llama, Mistral)"
        )
    previous = base.config._attn_implementation
    try:
        base.set_attn_implementation(ATTN_IMPLEMENTATION)
    except (ValueError, ImportError, KeyError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RecordingUnsupportedError(f"{name} cannot use the {ATTN_IMPLEMENTATION} attention: {reason}") from err
    if base.config._attn_implementation != ATTN_IMPLEMENTATION:
        raise RecordingUnsupportedError(
            f"{name} did not switch to the {ATTN_IMPLEMENTATION} attention implementation "
            f"(it still uses {base.config._attn_implementation!r}), so attncredit cannot record its attention"
        )
    if verify:
        reached = _probe_forward(base)
        if not reached:
            base.set_attn_implementation(previous)
            raise RecordingUnsupportedError(
                f"{name}: a probe forward never called transformers' AttentionInterface, so its attention bypasses "
                "it and attncredit cannot record it"
            )
        base.__dict__["_attncredit_attention_layers"] = frozenset(reached)
    return model


def _probe_forward(base: PreTrainedModel) -> set[int]:
    """Layer ids whose attention reached the function in a 2-token no-grad forward (RNG state preserved)."""
    discovery = _LayerDiscovery()
    modules = [m for m in base.modules() if isinstance(m.__dict__.get("layer_idx"), int)]
    device = next(base.parameters()).device
    input_ids = torch.zeros((1, 2), dtype=torch.long, device=device)
    for m in modules:
        m.__dict__[_RECORDER_ATTR] = discovery
    try:
        rng_devices = [device] if device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=rng_devices):
            base(input_ids=input_ids, use_cache=False)
    finally:
        for m in modules:
            m.__dict__.pop(_RECORDER_ATTR, None)
    return discovery.layers


class StatsClock:
    """Accumulated time of statistics computations, without host syncs on CUDA.

    On CUDA each interval is a pair of timing events read only by :meth:`seconds`; on CPU it is wall time.
    Call :meth:`seconds` where the results are needed anyway (e.g. at logging time): it waits for the last event.
    """

    def __init__(self):
        self._intervals: list = []

    def start(self, device: torch.device):
        if device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def stop(self, started) -> None:
        if isinstance(started, float):
            self._intervals.append(time.perf_counter() - started)
        else:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._intervals.append((started, end))

    def seconds(self) -> float:
        total = 0.0
        for interval in self._intervals:
            if isinstance(interval, tuple):
                start, end = interval
                end.synchronize()
                total += start.elapsed_time(end) / 1000.0
            else:
                total += interval
        return total


class AttentionRecorder:
    """Context manager recording per-head attention statistics of ``layers`` during one forward of ``model``.

    Public name: :data:`record_attention` (``with record_attention(model, layers, attention_mask, response_mask)``);
    subclass this class to record more from the same query/key (``__call__`` gets them for every probe layer).

    Args:
        model: a model prepared with :func:`enable_recording` (or wrapping one: PEFT, DDP).
        layers: 0-indexed probe layers, e.g. :func:`~attncredit.attention.probes.probe_layers` of the model.
        attention_mask: [B, N] of the forward, 1 for real tokens (left/right padding allowed).
        response_mask: [B, N], 1 for response (completion) tokens, the query rows of Eq. 7/9/10.
        window: WAAD window W (Eq. 9), paper default 10.
        fai_horizon: FAI receiver band (H_lo, H_hi) (Eq. 10), paper default (10, 100).
        backend: statistics backend (:data:`attncredit.attention.types.BACKENDS`): ``auto``, ``dense``, ``torch``
            or ``triton``.

    After the ``with`` block, ``stats[layer]`` is an ``AttentionStats`` (float32 ``waad`` [B, Hq, N], ``fai``
    [B, Hq, N], ``head_distance`` [B, Hq]) for every probe layer, and ``clock`` holds the time spent computing them.

    Raises:
        ConfigError: the model was not prepared with :func:`enable_recording`, or a probe layer is not an attention
            layer.
        ValueError: bad layers, options or masks (see :func:`attncredit.attention.stats.check_masks`).
    """

    def __init__(
        self,
        model: nn.Module,
        layers,
        attention_mask: torch.Tensor,
        response_mask: torch.Tensor,
        *,
        window: int = 10,
        fai_horizon: tuple[int, int] = (10, 100),
        backend: str = "auto",
    ):
        base = _transformers_model(model)
        self.model_name = type(base).__name__
        if base.config._attn_implementation != ATTN_IMPLEMENTATION:
            raise ConfigError(
                f"{self.model_name} uses the {base.config._attn_implementation!r} attention implementation; call "
                f"attncredit.attention.enable_recording(model) once before record_attention"
            )
        self.layers: list[int] = probe_layers(_num_layers(base), explicit=layers)
        attention_layers = base.__dict__.get("_attncredit_attention_layers")
        if attention_layers is not None and not set(self.layers) <= attention_layers:
            raise ConfigError(
                f"probe layers {sorted(set(self.layers) - attention_layers)} of {self.model_name} do not use softmax "
                f"attention; attention layers are {sorted(attention_layers)}"
            )
        self.window, self.fai_horizon = _stats.check_options(window, fai_horizon, backend)
        self.backend = backend
        if attention_mask.dim() != 2:
            raise ValueError(f"attention_mask must be [B, N], got shape {tuple(attention_mask.shape)}")
        attention_mask, response_mask = _stats.check_masks(
            attention_mask, response_mask, *attention_mask.shape, attention_mask.device
        )
        self.stats: dict[int, AttentionStats] = {}
        self._model = model
        self._masks = (attention_mask, response_mask)
        self._probe_set = frozenset(self.layers)
        self._modules: list[nn.Module] = []
        self._stats_fn = None
        self.clock = StatsClock()  # time spent in the statistics of the recorded layers

    # -- context protocol -------------------------------------------------------------------------------------
    def __enter__(self) -> AttentionRecorder:
        if self._modules or self._masks is None:
            raise RuntimeError("an AttentionRecorder can be entered only once")
        modules = _layer_modules(self._model, self._probe_set)
        if any(m.__dict__.get(_RECORDER_ATTR) is not None for m in modules):
            raise RuntimeError(f"{self.model_name} is already being recorded by another record_attention context")
        for m in modules:
            m.__dict__[_RECORDER_ATTR] = self
        self._modules = modules
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        for m in self._modules:
            m.__dict__.pop(_RECORDER_ATTR, None)
        self._modules = []
        self._masks = None  # keep no reference to the caller's tensors
        self._model = None
        if exc_type is None and len(self.stats) != len(self.layers):
            missing = [layer for layer in self.layers if layer not in self.stats]
            raise RuntimeError(
                f"record_attention: the forward of {self.model_name} never reached probe layers {missing} through the "
                f"{ATTN_IMPLEMENTATION} attention function (no forward inside the context, a different attention "
                "implementation, or layers that bypass transformers' AttentionInterface)"
            )
        return False

    # -- called by the attention function, for probe layers only ------------------------------------------------
    def __call__(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, kwargs: dict) -> None:
        layer = module.layer_idx
        if layer in self.stats or _in_backward():  # record once; checkpoint recomputation passes through
            return
        attention_mask, response_mask = self._masks
        b, _, n, _ = query.shape
        if key.shape[2] != n:
            raise RuntimeError(
                f"layer {layer}: {key.shape[2]} keys for {n} queries; attention statistics need one forward over the "
                "whole sequence (no KV-cache prefix)"
            )
        if (b, n) != tuple(attention_mask.shape):
            raise ValueError(
                f"layer {layer}: the forward has batch {b} and length {n} but the masks given to record_attention are "
                f"{tuple(attention_mask.shape)}"
            )
        sliding_window = kwargs.get("sliding_window")
        if sliding_window is not None and n > sliding_window:
            raise ValueError(
                f"layer {layer} of {self.model_name} uses a sliding window of {sliding_window} tokens, shorter than the "
                f"sequence ({n}); attention statistics assume full causal attention: pick full-attention probe layers"
            )
        for name in _UNSUPPORTED_KWARGS:
            if kwargs.get(name) is not None:
                raise ValueError(f"layer {layer} of {self.model_name} uses {name}, which attention statistics do not model")
        if attention_mask.device != query.device:
            attention_mask = attention_mask.to(query.device, non_blocking=True)
            response_mask = response_mask.to(query.device, non_blocking=True)
            self._masks = (attention_mask, response_mask)
        if self._stats_fn is None:
            self._stats_fn = _stats.backend_function(self.backend, query.device)
        scaling = kwargs.get("scaling")
        scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
        started = self.clock.start(query.device)
        with torch.no_grad():
            self.stats[layer] = self._stats_fn(
                query.detach(), key.detach(), attention_mask, response_mask, scaling, self.window, self.fai_horizon
            )
        self.clock.stop(started)


record_attention = AttentionRecorder  # the public name of the context manager (used like ``torch.no_grad``)
