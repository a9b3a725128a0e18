"""The responses the analysis reads: sampled through the evaluation generator, packed into [B, N] batches.

Prompts become token ids and responses end exactly as in training: :func:`sample_responses` generates with an
``attncredit.evaluation.generate`` generator, whose ``render`` is ``attncredit.data.templates.render_prompt_ids``
(the trainer's prompt ids, an assistant prefill left open) and whose end tokens are
``attncredit.evaluation.generate.end_token_ids`` (TRL's rule). A response keeps its end token, as a completion
does in training (the token is part of the completion mask), and a response without one hit the length cap.

:func:`pack_batch` lays prompt + response pairs out as the recorded forward wants them: prompts left padded to a
common width ``P``, responses right padded after column ``P``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class SampledResponses:
    """Per prompt: its token ids, the response's ids (end token included) and whether the response hit the cap.

    ``end_ids``: the end tokens generation stopped at; ``pad_id``: the id that pads batches."""

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    truncated: list[bool]
    end_ids: list[int]
    pad_id: int


def sample_responses(generator, prompts: Sequence, sampling, progress=None) -> SampledResponses:
    """One response per prompt from ``generator`` (an ``attncredit.evaluation.generate.Generator``) with
    ``sampling`` (a ``SamplingSettings`` with ``n == 1``); ``progress``: a tqdm-like bar advanced per response."""
    if sampling.n != 1:
        raise ValueError(f"the analysis reads one response per prompt, got {sampling.n} samples per prompt")
    prompt_ids = generator.render(prompts)
    samples = generator.generate(prompt_ids, sampling, progress=progress)
    return SampledResponses(
        prompt_ids=prompt_ids,
        response_ids=[list(group[0].token_ids) for group in samples],
        truncated=[group[0].finish_reason == "length" for group in samples],
        end_ids=list(generator.end_ids),
        pad_id=generator.pad_id,
    )


def pack_batch(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int):
    """``(input_ids, attention_mask, response_mask)``, each [B, P + R] on the CPU.

    Row i holds prompt i right-aligned in the first ``P = max len(prompt)`` columns and response i from column
    ``P`` on; ``R`` is the longest response. Padding has ``pad_id``, attention False and response False.
    """
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts for {len(response_ids)} responses")
    width = max(len(p) for p in prompt_ids)
    keep = max(len(r) for r in response_ids)
    b = len(prompt_ids)
    input_ids = torch.full((b, width + keep), pad_id, dtype=torch.long)
    attention = torch.zeros((b, width + keep), dtype=torch.bool)
    response = torch.zeros((b, width + keep), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        input_ids[i, width - len(p) : width] = torch.tensor(p, dtype=torch.long)
        input_ids[i, width : width + len(r)] = torch.tensor(r, dtype=torch.long)
        attention[i, width - len(p) : width + len(r)] = True
        response[i, width : width + len(r)] = True
    return input_ids, attention, response
