"""Checks of every row of a training or evaluation dataset, before any model loads (``AnchorGRPOTrainer`` and so
``AnchorPPOTrainer`` run them first, in ``_before_loading``).

* :func:`validate_rows`: the columns training and the rewards read are there; no null (or empty) prompt, no prompt
  that is neither a string nor a list of ``{'role', 'content'}`` messages, no null message role or content, no null
  value in a column a reward reads. The first problem (missing column, or bad row by index and column) is one
  ``ConfigError`` line. A ``datasets.Dataset`` is checked column-wise on its Arrow data (about a second for a million
  rows); a list of row dicts row by row; an ``IterableDataset`` (streamed, no length) only for its columns.
* :func:`check_prompt_lengths`: no prompt as long as the model's context. Only rows whose UTF-8 size could reach the
  limit are tokenized (a token covers at least one byte), so a dataset of short prompts costs no tokenization.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

# Tokens the chat template may add per message beyond the content (role names, separators), for the byte bound.
_TEMPLATE_TOKENS_PER_MESSAGE = 16
_BATCH = 512  # rows rendered and tokenized at once by check_prompt_lengths


def _arrow_column(dataset, column: str):
    """``column`` of a ``datasets.Dataset`` as one Arrow array, with any selection or shuffle applied."""
    import pyarrow as pa

    values = dataset.with_format("arrow")[column]
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _first(mask) -> int | None:
    """Index of the first True of a boolean Arrow array or numpy array, or None."""
    array = np.asarray(mask.to_numpy(zero_copy_only=False) if hasattr(mask, "to_numpy") else mask, dtype=bool)
    hits = np.flatnonzero(array)
    return int(hits[0]) if hits.size else None


_PROMPT_ALLOWED = "a non-empty string or a non-empty list of {'role', 'content'} messages, none of them null"


def _fail(name: str, row: int, column: str, problem: str) -> None:
    allowed = _PROMPT_ALLOWED if column == "prompt" else "any value but null"
    raise ConfigError(
        f"{name} row {row}: {problem} in column '{column}'; allowed: {allowed} (fix or drop the row before training)"
    )


def _missing(where: str, column: str, needed: dict[str, str], found) -> None:
    raise ConfigError(
        f"{where} is missing column '{column}' (needed by {needed[column]}); required: {', '.join(needed)}; "
        f"found: {', '.join(found) or 'none'}"
    )


def _needed_columns(reward_funcs) -> dict[str, str]:
    """Column -> what reads it: ``prompt`` (training), then the columns each reward function declares it reads
    (``required_columns``, as the packaged rewards; a reward model, given as a string, declares none)."""
    funcs = reward_funcs if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    needed = {"prompt": "training"}
    for func in funcs:
        for column in getattr(func, "required_columns", ()) or ():
            needed.setdefault(column, f"reward '{getattr(func, '__name__', type(func).__name__)}'")
    return needed


def _bad_prompt_row(values) -> tuple[int, str] | None:
    """(row, problem) of the first bad prompt of an Arrow prompt column, or None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        bad = pc.or_(pc.is_null(values), pc.equal(pc.utf8_length(values), 0))
        row = _first(pc.fill_null(bad, True))
        return None if row is None else (row, "a null or empty prompt")
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        return None if len(values) == 0 else (0, f"a prompt of Arrow type {kind}")
    rows = [
        _first(pc.is_null(values)),
        _first(pc.fill_null(pc.equal(pc.list_value_length(values), 0), False)),
    ]
    problems = ["a null prompt", "an empty message list"]
    messages = pc.list_flatten(values)
    parents = pc.list_parent_indices(values).to_numpy(zero_copy_only=False)
    first_message = int(parents[0]) if len(messages) else None  # the row of the first message
    if not pa.types.is_struct(messages.type):
        rows.append(first_message)
        problems.append("a message that is not a {'role', 'content'} mapping")
    else:
        names = [messages.type.field(i).name for i in range(messages.type.num_fields)]
        for field in ("role", "content"):
            if field not in names:  # no message has it
                rows.append(first_message)
                problems.append(f"a message without a '{field}' key")
                continue
            index = _first(pc.is_null(pc.struct_field(messages, field)))
            rows.append(None if index is None else int(parents[index]))
            problems.append(f"a message whose '{field}' is null")
        index = _first(pc.is_null(messages))
        rows.append(None if index is None else int(parents[index]))
        problems.append("a null message")
    found = [(row, problem) for row, problem in zip(rows, problems) if row is not None]
    return min(found) if found else None


