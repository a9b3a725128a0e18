"""Datasets for attncredit: generated Countdown, packaged offline math sets, hub math sets, prompt templates.

=================  =========  ===========================  ==============================================
name               task       splits                       source
=================  =========  ===========================  ==============================================
``countdown``      countdown  train (20000), test (512)    generated, seeded, solvable by construction
``countdown3``     countdown  train, test                  generated, 3 numbers (easy demo)
``arithmetic``    arithmetic train, test (640)            generated, worked steps + ``Answer: N`` (the study task)
``gsm8k``          math       test (1319) / train (7473)   test packaged (offline) / train from the hub
``aime2025``       math       test (30)                    packaged (offline)
``champ``          math       test (270)                   packaged (offline)
``dapo_math_17k``  math       train                        hub (the paper's math training set)
``math500``        math       test (500)                   hub
``aime2024``       math       test (30)                    hub
``amc23``          math       test (40)                    hub
``olympiadbench``  math       test (674)                   hub
``minerva``        math       test (272)                   hub
=================  =========  ===========================  ==============================================

Hub ids are in ``hub.py``, package files in ``packaged.py``. Example::

    from attncredit.data import load_dataset_by_name
    train = load_dataset_by_name("countdown", "train", seed=0)            # 20000 rows, template "r1"
    test = load_dataset_by_name("gsm8k", "test", template="boxed", limit=64)
    mine = load_data_file("my_prompts.jsonl")                             # 'prompt' + the rewards' columns
"""

from .arithmetic import arithmetic_split
from .countdown import countdown_split, countdown_splits, generate_countdown, solve_countdown
from .files import DATA_FILE_SUFFIXES, load_data_file
from .registry import DATASETS, list_datasets, load_dataset_by_name
from .templates import (
    DEFAULT_TEMPLATE,
    TEMPLATES,
    PromptTemplate,
    chat_prompt_text,
    get_template,
    has_prefill,
    list_templates,
    prefill_prompt_ids,
    render_prompt_ids,
)

__all__ = [
    "load_dataset_by_name",
    "load_data_file",
    "DATA_FILE_SUFFIXES",
    "list_datasets",
    "DATASETS",
    "arithmetic_split",
    "generate_countdown",
    "countdown_split",
    "countdown_splits",
    "solve_countdown",
    "PromptTemplate",
    "TEMPLATES",
    "DEFAULT_TEMPLATE",
    "chat_prompt_text",
    "has_prefill",
    "prefill_prompt_ids",
    "render_prompt_ids",
    "get_template",
    "list_templates",
]
