"""Record attention statistics inside a real transformers forward (docs/method.md, "Attention statistics").

attncredit registers two attention functions in transformers' ``AttentionInterface`` (each with transformers' own
mask builder under the same name in ``AttentionMaskInterface``, so padding and sliding-window masks are still
built): ``attncredit_sdpa`` returns exactly what transformers' ``sdpa_attention_forward`` returns, and
``attncredit_eager`` exactly what the model's own ``eager_attention_forward`` returns (the route for models whose
attention SDPA cannot run: Gemma 2's logit softcapping, GPT-OSS's sinks). :func:`enable_recording` picks the route
of the model's own attention, so logits are bit-identical to the model without recording. While a
:func:`record_attention` context is active, the attention modules of the probe layers carry a recorder; for them
(and only them) the function also computes the statistics of Eq. 7, 9, 10 (the kernel chosen by
:mod:`attncredit.attention.stats`) from the post-RoPE query [B, Hq, N, D] and the pre-GQA-repeat key
[B, Hkv, N, D] it receives, with the layer's own score rule (its ``scaling``, ``softcap``, sinks ``s_aux`` and
``sliding_window``), under ``no_grad`` on detached tensors. Every other layer, and every layer outside a
context, costs one dict lookup.

Usage::

    enable_recording(model)                                  # once; PEFT/DDP wrappers are fine
    with record_attention(model, [12, 15, 18, 21, 24], attention_mask, completion_mask) as rec:
        out = model(input_ids, attention_mask=attention_mask)  # the forward you run anyway
    rec.stats[15].waad                                       # [B, Hq, N]

Semantics:

* **record once**: each probe layer is recorded by the first forward inside the context; later calls (a second
  forward, or the recomputation of a gradient-checkpointed layer during backward) pass straight through.
* **no wrong numbers**: :func:`enable_recording` refuses models whose attention bypasses the interface (checked
  from the class and by a probe forward); leaving a context whose forward did not reach every probe layer raises;
  a probe layer with a KV-cache prefix, a position bias, a layer type other than full or sliding attention, or a
  mask that lets response tokens see other keys than the statistics assume (packed sequences, chunked or
  bidirectional attention on the completion; checked once per mask) raises.
* **probe layers** are attention layers: :func:`model_probe_layers` takes the middle third of the attention
  stack (hybrid Mamba/attention models skip their other blocks), optionally of the global layers only.
* the masks are the caller's [B, N] ``attention_mask`` (1 = real token, left and/or right padding) and
  ``response_mask`` (1 = completion token), checked once when the context is created by
  :func:`attncredit.attention.stats.check_masks`: real tokens contiguous, responses inside them. Packed sequences
  (several documents in one row) are not supported.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

from ..deferred import DeferredChecks
from ..errors import ConfigError, first_line
from . import stats as _stats
from .lse import RowLSECapture
from .masks import mask_disagrees
from .probes import probe_layers
from .types import AttentionStats

ATTN_IMPLEMENTATION = "attncredit_sdpa"  # records, then runs transformers' SDPA attention
EAGER_IMPLEMENTATION = "attncredit_eager"  # records, then runs the model's own eager attention function
_INNER = {ATTN_IMPLEMENTATION: "sdpa", EAGER_IMPLEMENTATION: "eager"}
_RECORDER_ATTR = "_attncredit_recorder"  # set in an attention module's __dict__ while it is recorded
_LAYERS_ATTR = "_attncredit_attention_layers"  # {layer: layer type} of the attention layers, set by enable_recording
RECORDABLE_LAYER_TYPES = ("full_attention", "sliding_attention")  # transformers' names; others are refused
PARALLEL_HYBRID_TYPES = ("hybrid",)  # config layer types of blocks with softmax attention beside Mamba (Falcon-H1)


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
    """transformers' ``sdpa_attention_forward``, plus statistics for the module's layer while it is recorded: SDPA's
    call is then answered by its own fused kernel with the row log-sum-exp kept (:class:`RowLSECapture`, same
    output bit for bit), which the statistics use instead of a normaliser sweep of their own."""
    recorder = module.__dict__.get(_RECORDER_ATTR)
    if recorder is None or not recorder.wants(module):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    capture = RowLSECapture() if recorder.kernel_lse else None
    with capture if capture is not None else contextlib.nullcontext():
        output = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    recorder(module, query, key, dict(kwargs, attention_mask=attention_mask), capture.lse if capture else None)
    return output


def attncredit_eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
):
    """The model's own ``eager_attention_forward`` (softcapping, sinks, ...), plus statistics while recorded."""
    recorder = module.__dict__.get(_RECORDER_ATTR)
    if recorder is not None and recorder.wants(module):
        recorder(module, query, key, dict(kwargs, attention_mask=attention_mask), None)
    return _eager_function(type(module))(module, query, key, value, attention_mask, **kwargs)


