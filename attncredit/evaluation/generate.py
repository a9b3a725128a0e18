"""Generation backends for evaluation: vLLM when it is installed, transformers ``generate`` otherwise.

Without vLLM, ``HFGenerator`` runs transformers ``generate``. ``cache="static", compile=True`` is its fast path: a
static KV cache of the full length lets transformers compile the decoding step, about 5x the tokens/s of the
default dynamic cache for a SmolLM2-sized model on an H200 once compiled, after a compilation of about 35 s for
each new batch shape (docs/benchmarks.md, "Generation speed"); worth it for long evaluations, not for a few
short batches. A static cache without compilation measured no faster than the dynamic one, so ``cache="auto"``
is the dynamic cache. The cache changes speed, not the distribution: it holds the same keys and values.

Both backends see the same token ids: prompts are rendered by ``attncredit.data.templates.render_prompt_ids``,
exactly as the trainer renders them in training, generation stops at the same end tokens (:func:`end_token_ids`,
TRL's rule: the tokenizer's EOS plus the model's ``generation_config.eos_token_id``), and completions are decoded
with ``skip_special_tokens=True``, as TRL decodes them before scoring. The rhythm analysis
(``attncredit.analysis.rhythm_analysis``) generates through :class:`HFGenerator` too.

Example::

    gen = make_generator("smollm2-135m-instruct", backend="auto")
    ids = gen.render([[{"role": "user", "content": "What is 12 + 35?"}]])
    [[sample]] = gen.generate(ids, SamplingSettings(n=1, temperature=0.0, max_new_tokens=32))
    print(sample.text, sample.finish_reason)
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from attncredit.data.templates import render_prompt_ids
from attncredit.errors import ConfigError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "vllm", "hf")
CACHES = ("auto", "dynamic", "static")


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample: ``n`` answers per prompt, ``temperature`` 0 means greedy (then ``n`` must be 1)."""

    n: int = 1
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 1024
    seed: int = 42

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"number of samples per problem must be an integer >= 1, got {self.n!r}")
        if not isinstance(self.temperature, (int, float)) or self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature!r}")
        if self.temperature == 0 and self.n > 1:
            raise ConfigError(
                f"temperature 0 (greedy) gives {self.n} identical samples per problem; use n-samples 1 or a temperature > 0"
            )
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ConfigError(f"top-p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ConfigError(f"max-new-tokens must be an integer >= 1, got {self.max_new_tokens!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Sample:
    """One generated answer: decoded text, its token count and why it ended (``stop``: an end token, ``length``).

    ``token_ids``: the generated ids, the end token included when ``finish_reason`` is ``stop``."""

    text: str
    num_tokens: int
    finish_reason: str
    token_ids: list[int]


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``vllm`` when the vllm package is importable, else ``hf``; checks explicit choices."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend '{backend}'; allowed: {', '.join(BACKENDS)}")
    has_vllm = importlib.util.find_spec("vllm") is not None
    if backend == "auto":
        return "vllm" if has_vllm else "hf"
    if backend == "vllm" and not has_vllm:
        raise ConfigError("backend 'vllm' needs the vllm package (pip install vllm); or use --backend hf")
    return backend


def end_token_ids(tokenizer, generation_config=None) -> list[int]:
    """The end-of-sequence rule of the whole library, TRL's (``GRPOTrainer.__init__``): the model's
    ``generation_config.eos_token_id`` ones, with the tokenizer's EOS put first when it is not among them."""
    ids = getattr(generation_config, "eos_token_id", None) if generation_config is not None else None
    ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids = [tokenizer.eos_token_id, *ids]
    return ids


class Generator:
    """Common interface: ``render(prompts) -> ids``, ``generate(ids, sampling, progress) -> samples per prompt``."""

    name = "base"

    def __init__(self, model_path: str, tokenizer):
        self.model_path = model_path
        self.tokenizer = tokenizer

    def render(self, prompts: Sequence) -> list[list[int]]:
        """Token ids of ``prompts`` as the trainer makes them (``render_prompt_ids``)."""
        return render_prompt_ids(self.tokenizer, prompts)

    def generate(
        self, prompt_ids: list[list[int]], sampling: SamplingSettings, progress=None, batch_size: int | None = None
    ) -> list[list[Sample]]:
        """``n`` samples per prompt, in prompt order; ``progress``: a tqdm-like bar advanced by samples done;
        ``batch_size``: rows per batch for this call where the backend batches (HF; default: the generator's)."""
        raise NotImplementedError

    def info(self) -> dict:
        return {"backend": self.name, "model_path": str(self.model_path)}

    def close(self) -> None:
        pass


class _TokenTicker:
    """A never-stopping ``StoppingCriteria`` that shows the decoding step of the running batch on a tqdm bar
    (on a CPU one batch of long answers takes minutes)."""

    def __init__(self, bar, label: str):
        self.bar, self.label, self.step, self.last = bar, label, 0, 0.0

    def __call__(self, input_ids, scores, **kwargs):
        import time

        self.step += 1
        now = time.monotonic()
        if now - self.last >= 1.0:
            self.last = now
            self.bar.set_postfix_str(f"{self.label}, token {self.step}", refresh=True)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class HFGenerator(Generator):
    """transformers ``generate`` over left-padded batches of ``batch_size`` sequences (a prompt's n samples are
    n rows). Rows are sorted by prompt length so batches pad little."""

    name = "hf"

    def __init__(
        self,
        model_path: str,
        tokenizer,
        *,
        dtype: str = "auto",
        device: str | None = None,
        batch_size: int = 16,
        cache: str = "auto",
        compile: bool = False,
    ):
        super().__init__(model_path, tokenizer)
        from attncredit.models import load_model

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch-size must be an integer >= 1, got {batch_size!r}")
        if cache not in CACHES:
            raise ConfigError(f"unknown cache '{cache}'; allowed: {', '.join(CACHES)}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        # auto: the dynamic cache; a static one pays off only compiled (module docstring)
        self.cache = "dynamic" if cache == "auto" else cache
        self.compile = bool(compile)
        if dtype == "auto":
            # CPUs run float32 fastest; GPUs the checkpoint's own dtype.
            dtype = "float32" if self.device.type == "cpu" else "auto"
        self.dtype = dtype
        self.batch_size = batch_size
        self.model = load_model(model_path, dtype=dtype).to(self.device).eval()
        if self.cache == "static" and self.compile:  # the compiled step's CUDA graph replays (attncredit.static_cache)
            from attncredit.static_cache import reuse_static_caches

            reuse_static_caches(self.model)
        self.end_ids = end_token_ids(tokenizer, self.model.generation_config)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_ids[0]

    def info(self) -> dict:
        return {**super().info(), "dtype": str(self.model.dtype).replace("torch.", ""), "device": str(self.device),
                "batch_size": self.batch_size, "cache": self.cache, "compile": self.compile}

    @torch.no_grad()
    def generate(self, prompt_ids, sampling, progress=None, batch_size=None):
        from transformers import StoppingCriteriaList

        batch_size = batch_size or self.batch_size
        rows = [(i, j) for i in range(len(prompt_ids)) for j in range(sampling.n)]
        rows.sort(key=lambda r: -len(prompt_ids[r[0]]))
        out: list[list[Sample | None]] = [[None] * sampling.n for _ in prompt_ids]
        torch.manual_seed(sampling.seed)
        ends = torch.tensor(self.end_ids, device=self.device)
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            seqs = [prompt_ids[i] for i, _ in chunk]
            width = max(len(s) for s in seqs)
            input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
            for r, s in enumerate(seqs):
                input_ids[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
                attention_mask[r, width - len(s) :] = 1
            kwargs = dict(
                max_new_tokens=sampling.max_new_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=self.end_ids,
                do_sample=not sampling.greedy,
                disable_compile=not self.compile,
            )
            if self.cache == "static":
                kwargs["cache_implementation"] = "static"
            if not sampling.greedy:
                kwargs.update(temperature=float(sampling.temperature), top_p=float(sampling.top_p), top_k=0)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if progress is not None and hasattr(progress, "set_postfix_str"):
                label = f"batch {start // batch_size + 1}/{-(-len(rows) // batch_size)}"
                kwargs["stopping_criteria"] = StoppingCriteriaList([_TokenTicker(progress, label)])
            generated = self.model.generate(
                input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device), **kwargs
            )[:, width:]
            is_end = torch.isin(generated, ends)
            for r, (i, j) in enumerate(chunk):
                hits = is_end[r].nonzero()
                if len(hits):
                    stop = int(hits[0]) + 1
                    ids, reason = generated[r, :stop], "stop"
                else:
                    ids, reason = generated[r], "length"
                text = self.tokenizer.decode(ids.tolist(), skip_special_tokens=True)
                out[i][j] = Sample(text=text, num_tokens=int(ids.numel()), finish_reason=reason, token_ids=ids.tolist())
            if progress is not None:
                progress.update(len(chunk))
        return out  # type: ignore[return-value]

    def close(self) -> None:
        del self.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class VLLMGenerator(Generator):
    """vLLM offline ``LLM.generate`` on token-id prompts, all of a benchmark at once (vLLM batches itself)."""

    name = "vllm"

    def __init__(
        self,
        model_path: str,
        tokenizer,
        *,
        dtype: str = "auto",
        seed: int = 42,
        max_model_len: int | None = None,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool | None = None,
    ):
        super().__init__(model_path, tokenizer)
        from vllm import LLM

        if enforce_eager is None:  # CUDA graphs pay off on GPUs; compiling on a CPU costs minutes
            enforce_eager = not torch.cuda.is_available()
        kwargs = dict(
            model=str(model_path),
            tokenizer=str(model_path),
            dtype=dtype,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            enforce_eager=enforce_eager,
        )
        if gpu_memory_utilization is None:
            # vLLM's CPU build reads this as the share of host memory to reserve, and refuses to start when that
            # much is not free: a 2-core CI machine shared with other jobs has a few GiB to spare.
            gpu_memory_utilization = 0.9 if torch.cuda.is_available() else 0.3
        kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.settings = {k: v for k, v in kwargs.items() if k not in ("model", "tokenizer")}
        self.llm = LLM(**kwargs)
        from transformers import GenerationConfig

        try:
            generation_config = GenerationConfig.from_pretrained(model_path)
        except (OSError, ValueError):
            generation_config = None
        self.end_ids = end_token_ids(tokenizer, generation_config)

    def info(self) -> dict:
        import vllm

        return {**super().info(), "vllm_version": vllm.__version__, **self.settings}

    def generate(self, prompt_ids, sampling, progress=None, batch_size=None):
        from vllm import SamplingParams

        params = SamplingParams(
            n=sampling.n,
            temperature=float(sampling.temperature),
            top_p=float(sampling.top_p) if not sampling.greedy else 1.0,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            stop_token_ids=self.end_ids,
            skip_special_tokens=True,
        )
        prompts = [{"prompt_token_ids": ids} for ids in prompt_ids]
        outputs = self.llm.generate(prompts, params, use_tqdm=True)
        result = []
        for output in outputs:
            samples = [
                Sample(
                    text=c.text,
                    num_tokens=len(c.token_ids),
                    finish_reason="stop" if c.finish_reason == "stop" else "length",
                    token_ids=list(c.token_ids),
                )
                for c in output.outputs
            ]
            result.append(samples)
            if progress is not None:
                progress.update(len(samples))
        return result

    def close(self) -> None:
        del self.llm


def make_generator(
    model: str,
    backend: str = "auto",
    *,
    dtype: str = "auto",
    batch_size: int = 16,
    seed: int = 42,
    max_model_len: int | None = None,
    tensor_parallel_size: int = 1,
    gpu_memory_utilization: float | None = None,
    device: str | None = None,
    cache: str = "auto",
    compile: bool = False,
) -> Generator:
    """A generator for ``model`` (hub id, folder or embedded name) on ``backend`` (``auto``, ``vllm``, ``hf``);
    ``cache`` and ``compile`` choose the HF backend's KV cache and compilation (see the module docstring)."""
    from attncredit.models import load_tokenizer, resolve_model_name

    backend = resolve_backend(backend)
    path = resolve_model_name(model)
    tokenizer = load_tokenizer(path)
    if backend == "vllm":
        return VLLMGenerator(
            path,
            tokenizer,
            dtype=dtype,
            seed=seed,
            max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
        )
    return HFGenerator(path, tokenizer, dtype=dtype, device=device, batch_size=batch_size, cache=cache, compile=compile)