def _bad_python_prompt(prompt) -> str | None:
    if isinstance(prompt, str):
        return None if prompt else "an empty prompt"
    if prompt is None:
        return "a null prompt"
    if not isinstance(prompt, list) or not prompt:
        return "an empty message list" if isinstance(prompt, list) else f"a prompt of type {type(prompt).__name__}"
    for message in prompt:
        if not isinstance(message, dict):
            return "a message that is not a {'role', 'content'} mapping"
        for field in ("role", "content"):
            if field not in message:
                return f"a message without a '{field}' key"
            if message[field] is None:
                return f"a message whose '{field}' is null"
    return None


def validate_rows(dataset, reward_funcs=None, *, name: str = "dataset") -> None:
    """Check every row of ``dataset`` (a ``datasets.Dataset`` or a list of row dicts) for the columns training reads:
    ``prompt``, a non-empty string or a non-empty list of ``{'role', 'content'}`` messages with non-null ``role`` and
    ``content``, and the columns ``reward_funcs`` (one, a list, or None) declare in ``required_columns`` (e.g.
    ``answer`` for ``math_accuracy``, ``numbers`` and ``target`` for ``countdown``), not null. Raises a one-line
    ``ConfigError`` naming ``name`` and either a missing column (with what needs it, the required and the found
    columns) or the first bad row's index, its column and what the column allows. An ``IterableDataset`` (streamed: it
    cannot be scanned) is checked for its columns only, where its features are known."""
    needed = _needed_columns(reward_funcs)
    if isinstance(dataset, list):
        for row_index, row in enumerate(dataset):
            if not isinstance(row, dict):
                raise ConfigError(f"{name} row {row_index}: a {type(row).__name__}; allowed: a dict of column values")
            for column in needed:
                if column not in row:
                    _missing(f"{name} row {row_index}", column, needed, row)
                problem = _bad_python_prompt(row[column]) if column == "prompt" else (
                    "a null value" if row[column] is None else None
                )
                if problem:
                    _fail(name, row_index, column, problem)
        return
    present = getattr(dataset, "column_names", None)
    if present is None:
        return  # streamed without known features: columns are only known as rows are drawn
    for column in needed:
        if column not in present:
            _missing(name, column, needed, present)
    if not hasattr(dataset, "with_format") or not hasattr(dataset, "__len__"):
        return  # streamed: rows are only known as they are drawn
    import pyarrow.compute as pc

    found = []
    for column in needed:
        values = _arrow_column(dataset, column)
        if column == "prompt":
            bad = _bad_prompt_row(values)
            if bad is not None:
                found.append((bad[0], column, bad[1]))
        else:
            row = _first(pc.is_null(values))
            if row is not None:
                found.append((row, column, "a null value"))
    if found:
        row, column, problem = min(found)
        _fail(name, row, column, problem)