@functools.cache
def _eager_function(attention_class: type):
    """``eager_attention_forward`` of the modeling file that defines ``attention_class``: the function transformers
    itself calls for ``attn_implementation="eager"``."""
    function = getattr(sys.modules.get(attention_class.__module__), "eager_attention_forward", None)
    if function is None:
        raise RecordingUnsupportedError(
            f"{attention_class.__name__} has no eager_attention_forward in {attention_class.__module__}, so attncredit "
            "cannot run its own attention path while recording"
        )
    return function


def register_attention_function() -> str:
    """Register ``attncredit_sdpa`` and ``attncredit_eager`` with transformers (idempotent); returns the SDPA name.

    After this, ``from_pretrained(..., attn_implementation="attncredit_sdpa")`` works too.
    """
    AttentionInterface.register(ATTN_IMPLEMENTATION, attncredit_sdpa_attention_forward)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
    AttentionInterface.register(EAGER_IMPLEMENTATION, attncredit_eager_attention_forward)
    AttentionMaskInterface.register(EAGER_IMPLEMENTATION, eager_mask)
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


def _language_model(model: nn.Module) -> nn.Module:
    """The decoder whose layers are recorded: the language model of a vision-language model (its vision tower may
    number its own layers), the decoder stack of a causal LM; the model itself where transformers names none."""
    base = _transformers_model(model)
    try:
        decoder = base.get_decoder()
    except (AttributeError, NotImplementedError, ValueError):
        decoder = None
    return decoder if isinstance(decoder, nn.Module) else base


def _layer_modules(model: nn.Module, layers) -> list[nn.Module]:
    """Modules of the language model whose ``layer_idx`` is in ``layers`` (attention modules and possibly their
    blocks)."""
    return [m for m in _language_model(model).modules() if m.__dict__.get("layer_idx") in layers]


def _text_config(base: PreTrainedModel):
    return base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config


def _num_layers(base: PreTrainedModel) -> int:
    return int(_text_config(base).num_hidden_layers)


class _LayerDiscovery:
    """Recorder used by the probe forward of :func:`enable_recording`: the layers that reach the function, and the
    score modifiers each passes (sliding window, softcap, sinks)."""

    kernel_lse = False

    def __init__(self):
        self.layers: dict[int, dict] = {}

    def wants(self, module) -> bool:
        return True

    def __call__(self, module, query, key, kwargs, row_lse):
        self.layers[module.layer_idx] = {
            "sliding_window": kwargs.get("sliding_window"),
            "softcap": kwargs.get("softcap"),
            "sinks": kwargs.get("s_aux") is not None,
        }


def _layer_type(config_type, sliding_window) -> str:
    """transformers' layer type of an attention layer: the config's ``layer_types`` entry where it names an
    attention kind (``full_attention``, ``sliding_attention``, ``chunked_attention``, ...), else (no entry, or a
    block type such as Falcon-H1's ``hybrid``: attention beside Mamba in one layer) full or sliding by its window."""
    if config_type is not None and "attention" in config_type:
        return config_type
    return "full_attention" if sliding_window is None else "sliding_attention"


