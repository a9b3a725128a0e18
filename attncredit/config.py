"""``AnchorGRPOConfig``: TRL's ``GRPOConfig`` plus one field per knob of attention credit (docs/method.md)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields

import torch
from trl import GRPOConfig

from .attention.groups import GROUPING_MODES
from .attention.types import BACKENDS
from .credit import NORMALIZATIONS, SIGN_MODES, check_options, list_strategies
from .errors import ConfigError



@dataclass
class AnchorGRPOConfig(GRPOConfig):
    r"""
    Configuration class for [`AnchorGRPOTrainer`]: TRL's [`~trl.GRPOConfig`] (every GRPO field keeps its meaning)
    plus the knobs of attention-aware credit assignment (arXiv 2510.13554; docs/method.md). Every `credit_*`
    field has the paper's default; where the paper leaves a choice open, the help text names the reading taken.

    The per-token advantage handed to TRL's loss is `A_t * gamma_t` (Eq. 13), with `gamma_t >= 1` chosen by
    `credit_strategy` from the policy's own attention on the rollout: WAAD (Eq. 9) of locally focused heads and
    FAI (Eq. 10) of globally focused heads, read in `credit_num_probe_layers` layers of the middle third.

    Parameters:
        > Parameters that choose the credit

        credit_strategy (`str`, *optional*, defaults to `"coupled"`):
            `"coupled"` (Eq. 18-19, the paper's best), `"local_chunk"` (Eq. 14-15), `"global_anchor"`
            (Eq. 16-17), the controls `"random"` and `"entropy"`, `"none"` (plain GRPO), or a strategy added with
            `attncredit.credit.register_strategy`.
        credit_top_quantile (`float`, *optional*, defaults to `0.4`):
            Share q of each response's tokens a strategy selects: `ceil(q * n)` of n (Eq. 14, 16).
        credit_gamma_amp (`float`, *optional*, defaults to `1.5`):
            gamma of a selected token (Eq. 15, 17, 19); >= 1.
        credit_alpha (`float`, *optional*, defaults to `0.5`):
            Coupled: share of a dominated anchor's bonus moved to its preplan token (Eq. 19); a reading.
        credit_k (`int`, *optional*, defaults to `3`):
            Coupled: look-back for the anchor's WAAD jump (Eq. 18); the paper offers 1, 2 or 3.
        credit_options (`dict` or `str`, *optional*):
            The strategy's own options (YAML mapping or JSON), e.g. `{"selection": "bottom"}` or coupled's
            `tau_waad`, `tau_delta`, `coupled_overlap`.

        > Parameters of the attention statistics

        credit_window (`int`, *optional*, defaults to `10`):
            WAAD clipping window W (Eq. 9).
        credit_fai_horizon (`list[int]`, *optional*, defaults to `[10, 100]`):
            FAI receiver band H_lo, H_hi (Eq. 10).
        credit_head_quantile (`float`, *optional*, defaults to `0.3`):
            Share of probe heads in the local and in the global group (Eq. 7-8).
        credit_head_grouping (`str`, *optional*, defaults to `"sequence"`):
            Rank heads per `"sequence"` or per `"batch"`; a reading.
        credit_head_regroup_every (`int`, *optional*, defaults to `1`):
            Recompute the head groups every k optimizer steps, keeping the latest batch groups in between.
        credit_num_probe_layers (`int`, *optional*, defaults to `5`):
            Evenly spaced probe layers in the middle third of the attention stack (Section 5.1; hybrid models skip
            their Mamba/MoE/MLP blocks).
        credit_probe_layers (`list[int]`, *optional*):
            Explicit 0-indexed probe layers (attention layers), overriding `credit_num_probe_layers`.
        credit_probe_global_only (`bool`, *optional*, defaults to `False`):
            Probe only global (full-attention) layers, skipping sliding-window layers.
        credit_stats_backend (`str`, *optional*, defaults to `"auto"`):
            `"auto"` (Triton on CUDA, chunked torch elsewhere), `"torch"`, `"triton"` or the `"dense"` reference.

        > Parameters that shape the advantages

        credit_advantage_sign (`str`, *optional*, defaults to `"both"`):
            Which advantages get gamma: `"both"` (paper v2), `"positive"` (v1) or `"negative"` (Table 7a).
        credit_normalize (`str`, *optional*, defaults to `"none"`):
            `"mean_one"` rescales each response's gamma to mean 1 (not in the paper).

        > Parameters that control logging

        credit_log_every (`int`, *optional*, defaults to `50`):
            Every N steps, a token view of one completion (WAAD, FAI, gamma) under `<output_dir>/token_views/`.

        > Parameters of generation without vLLM

        compile_generation (`bool`, *optional*, defaults to `False`):
            Generate with a static KV cache and let transformers compile the decoding step (TRL always turns this
            compilation off). Same sampling distribution; faster once compiled, after a compilation per new batch
            shape. The latest call's cache is kept and reused while the shape stays, so the step's CUDA graph
            replays; another shape (an evaluation's batch) replaces it, so one cache at most is held.

        > Parameters of the run (attncredit.output_dir)

        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Start a new run in an `output_dir` holding another run's outputs, deleting them first; without it
            such a run is refused unless it resumes one of that folder's checkpoints.
        logging_nan_inf_filter (`bool`, *optional*, defaults to `False`):
            transformers' filter that hides a NaN/inf loss; off, so a non-finite loss or grad norm is logged and
            stops training at its step.

    TRL's `bf16` default (on) is taken only where bf16 runs (a bf16-capable GPU, `use_cpu` off); without mixed
    precision the model loads in float32 unless `model_init_kwargs` names a dtype. NaN or inf in any numeric field
    is rejected.
    """

    credit_strategy: str = field(
        default="coupled",
        metadata={
            "help": "Token-credit strategy (docs/method.md, Credit strategies): 'coupled' (Eq. 18-19, the paper's best), 'local_chunk' "
            "(preplan tokens, top Delta WAAD, Eq. 14-15), 'global_anchor' (anchor tokens, top FAI, Eq. 16-17), "
            "the paper's controls 'random' and 'entropy', or 'none' (plain GRPO). Strategies registered with "
            "attncredit.credit.register_strategy are accepted too."
        },
    )
    credit_window: int = field(
        default=10, metadata={"help": "WAAD clipping window W (Eq. 9). Paper default 10 (Table 19: best of 5-20)."}
    )
    credit_fai_horizon: list[int] = field(
        default_factory=lambda: [10, 100],
        metadata={
            "help": "FAI receiver band [H_lo, H_hi] (Eq. 10): a token's FAI averages the attention it receives from "
            "response tokens H_lo..H_hi positions later. Paper v2 default 10 100 (v1: 10 50)."
        },
    )
    credit_top_quantile: float = field(
        default=0.4,
        metadata={
            "help": "Share q of each response's tokens that a strategy amplifies: ceil(q * n) of n response tokens "
            "(Eq. 14, 16; Table 5). Paper default 0.4."
        },
    )
    credit_gamma_amp: float = field(
        default=1.5, metadata={"help": "Amplification gamma_amp >= 1 of selected tokens' advantage (Eq. 15, 17, 19)."}
    )
    credit_alpha: float = field(
        default=0.5,
        metadata={
            "help": "Coupled credit: share alpha in [0, 1] of a locally dominated anchor's bonus moved back to its "
            "preplan (intro) token (Eq. 19). Not given by the paper; attncredit's reading 0.5 (docs/method.md, Readings)."
        },
    )
    credit_k: int = field(
        default=3,
        metadata={
            "help": "Coupled credit: how many tokens before an anchor are searched for its WAAD jump (Eq. 18). "
            "Paper: k in {1, 2, 3}; default 3 (docs/method.md, Readings)."
        },
    )
    credit_head_quantile: float = field(
        default=0.3,
        metadata={
            "help": "Share of probe heads, ranked by head distance d (Eq. 7), in the local (bottom) and global (top) "
            "groups (Eq. 8): max(1, round-half-up(q * heads)) heads each, at most half, ties to the lower "
            "(layer, head) index. Paper: 0.3."
        },
    )
    credit_head_grouping: str = field(
        default="sequence",
        metadata={
            "help": "Where the local/global head groups are ranked: 'sequence' (each rollout ranks heads by its own d) "
            "or 'batch' (one ranking from the mean d of the rollouts in the forward). The paper does not say "
            "(docs/method.md, Readings); attncredit's reading: 'sequence'."
        },
    )
    credit_head_regroup_every: int = field(
        default=1,
        metadata={
            "help": "Recompute the local/global head groups (Eq. 7-8) in the forwards of every k-th optimizer step "
            "(global_step divisible by k, and the run's first forward); in between, every sequence uses the groups of the "
            "batch-mean head distance of the latest regroup forward, which travel with checkpoints, and the statistics "
            "skip the head distance: with the row log-sum-exp of SDPA's attention kernel they read only the keys "
            "within max(W - 1, H_hi) of each token (band-only: under 1 percent of the forward on an H200, "
            "docs/benchmarks.md). 1 (default): every forward, as "
            "credit_head_grouping says; the paper recomputes them from every rollout's attention (docs/method.md, "
            "Readings)."
        },
    )
    credit_num_probe_layers: int = field(
        default=5,
        metadata={
            "help": "Number of evenly spaced probe layers in the middle third of the attention stack whose attention "
            "is read (Section 5.1, Table 9; paper: 5). The paper's 'layers floor(L/3) to floor(2L/3)' is read over the model's "
            "softmax-attention layers (all layers of a plain transformer; hybrid models such as Nemotron-H skip their "
            "Mamba/MoE/MLP blocks): with the A attention layers listed in order, positions lo = floor(A/3) to "
            "hi = floor(2A/3), position i = round-half-up(lo + i (hi - lo) / (count - 1)), duplicates dropped, mapped "
            "back to 0-indexed layer ids. L=36 gives 12 15 18 21 24, L=28 gives 9 11 14 16 18 (docs/method.md, "
            "'Probe layers')."
        },
    )
    credit_probe_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Explicit 0-indexed probe layers (model layer ids; each must be a softmax-attention layer); "
            "overrides credit_num_probe_layers when set."
        },
    )
    credit_probe_global_only: bool = field(
        default=False,
        metadata={
            "help": "Choose the probe layers among the global (full-attention) layers only, skipping sliding-window "
            "layers (Gemma 2/3, GPT-OSS, ...): the middle third of the global-attention stack. Default False: "
            "sliding-window layers are probed too, with their window applied exactly (keys outside it get no "
            "probability)."
        },
    )
    credit_advantage_sign: str = field(
        default="both",
        metadata={
            "help": "Which rollouts get gamma: 'both' (paper v2 and Table 7a best), 'positive' (advantage >= 0; paper "
            "v1) or 'negative' (advantage < 0). docs/method.md, Credit strategies."
        },
    )
    credit_normalize: str = field(
        default="none",
        metadata={
            "help": "'none' (paper: gamma >= 1, so the advantage mass grows) or 'mean_one' (rescale gamma so its mean "
            "over each response is 1, keeping the effective learning rate)."
        },
    )
    credit_options: dict | str | None = field(
        default=None,
        metadata={
            "help": "Extra options of the credit strategy, as a mapping (YAML) or JSON string, e.g. "
            "'{\"selection\": \"bottom\"}' for the Bottom-40 percent ablation of Table 5, or for 'coupled' "
            "'{\"tau_waad\": \"median\", \"tau_delta\": \"top_quantile\", \"coupled_overlap\": \"sum\"}' "
            "(the defaults: the readings of docs/method.md; 'coupled_overlap: cap' clips a token in two Eq. 19 roles "
            "at gamma_amp). Unknown options are rejected."
        },
    )
    credit_stats_backend: str = field(
        default="auto",
        metadata={
            "help": "Attention-statistics backend: 'auto' (Triton on CUDA, chunked torch elsewhere), 'torch', "
            "'triton', or 'dense' (reference; builds N x N probabilities, for debugging only)."
        },
    )

    credit_log_every: int = field(
        default=50,
        metadata={
            "help": "Every N optimizer steps (0: never), write the token view of the batch's first completion (WAAD, "
            "FAI and gamma per token) to <output_dir>/token_views/step_XXXXX.html and .png and log it to the active "
            "trackers (wandb, trackio, tensorboard); main process only, about 1 s of plotting per view. "
            "docs/analysis.md shows how to read it."
        },
    )

    compile_generation: bool = field(
        default=False,
        metadata={
            "help": "Without vLLM: generate with a static KV cache and let transformers torch.compile the decoding "
            "step, which TRL always turns off (disable_compile). The samples come from the same distribution; on a "
            "GPU a SmolLM2-sized model then makes about 5x the tokens/s of plain generate, after a compilation of "
            "about 35 s for each new batch shape (prompt width), so it pays off in long runs whose prompts have few "
            "distinct lengths. Sets cache_implementation to 'static' and keeps the latest call's cache for the next "
            "call of the same shape, one cache at most (attncredit/static_cache.py); not with use_vllm."
        },
    )

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start a new run in an output_dir that holds another run's outputs (metrics.jsonl, head-group log, "
            "token views, checkpoints), deleting those first. Without it such a run refuses to start unless it "
            "resumes (resume_from_checkpoint), so two runs' files never mix."
        },
    )
    logging_nan_inf_filter: bool = field(
        default=False,
        metadata={
            "help": "transformers' filter that hides a NaN/inf loss by logging the mean of earlier ones. Off here: a "
            "non-finite loss or grad norm is logged as it is and stops training at that step."
        },
    )

    def __post_init__(self):
        self._check_finite_fields()
        if self.max_completion_length is not None and (
            isinstance(self.max_completion_length, bool)
            or not isinstance(self.max_completion_length, int)
            or self.max_completion_length < 1
        ):  # TRL would fail later, at the first generation, naming generate's max_new_tokens
            raise ConfigError(
                f"max_completion_length={self.max_completion_length!r} is invalid; allowed: an integer >= 1"
            )
        if self.bf16 is None:  # TRL's default is bf16 on; take it only where bf16 runs
            self.bf16 = not self.fp16 and _bf16_available(self.use_cpu)
        super().__post_init__()
        if self.dataloader_pin_memory and not torch.accelerator.is_available():
            # As TrainingArguments does for use_cpu: pinned memory only serves an accelerator, and torch would warn
            # at every epoch of a run on a machine without one.
            self.dataloader_pin_memory = False
        if not (self.bf16 or self.fp16) and isinstance(self.model_init_kwargs, (dict, type(None))):
            # Without mixed precision, train float32 weights (a bf16 checkpoint would otherwise load as bf16). Marked
            # as filled here, so that a trainer given a model object drops it (TRL would warn it is ignored).
            self._filled_model_init_kwargs = not self.model_init_kwargs
            self.model_init_kwargs = {"dtype": "float32", **(self.model_init_kwargs or {})}
        self._check_credit_fields()

    def _check_finite_fields(self) -> None:
        """NaN or inf in any numeric field (or list of numbers) fails here, not as NaN weights a step later."""
        for f in fields(self):
            value = getattr(self, f.name, None)
            numbers = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(x, float) and not math.isfinite(x) for x in numbers):
                raise ConfigError(f"{f.name}={value!r} is invalid; allowed: finite numbers (no nan or inf)")

    def _check_credit_fields(self) -> None:
        def fail(name, value, allowed):
            raise ConfigError(f"{name}={value!r} is invalid; allowed: {allowed}")

        if self.credit_strategy not in list_strategies():
            fail("credit_strategy", self.credit_strategy, ", ".join(list_strategies()))
        if not isinstance(self.credit_window, int) or self.credit_window < 1:
            fail("credit_window", self.credit_window, "an integer >= 1")
        horizon = list(self.credit_fai_horizon)
        if len(horizon) != 2 or not all(isinstance(h, int) for h in horizon) or not 0 <= horizon[0] <= horizon[1]:
            fail("credit_fai_horizon", self.credit_fai_horizon, "two integers H_lo H_hi with 0 <= H_lo <= H_hi")
        self.credit_fai_horizon = horizon
        if not 0.0 < self.credit_top_quantile <= 1.0:
            fail("credit_top_quantile", self.credit_top_quantile, "a number in (0, 1]")
        if self.credit_gamma_amp < 1.0:
            fail("credit_gamma_amp", self.credit_gamma_amp, "a number >= 1")
        if not 0.0 <= self.credit_alpha <= 1.0:
            fail("credit_alpha", self.credit_alpha, "a number in [0, 1]")
        if not isinstance(self.credit_k, int) or self.credit_k < 1:
            fail("credit_k", self.credit_k, "an integer >= 1 (paper: 1, 2 or 3)")
        if not 0.0 < self.credit_head_quantile <= 0.5:
            fail("credit_head_quantile", self.credit_head_quantile, "a number in (0, 0.5]")
        if self.credit_head_grouping not in GROUPING_MODES:
            fail("credit_head_grouping", self.credit_head_grouping, ", ".join(GROUPING_MODES))
        if (
            isinstance(self.credit_head_regroup_every, bool)
            or not isinstance(self.credit_head_regroup_every, int)
            or self.credit_head_regroup_every < 1
        ):
            fail("credit_head_regroup_every", self.credit_head_regroup_every, "an integer >= 1 (1: every forward)")
        if not isinstance(self.credit_num_probe_layers, int) or self.credit_num_probe_layers < 1:
            fail("credit_num_probe_layers", self.credit_num_probe_layers, "an integer >= 1")
        if not isinstance(self.credit_probe_global_only, bool):
            fail("credit_probe_global_only", self.credit_probe_global_only, "True or False")
        if self.credit_probe_layers is not None and (
            not self.credit_probe_layers or any(not isinstance(x, int) or x < 0 for x in self.credit_probe_layers)
        ):
            fail("credit_probe_layers", self.credit_probe_layers, "a non-empty list of layer indices >= 0, or None")
        if self.credit_advantage_sign not in SIGN_MODES:
            fail("credit_advantage_sign", self.credit_advantage_sign, ", ".join(SIGN_MODES))
        if self.credit_normalize not in NORMALIZATIONS:
            fail("credit_normalize", self.credit_normalize, ", ".join(NORMALIZATIONS))
        if isinstance(self.credit_options, str):
            try:
                self.credit_options = json.loads(self.credit_options)
            except json.JSONDecodeError:
                fail("credit_options", self.credit_options, "a JSON mapping of option: value")
        self.credit_options = dict(self.credit_options or {})
        check_options(self.credit_strategy, self.credit_options)
        _check_option_values(self.credit_strategy, self.credit_options)
        if isinstance(self.credit_log_every, bool) or not isinstance(self.credit_log_every, int) or self.credit_log_every < 0:
            fail("credit_log_every", self.credit_log_every, "an integer >= 0 (0 turns token views off)")
        if self.credit_stats_backend not in BACKENDS:
            fail("credit_stats_backend", self.credit_stats_backend, ", ".join(BACKENDS))
        if not isinstance(self.compile_generation, bool):
            fail("compile_generation", self.compile_generation, "True or False")
        if self.compile_generation and self.use_vllm:
            fail("compile_generation", True, "False when use_vllm is on (vLLM compiles its own generation)")
        if self.compile_generation and self.cache_implementation not in (None, "static"):
            fail("cache_implementation", self.cache_implementation, "'static' (or unset) with compile_generation")
        if self.compile_generation:
            self.cache_implementation = "static"


def _check_option_values(strategy: str, options: dict) -> None:
    """Run the strategy once on a tiny made-up batch, so that a bad option *value* (``{"selection": "nope"}``) fails
    here, in one line, instead of at the first training step: the strategies check their option values when called.
    Only ``ConfigError`` counts; anything else a custom strategy raises on made-up statistics is left to training."""
    from .credit import compute_token_weights

    if not options:
        return
    n = 8
    stats = torch.linspace(0.1, 0.8, n)[None]
    try:
        compute_token_weights(
            strategy, waad=stats, fai=stats.flip(-1), entropy=stats, response_mask=torch.ones(1, n, dtype=torch.bool),
            generator=torch.Generator().manual_seed(0), **options,
        )
    except ConfigError as e:
        raise ConfigError(f"credit_options={options!r} is invalid for credit strategy {strategy!r}: {e}") from None
    except Exception:  # noqa: BLE001 - a custom strategy's own needs; training will say
        pass


def _bf16_available(use_cpu: bool) -> bool:
    """Whether bf16 training runs here: a bf16-capable GPU (or XLA device) that the run does not opt out of."""
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    return not use_cpu and (is_torch_bf16_gpu_available() or is_torch_xla_available())