def _content_bytes(dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """(UTF-8 bytes of each row's prompt text, number of messages per row), or None where not measurable this way
    (multimodal content, a list of row dicts is measured in Python)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(dataset, list):
        sizes, counts = [], []
        for row in dataset:
            prompt = row.get("prompt") if isinstance(row, dict) else None
            if isinstance(prompt, str):
                sizes.append(len(prompt.encode()))
                counts.append(1)
            elif isinstance(prompt, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt):
                sizes.append(sum(len(m["content"].encode()) for m in prompt))
                counts.append(len(prompt))
            else:
                return None
        return np.asarray(sizes, dtype=np.int64), np.asarray(counts, dtype=np.int64)
    if not hasattr(dataset, "with_format") or "prompt" not in (getattr(dataset, "column_names", None) or []):
        return None
    values = _arrow_column(dataset, "prompt")
    kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        sizes = pc.fill_null(pc.binary_length(values), 0).to_numpy(zero_copy_only=False)
        return sizes.astype(np.int64), np.ones(len(values), dtype=np.int64)
    if not (pa.types.is_list(kind) or pa.types.is_large_list(kind)):
        return None
    messages = pc.list_flatten(values)
    if not pa.types.is_struct(messages.type) or messages.type.get_field_index("content") < 0:
        return None
    content = pc.struct_field(messages, "content")
    if not (pa.types.is_string(content.type) or pa.types.is_large_string(content.type)):
        return None  # multimodal content parts
    parents = pc.list_parent_indices(values).to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.binary_length(content), 0).to_numpy(zero_copy_only=False)
    sizes = np.bincount(parents, weights=lengths, minlength=len(values)).astype(np.int64)
    counts = pc.fill_null(pc.list_value_length(values), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    return sizes, counts


def _rendered(prompt, tokenizer, **chat_template_kwargs) -> tuple[str, bool]:
    """(text, add_special_tokens) of one prompt as the model sees it: a conversation through the chat template (with
    the generation prompt), a string as it is."""
    if isinstance(prompt, list):
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, **chat_template_kwargs)
        return text, False
    return prompt, True


def prompt_token_count(prompt, tokenizer, **chat_template_kwargs) -> int:
    """Tokens of one prompt as the model sees it (see :func:`_rendered`)."""
    text, special = _rendered(prompt, tokenizer, **chat_template_kwargs)
    return len(tokenizer(text, add_special_tokens=special)["input_ids"])


def check_prompt_lengths(dataset, tokenizer, limit: int | None, name: str = "dataset", **chat_template_kwargs) -> None:
    """Raise a one-line ``ConfigError`` naming the first row whose prompt is at least ``limit`` tokens (the model's
    context: nothing would be left to generate, and the forward over it may run for hours) and its length. Rows whose
    UTF-8 size plus the template's allowance stays below ``limit`` are not tokenized; the others are, in batches,
    until the first one too long."""
    if not limit or tokenizer is None or not hasattr(tokenizer, "apply_chat_template"):
        return
    measured = _content_bytes(dataset)
    if measured is None:
        return
    sizes, counts = measured
    try:
        overhead = prompt_token_count([{"role": "user", "content": ""}], tokenizer, **chat_template_kwargs)
    except Exception:  # noqa: BLE001 - a tokenizer without a chat template: plain strings only
        overhead = 0
    bound = sizes + overhead + _TEMPLATE_TOKENS_PER_MESSAGE * counts
    candidates = np.flatnonzero(bound >= limit).tolist()
    for start in range(0, len(candidates), _BATCH):
        rows = candidates[start : start + _BATCH]
        rendered = [_rendered(dataset[row]["prompt"], tokenizer, **chat_template_kwargs) for row in rows]
        lengths = [0] * len(rows)
        for special in (False, True):
            picked = [i for i, (_, s) in enumerate(rendered) if s == special]
            if picked:
                ids = tokenizer([rendered[i][0] for i in picked], add_special_tokens=special)["input_ids"]
                for i, tokens in zip(picked, ids):
                    lengths[i] = len(tokens)
        for row, n in zip(rows, lengths):
            if n >= limit:
                raise ConfigError(
                    f"{name} row {row}: the prompt is {n} tokens, not shorter than the model's context of {limit} "
                    "tokens; nothing would be left to generate (TRL 1.16 does not truncate prompts): shorten or drop "
                    "such rows"
                )