def enable_recording(model: nn.Module, *, verify: bool = True) -> nn.Module:
    """Switch ``model`` to an attncredit attention function that records; the model computes what it computed.

    Works on a transformers model or anything wrapping one (PEFT, DDP). Call it once, before training/recording.
    The route follows the model's own attention: ``attncredit_eager`` (the model's own ``eager_attention_forward``,
    bit for bit) when the model runs eager attention, cannot run SDPA (``_supports_sdpa = False``: Gemma 2, GPT-OSS)
    or passes a score modifier SDPA does not have (attention-logit softcapping, sinks); ``attncredit_sdpa``
    (transformers' SDPA, bit for bit) otherwise. A flash/flex implementation is replaced by that route (the
    statistics need the [B, H, N, D] query and key of one forward over the whole sequence).

    Args:
        model: the policy.
        verify: run a 2-token probe forward to check that every attention layer actually calls the function and to
            read each layer's sliding window, softcap and sinks. Call it on every rank at once under sharded training
            (FSDP/ZeRO-3 gather parameters), or pass ``False`` (the config's ``layer_types``, ``sliding_window`` and
            ``attn_logit_softcapping`` are used instead); :func:`record_attention` still refuses to return
            incomplete statistics.

    Raises:
        RecordingUnsupportedError: (a ``ConfigError``) the model's attention does not go through transformers'
            ``AttentionInterface`` (e.g. GPT-Neo, Falcon before transformers 5.25, a custom module), so its attention
            cannot be recorded; or it adds an ALiBi position bias through the attention mask.
    """
    register_attention_function()
    base = _transformers_model(model)
    name = type(base).__name__
    can_set = getattr(type(base), "_can_set_attn_implementation", None)
    if can_set is None or not can_set():
        raise RecordingUnsupportedError(
            f"{name} computes attention in its own modeling code, not through transformers' AttentionInterface, so "
            "attncredit cannot record its attention; use a model family that supports attention-implementation "
            "switching (e.g. Qwen2, Qwen3, Llama, Mistral, Gemma 2/3, GPT-OSS)"
        )
    previous = base.config._attn_implementation
    inner = _INNER.get(previous, previous)
    config = _text_config(base)
    if getattr(config, "alibi", False):
        raise RecordingUnsupportedError(
            f"{name} uses ALiBi (config alibi=True): its position bias is added to the attention scores through the "
            "mask, which the attention statistics (Eq. 7-10) do not model; use a rotary-position model (alibi=False)"
        )
    config_types = list(getattr(config, "layer_types", None) or [])
    if verify:
        _switch(base, EAGER_IMPLEMENTATION)  # the model's own path: runs every model, whatever its modifiers
        discovery = _probe_forward(base)
        if not discovery:
            base.set_attn_implementation(previous)
            raise RecordingUnsupportedError(
                f"{name}: a probe forward never called transformers' AttentionInterface, so its attention bypasses "
                "it and attncredit cannot record it"
            )
        modifiers = any(info["softcap"] is not None or info["sinks"] for info in discovery.values())
        windows = {layer: info["sliding_window"] for layer, info in discovery.items()}
    else:
        modifiers = getattr(config, "attn_logit_softcapping", None) is not None or any(
            param_name.endswith(".sinks") for param_name, _ in base.named_parameters()
        )
        kinds = config_types or ["full_attention"] * _num_layers(base)
        window = getattr(config, "sliding_window", None)
        windows = {
            layer: (window if kind == "sliding_attention" or (not config_types and window) else None)
            for layer, kind in enumerate(kinds)
            if ("attention" in kind and kind != "linear_attention") or kind in PARALLEL_HYBRID_TYPES
        }
    use_eager = inner == "eager" or modifiers or not getattr(base, "_supports_sdpa", False)
    _switch(base, EAGER_IMPLEMENTATION if use_eager else ATTN_IMPLEMENTATION)
    base.__dict__[_LAYERS_ATTR] = {
        layer: _layer_type(config_types[layer] if layer < len(config_types) else None, window)
        for layer, window in sorted(windows.items())
    }
    return model


