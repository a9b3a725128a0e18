"""``format`` rewards: 1.0 when the completion follows the prompt template's answer format, else 0.0.

Binary on purpose (no partial credit): the accuracy rewards already give TinyZero's small format score where
it matters (Countdown), and a graded format term is easy to farm without reasoning.

* ``r1`` (``format_r1``): ``<think> reasoning </think>`` then ``<answer> final </answer>`` and nothing else:
  one of each tag, in that order, both non-empty, only whitespace between ``</think>`` and ``<answer>`` and
  after ``</answer>``. The opening ``<think>`` may be missing, since some chat templates put it in the prompt.
* ``boxed`` (``format_boxed``): a balanced, non-empty ``\\boxed{...}`` in the last ``TAIL_CHARS`` characters.
* ``format`` (auto): the style the row's prompt asks for (its text mentions ``<answer>`` -> r1, else
  ``\\boxed`` -> boxed); a prompt that mentions neither accepts either style.

``tag_count`` is the graded exception, a shaping reward for models too small to produce the full format at
first (the offline SmolLM2-135M demo): 0.25 for each of ``<think>``, ``</think>``, ``<answer>``, ``</answer>``
that occurs exactly once in the completion (with the ``r1`` template's prefill the prompt already opened
``<think>``, so 0.75 is the most a completion earns). It gives reward spread inside GRPO groups long before any
completion is correct.

Never raises; empty, ``None`` and malformed completions score 0; cost is linear in the completion length.
"""

from __future__ import annotations

from .errors import RewardConfigError

from .extract import completion_text, last_boxed, tail

STYLES = ("r1", "boxed")


def is_r1_format(text: str) -> bool:
    s = text.strip()
    if s.startswith("<think>"):
        s = s[len("<think>") :]
    if "<think>" in s or s.count("</think>") != 1 or s.count("<answer>") != 1 or s.count("</answer>") != 1:
        return False
    think_end = s.find("</think>")
    answer_start = s.find("<answer>")
    answer_end = s.find("</answer>")
    if not think_end < answer_start < answer_end:
        return False
    if not s[:think_end].strip() or not s[answer_start + len("<answer>") : answer_end].strip():
        return False
    between = s[think_end + len("</think>") : answer_start]
    after = s[answer_end + len("</answer>") :]
    return not between.strip() and not after.strip()


def is_boxed_format(text: str) -> bool:
    return bool(last_boxed(tail(text)))


_CHECKS = {"r1": is_r1_format, "boxed": is_boxed_format}


def prompt_style(prompt) -> str | None:
    """The answer style a prompt asks for: ``"r1"``, ``"boxed"`` or ``None`` (neither mentioned)."""
    if isinstance(prompt, str):
        text = prompt
    elif isinstance(prompt, (list, tuple)):
        text = "\n".join(m.get("content", "") for m in prompt if isinstance(m, dict) and isinstance(m.get("content"), str))
    else:
        return None
    if "<answer>" in text:
        return "r1"
    if "\\boxed" in text:
        return "boxed"
    return None


def make_format_reward(style: str | None = None, name: str | None = None):
    """A TRL reward ``fn(completions, **kwargs) -> list[float]`` for ``style`` ``"r1"``, ``"boxed"`` or ``None``
    (auto: read the style off each row's prompt, see the module docstring)."""
    if style is not None and style not in STYLES:
        raise RewardConfigError(f"unknown format style '{style}'; allowed: {', '.join(STYLES)} (or None for auto)")
    name = name or ("format" if style is None else f"format_{style}")

    def reward(completions, prompts=None, **kwargs) -> list[float]:
        scores = []
        for i, completion in enumerate(completions):
            text = completion_text(completion)
            if not text.strip():
                scores.append(0.0)
                continue
            row_style = style
            if row_style is None and prompts is not None and i < len(prompts):
                row_style = prompt_style(prompts[i])
            styles = (row_style,) if row_style else STYLES
            scores.append(1.0 if any(_CHECKS[s](text) for s in styles) else 0.0)
        return scores

    reward.__name__ = reward.__qualname__ = name
    reward.required_columns = ()
    return reward


format_reward = make_format_reward(None)
format_r1 = make_format_reward("r1")
format_boxed = make_format_reward("boxed")


R1_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def tag_count(completions, **kwargs) -> list[float]:
    """0.25 per R1 tag (``<think>``, ``</think>``, ``<answer>``, ``</answer>``) occurring exactly once."""
    scores = []
    for completion in completions:
        text = tail(completion_text(completion))
        scores.append(sum(0.25 for tag in R1_TAGS if text.count(tag) == 1))
    return scores


tag_count.required_columns = ()
