"""Math sets loaded from the Hugging Face hub by name (real clusters; they fail offline with a clear error).

=================  ====================================  =======================  =========  =====================
dataset (split)    hub id                                config / hub split       rows       gold answer from
=================  ====================================  =======================  =========  =====================
``gsm8k`` (train)  ``openai/gsm8k``                      ``main`` / ``train``     7473       ``answer`` after ####
``dapo_math_17k``  ``BytedTsinghua-SIA/DAPO-Math-17k``   default / ``train``      ~17.9k     ``reward_model``
(train)                                                                           distinct   ``.ground_truth``
``math500`` (test) ``HuggingFaceH4/MATH-500``            default / ``test``       500        ``answer``
``aime2024``       ``HuggingFaceH4/aime_2024``           default / ``train``      30         ``answer``
(test)
``amc23`` (test)   ``math-ai/amc23``                     default / ``test``       40         ``answer``
``olympiadbench``  ``Hothan/OlympiadBench``              ``OE_TO_maths_en_COMP``  674        ``final_answer[0]``
(test)                                                   / ``train``
``minerva`` (test) ``math-ai/minervamath``               default / ``test``       272        ``answer``
=================  ====================================  =======================  =========  =====================

DAPO-Math-17k ships each problem ~100 times, wrapped in DAPO's "Solve the following math problem step by
step... Answer: $Answer" instruction; we strip that wrapper (our template adds its own) and keep the first
occurrence of each problem. OlympiadBench is the text-only English open-ended maths subset, the one used by
math-RL evaluations; its golds lose their ``$`` delimiters, and ``context`` (when present) is prepended to the
question.

The hub loads through ``datasets.load_dataset``, so a populated local cache works with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from attncredit.errors import ConfigError

from .packaged import gsm8k_final_answer

_DAPO_HEAD = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
_DAPO_TAIL = '\n\nRemember to put your answer on its own line after "Answer:".'


def _dapo_question(row: dict) -> str:
    prompt = row["prompt"]
    text = prompt[-1]["content"] if isinstance(prompt, list) else str(prompt)
    if text.startswith(_DAPO_HEAD):
        text = text[len(_DAPO_HEAD) :]
    if text.endswith(_DAPO_TAIL):
        text = text[: -len(_DAPO_TAIL)]
    return text.strip()


def _olympiad_question(row: dict) -> str:
    context = (row.get("context") or "").strip()
    return f"{context}\n{row['question']}" if context else row["question"]


def _olympiad_answer(row: dict) -> str:
    answers = row.get("final_answer") or [""]
    answer = str(answers[0]).strip()
    return answer[1:-1].strip() if len(answer) >= 2 and answer[0] == answer[-1] == "$" else answer


@dataclass(frozen=True)
class HubSource:
    repo: str
    config: str | None
    hub_split: str
    question: Callable[[dict], str]
    answer: Callable[[dict], str]
    extras: Callable[[dict], dict] = lambda row: {}
    dedupe: bool = False


HUB_SOURCES: dict[tuple[str, str], HubSource] = {
    ("gsm8k", "train"): HubSource(
        "openai/gsm8k", "main", "train", lambda r: r["question"], lambda r: gsm8k_final_answer(r["answer"]),
        extras=lambda r: {"solution": r["answer"]},
    ),
    ("dapo_math_17k", "train"): HubSource(
        "BytedTsinghua-SIA/DAPO-Math-17k", None, "train", _dapo_question,
        lambda r: str(r["reward_model"]["ground_truth"]), dedupe=True,
    ),
    ("math500", "test"): HubSource("HuggingFaceH4/MATH-500", None, "test", lambda r: r["problem"], lambda r: r["answer"]),
    ("aime2024", "test"): HubSource("HuggingFaceH4/aime_2024", None, "train", lambda r: r["problem"], lambda r: str(r["answer"])),
    ("amc23", "test"): HubSource("math-ai/amc23", None, "test", lambda r: r["question"], lambda r: str(r["answer"])),
    ("olympiadbench", "test"): HubSource(
        "Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train", _olympiad_question, _olympiad_answer,
    ),
    ("minerva", "test"): HubSource("math-ai/minervamath", None, "test", lambda r: r["question"], lambda r: str(r["answer"])),
}


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def load_hub(name: str, split: str, limit: int | None, offline_names: str) -> list[dict]:
    """Rows ``{"question", "answer", ...extras}`` of a hub dataset; ``ConfigError`` when the hub cannot serve it."""
    source = HUB_SOURCES[(name, split)]
    try:
        import datasets

        hub = datasets.load_dataset(source.repo, source.config, split=source.hub_split)
    except Exception as exc:  # noqa: BLE001  (connection, auth, missing cache: all one user-facing error)
        if _offline():
            why = "the Hugging Face hub is unreachable (HF_HUB_OFFLINE=1) and it is not in the local cache"
        else:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            why = f"it could not be loaded from the Hugging Face hub ({type(exc).__name__}: {first})"
        raise ConfigError(
            f"dataset '{name}' (split {split}) is {source.repo} on the hub, but {why}; "
            f"offline datasets: {offline_names}"
        ) from None
    rows, seen = [], set()
    for row in hub:
        question = source.question(row)
        if source.dedupe:
            if question in seen:
                continue
            seen.add(question)
        rows.append({"question": question, "answer": source.answer(row), **source.extras(row)})
        if limit is not None and len(rows) >= limit:
            break
    return rows