def _switch(base: PreTrainedModel, implementation: str) -> None:
    """``base.set_attn_implementation(implementation)``, as a one-line RecordingUnsupportedError if it fails."""
    name = type(base).__name__
    try:
        base.set_attn_implementation(implementation)
    except (ValueError, ImportError, KeyError) as err:
        raise RecordingUnsupportedError(
            f"{name} cannot use the {implementation} attention: {first_line(err)}"
        ) from err
    if base.config._attn_implementation != implementation:
        raise RecordingUnsupportedError(
            f"{name} did not switch to the {implementation} attention implementation "
            f"(it still uses {base.config._attn_implementation!r}), so attncredit cannot record its attention"
        )


def _probe_forward(base: PreTrainedModel) -> dict[int, dict]:
    """Per layer whose attention reached the function in a 2-token no-grad forward, its score modifiers (RNG state
    preserved)."""
    discovery = _LayerDiscovery()
    modules = [m for m in _language_model(base).modules() if isinstance(m.__dict__.get("layer_idx"), int)]
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


def attention_layer_types(model: nn.Module) -> dict[int, str]:
    """``{layer: type}`` of the softmax-attention layers of a model prepared with :func:`enable_recording`.

    Types are transformers' names (``full_attention``, ``sliding_attention``, ...); Mamba, linear-attention,
    convolution and MLP layers of hybrid models (Nemotron-H, Qwen3-Next, LFM2) are not listed, and a layer with
    attention beside Mamba (Falcon-H1's ``hybrid``) is listed as full or sliding attention by its window.
    """
    base = _transformers_model(model)
    layers = base.__dict__.get(_LAYERS_ATTR)
    if layers is None:
        raise ConfigError(f"call attncredit.attention.enable_recording on {type(base).__name__} first")
    return dict(layers)


