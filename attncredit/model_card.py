"""Model cards and saved names of attncredit runs: the pieces ``AnchorGRPOTrainer`` / ``AnchorPPOTrainer`` add to TRL's
own card (``create_model_card``, which TRL writes to ``<output_dir>/README.md`` at each checkpoint and which the
trainers also write after the final ``save_model``).

* the base model's hub id (:func:`base_model_id`): the embedded model's conversion folder is named by its hub id
  (``HuggingFaceTB/SmolLM2-135M-Instruct``), a folder saved by attncredit by the ``_name_or_path`` we write into its
  ``config.json`` (:func:`name_base_model`; transformers itself leaves that key out), a LoRA adapter folder by its
  ``base_model_name_or_path``;
* a section on the credit assignment (the method, arXiv 2510.13554, and the run's ``credit_*`` settings, plus the
  PPO ones for PPO) and its citation beside TRL's (:func:`add_attncredit_sections`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .models import EMBEDDED_MODELS, _looks_like_path, cache_dir

PAPER_TITLE = (
    "Attention Illuminates LLM Reasoning: The Preplan-and-Anchor Rhythm Enables Fine-Grained Policy Optimization"
)
PAPER_ID = "2510.13554"
CITATION = """\
@article{li2025attention,
    title        = {{Attention Illuminates LLM Reasoning: The Preplan-and-Anchor Rhythm Enables Fine-Grained Policy Optimization}},
    author       = {Yang Li and Zhichen Dong and Yuhan Sun and Weixun Wang and Shaopan Xiong and Yijia Luo and Jiashun Liu and Han Lu and Jiamang Wang and Wenbo Su and Bo Zheng and Junchi Yan},
    year         = 2025,
    eprint       = {arXiv:2510.13554},
}"""
PPO_PAPER = {
    "title": "Proximal Policy Optimization Algorithms",
    "id": "1707.06347",
    "citation": """\
@article{schulman2017proximal,
    title        = {{Proximal Policy Optimization Algorithms}},
    author       = {John Schulman and Filip Wolski and Prafulla Dhariwal and Alec Radford and Oleg Klimov},
    year         = 2017,
    eprint       = {arXiv:1707.06347},
}""",
}
TAG = "attncredit"


def _is_hub_id(value) -> bool:
    return isinstance(value, str) and bool(value) and not _looks_like_path(value) and not Path(value).expanduser().exists()


def base_model_id(name_or_path: str | None) -> str | None:
    """The hub id of the model a run started from, or None when only a local folder is known.

    A hub id is itself; an embedded name (``smollm2-135m-instruct``) or its conversion folder gives the embedded
    model's hub id; a local folder gives the hub id recorded in its ``config.json`` (``_name_or_path``, written by
    :func:`name_base_model`) or ``adapter_config.json`` (``base_model_name_or_path``)."""
    if not name_or_path:
        return None
    name_or_path = str(name_or_path)
    if name_or_path in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[name_or_path].hub_id
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        return name_or_path if _is_hub_id(name_or_path) else None
    for name, entry in EMBEDDED_MODELS.items():
        if path.resolve() == (cache_dir() / "models" / name).resolve():
            return entry.hub_id
    for file, key in (("config.json", "_name_or_path"), ("adapter_config.json", "base_model_name_or_path")):
        try:
            value = json.loads((path / file).read_text()).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        if _is_hub_id(value):
            return value
    return None


def _update_json(path: str, key: str, value: str) -> None:
    if not os.path.isfile(path):
        return
    with open(path) as f:
        data = json.load(f)
    if data.get(key) == value:
        return
    data[key] = value
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def name_base_model(folder: str, hub_id: str | None) -> None:
    """Record ``hub_id`` as the base model of a saved folder: ``config.json``'s ``_name_or_path`` (which
    ``save_pretrained`` drops) and a LoRA adapter's ``adapter_config.json`` ``base_model_name_or_path`` (which PEFT
    fills with the local path the base model was loaded from)."""
    if not hub_id:
        return
    _update_json(os.path.join(folder, "config.json"), "_name_or_path", hub_id)
    _update_json(os.path.join(folder, "adapter_config.json"), "base_model_name_or_path", hub_id)


def card_settings(args) -> dict:
    """The run's attncredit settings: every field its config class adds to TRL's GRPOConfig (``credit_*``, and for
    PPO the critic, GAE and value-loss fields), in declaration order."""
    from trl import GRPOConfig

    skip = {f.name for f in dataclasses.fields(GRPOConfig)} | {"overwrite_output_dir"}  # a run-folder switch
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.name not in skip and f.init}


def _value(value) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, tuple, bool)) or value is None else str(value)
    return text.replace("|", "\\|")


def add_attncredit_sections(readme: str, trainer_name: str, args, base_model: str | None = None) -> None:
    """Add to TRL's card at ``readme``: the credit assignment paragraph and settings table before TRL's framework
    versions, and the method's citation before TRL's; a base model known only as a local folder is named as that
    folder (TRL writes "[None](https://huggingface.co/None)")."""
    text = Path(readme).read_text()
    if f"arxiv.org/abs/{PAPER_ID}" in text:  # already added
        return
    if base_model:
        text = text.replace("[None](https://huggingface.co/None)", f"`{base_model}` (a local model)")
    settings = card_settings(args)
    strategy = settings.get("credit_strategy")
    method = f"[{PAPER_TITLE}](https://huggingface.co/papers/{PAPER_ID}) (Li et al., [arXiv {PAPER_ID}](https://arxiv.org/abs/{PAPER_ID}))"
    if strategy == "none":
        lead = (f"It was trained with attncredit with credit assignment "
                f"off (`credit_strategy: none`: plain {trainer_name} advantages); attncredit implements {method}.")
    else:
        lead = (f"Its {trainer_name} advantages were scaled per token by attention-aware credit assignment "
                f"(attncredit, `credit_strategy: {strategy}`), the method "
                f"of {method}: the policy's own attention marks preplan and anchor tokens, whose advantages get more "
                "weight.")
    rows = "\n".join(f"| `{name}` | `{_value(value)}` |" for name, value in settings.items())
    section = f"\n\n### Credit assignment\n\n{lead}\n\n| setting | value |\n|---|---|\n{rows}\n"
    marker = "### Framework versions"
    text = text.replace(marker, section.lstrip("\n") + "\n" + marker, 1) if marker in text else text + section
    cite = f"Cite attention-aware credit assignment (attncredit's method) as:\n\n```bibtex\n{CITATION}\n```\n\n"
    marker = "Cite TRL as:"
    text = text.replace(marker, cite + marker, 1) if marker in text else text + "\n" + cite
    Path(readme).write_text(text)