def model_probe_layers(model: nn.Module, count: int = 5, explicit=None, *, global_only: bool = False) -> list[int]:
    """Probe layers of a model prepared with :func:`enable_recording`, chosen among its attention layers.

    Default: :func:`~attncredit.attention.probes.probe_layers` applied to the attention stack, i.e. ``count`` evenly
    spaced layers in the middle third of the list of attention layers (of the global, full-attention layers only
    with ``global_only``), mapped back to model layer ids. For a plain transformer this is ``probe_layers(L, count)``.
    ``explicit`` (model layer ids) is used as given, after checking that every id is such a layer.

    Raises:
        ConfigError: an explicit layer that is not a (global) attention layer, or no candidate layer at all.
    """
    types = attention_layer_types(model)
    name = type(_transformers_model(model)).__name__
    wanted = ("full_attention",) if global_only else RECORDABLE_LAYER_TYPES
    candidates = [layer for layer, kind in sorted(types.items()) if kind in wanted]
    what = "global (full_attention)" if global_only else "softmax attention"
    if explicit is not None:
        layers = probe_layers(_num_layers(_transformers_model(model)), explicit=explicit)
        bad = sorted(set(layers) - set(candidates))
        if bad:
            raise ConfigError(
                f"probe layers {bad} of {name} are not {what} layers; those are {candidates} (layer types {types})"
            )
        return layers
    if not candidates:
        raise ConfigError(f"{name} has no {what} layers to probe (layer types {types})")
    return [candidates[i] for i in probe_layers(len(candidates), count)]


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
        head_distance: compute the head distance (Eq. 7); ``False`` when the head groups are kept from an earlier
            forward: where the row LSE is known, only the keys near the diagonal are then read (band-only).
        heads: optional ``{layer: (waad_heads, fai_heads)}`` (bool [Hq] each) for every probe layer: WAAD is needed
            only for the first set and FAI only for the second (the kept local and global groups); the other values
            are 0, and the band-only kernel skips them.
        kernel_lse: on the SDPA route, take each probe layer's row log-sum-exp from the attention kernel SDPA runs
            (:mod:`attncredit.attention.lse`; the output stays bit-identical, and kernels that cannot give it fall
            back, logged once); ``False``: the statistics always compute the normaliser themselves.
        checks: optional :class:`~attncredit.deferred.DeferredChecks` that the checks of the masks' values (the
            masks given here, and each probe layer's own attention mask against the statistics' pattern) are added
            to, for the caller to verify once, where its step waits for the GPU anyway. Without it, the given masks
            are checked at once (one host sync) and the layers' masks on leaving the context (one more).

    After the ``with`` block, ``stats[layer]`` is an ``AttentionStats`` (float32 ``waad`` [B, Hq, N], ``fai``
    [B, Hq, N], ``head_distance`` [B, Hq] or None) for every probe layer, ``kernel_lse_layers`` the probe layers whose
    row LSE came from the attention kernel, and ``clock`` holds the time spent computing the statistics.

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
        head_distance: bool = True,
        heads: dict | None = None,
        kernel_lse: bool = True,
        checks: DeferredChecks | None = None,
    ):
        base = _transformers_model(model)
        self.model_name = type(base).__name__
        if base.config._attn_implementation not in _INNER:
            raise ConfigError(
                f"{self.model_name} uses the {base.config._attn_implementation!r} attention implementation; call "
                f"attncredit.attention.enable_recording(model) once before record_attention"
            )
        self.layers: list[int] = probe_layers(_num_layers(base), explicit=layers)
        types = base.__dict__.get(_LAYERS_ATTR)
        if types is not None:
            recordable = sorted(layer for layer, kind in types.items() if kind in RECORDABLE_LAYER_TYPES)
            if not set(self.layers) <= set(recordable):
                raise ConfigError(
                    f"probe layers {sorted(set(self.layers) - set(recordable))} of {self.model_name} are not softmax "
                    f"attention layers of a recordable type {RECORDABLE_LAYER_TYPES}; those are {recordable}"
                )
        self.window, self.fai_horizon = _stats.check_options(window, fai_horizon, backend)
        self.backend = backend
        for name, flag in (("head_distance", head_distance), ("kernel_lse", kernel_lse)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        self.head_distance, self.kernel_lse = head_distance, kernel_lse
        if heads is not None and (not isinstance(heads, dict) or sorted(heads) != self.layers):
            got = sorted(heads) if isinstance(heads, dict) else type(heads).__name__
            raise ValueError(f"heads must map every probe layer {self.layers} to (waad_heads, fai_heads), got {got}")
        self.heads = heads
        self.kernel_lse_layers: list[int] = []
        if attention_mask.dim() != 2:
            raise ValueError(f"attention_mask must be [B, N], got shape {tuple(attention_mask.shape)}")
        attention_mask, response_mask = _stats.check_masks(
            attention_mask, response_mask, *attention_mask.shape, attention_mask.device, checks
        )
        self.stats: dict[int, AttentionStats] = {}
        self._model = model
        self._masks = (attention_mask, response_mask)
        self._probe_set = frozenset(self.layers)
        self._modules: list[nn.Module] = []
        self._stats_fn = None
        self._checked_masks: dict = {}  # layer masks already compared with the statistics' pattern, by identity
        # the layers' mask checks: the caller's, or this context's own, read on leaving it
        self._own_checks = checks is None
        self._checks = DeferredChecks() if checks is None else checks
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
        if self._own_checks:
            if exc_type is None:
                self._checks.verify()
            else:
                self._checks.clear()
        if exc_type is None and len(self.stats) != len(self.layers):
            missing = [layer for layer in self.layers if layer not in self.stats]
            raise RuntimeError(
                f"record_attention: the forward of {self.model_name} never reached probe layers {missing} through the "
                f"attncredit attention functions {tuple(_INNER)} (no forward inside the context, a different attention "
                "implementation, or layers that bypass transformers' AttentionInterface)"
            )
        return False

    # -- called by the attention function, for probe layers only ------------------------------------------------
    def wants(self, module: nn.Module) -> bool:
        """Record once: a later call for the layer (a second forward, checkpoint recomputation) passes through."""
        return module.layer_idx not in self.stats and not _in_backward()

    def __call__(self, module: nn.Module, query: torch.Tensor, key: torch.Tensor, kwargs: dict, row_lse) -> None:
        """Statistics of ``module``'s layer from its query, key and score rule (``kwargs``), and the row LSE of its
        attention kernel where known ([B, Hq, >=N] natural log, or None)."""
        layer = module.layer_idx
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
        if kwargs.get("position_bias") is not None:
            raise ValueError(
                f"layer {layer} of {self.model_name} adds a position bias to its scores, which attention statistics "
                "do not model"
            )
        variant = _stats.check_variant(
            kwargs.get("softcap"), kwargs.get("s_aux"), kwargs.get("sliding_window"), query.shape[1], query.device
        )
        if attention_mask.device != query.device:
            attention_mask = attention_mask.to(query.device, non_blocking=True)
            response_mask = response_mask.to(query.device, non_blocking=True)
            self._masks = (attention_mask, response_mask)
        if self._stats_fn is None:
            self._stats_fn = _stats.backend_function(self.backend, query.device)
        self._check_layer_mask(layer, kwargs.get("attention_mask"), attention_mask, response_mask, variant)
        scaling = kwargs.get("scaling")
        scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
        heads = self.heads[layer] if self.heads is not None else None
        _stats.check_heads(heads, query.shape[1])
        if row_lse is not None:
            self.kernel_lse_layers.append(layer)
            row_lse = row_lse.detach()
        started = self.clock.start(query.device)
        with torch.no_grad():
            self.stats[layer] = self._stats_fn(
                query.detach(), key.detach(), attention_mask, response_mask, scaling, self.window, self.fai_horizon,
                row_lse=row_lse, head_distance=self.head_distance, heads=heads, **variant,
            )
        self.clock.stop(started)

    def _check_layer_mask(self, layer, mask, attention_mask, response_mask, variant) -> None:
        """Check that the mask the layer applies lets each response row t see exactly the keys the statistics give
        probability: real keys ``s <= t`` with ``t - s < sliding_window``. Once per distinct mask tensor (layers of
        one type share it); rows outside the response (prompt, image tokens, padding) may attend as the model likes.
        A 4-D bool mask (SDPA) allows True, a float mask (eager) allows 0; None is SDPA's causal path. The comparison
        (:func:`~attncredit.attention.masks.mask_disagrees`) runs on the mask's device over the whole batch at once,
        without a host sync: its verdict joins the deferred checks (``checks``, or this context's own, read on
        leaving it)."""
        sliding_window = variant.get("sliding_window")
        key = None if mask is None else (mask.data_ptr(), tuple(mask.shape), sliding_window)
        if key in self._checked_masks:
            return
        self._checked_masks[key] = True
        b, n = attention_mask.shape
        if mask is None:
            if sliding_window is not None and n > sliding_window:
                raise self._bad_mask_error(layer, sliding_window)
            bad = ~attention_mask.all()
        elif mask.dim() != 4 or mask.shape[-2:] != (n, n) or mask.shape[0] not in (1, b) or mask.shape[1] != 1:
            raise self._bad_mask_error(layer, sliding_window)
        else:
            bad = mask_disagrees(mask, attention_mask, response_mask, sliding_window)
        self._checks.add(bad, functools.partial(self._bad_mask_error, layer, sliding_window))

    def _bad_mask_error(self, layer, sliding_window) -> ValueError:
        return ValueError(
            f"layer {layer} of {self.model_name}: its attention mask lets response tokens see other keys than "
            f"real keys s <= t{'' if sliding_window is None else f' with t - s < {sliding_window}'} (packed "
            "sequences, chunked or bidirectional attention on the completion), which attention statistics do not "
            "model"
        )


record_attention = AttentionRecorder  # the public name of the context manager (used like ``torch.no_grad``)
