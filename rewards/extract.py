"""Shared, bounded text helpers for the reward functions: completion text, ``<answer>`` tags, ``\\boxed{}``.

Everything here is linear-time string scanning (no backtracking regexes over the whole completion) and looks
only at the last ``TAIL_CHARS`` characters, so a 1 MB completion costs the same as a 16 KB one.
"""

from __future__ import annotations


TAIL_CHARS = 16_384  # accuracy rewards read only this many trailing characters (~4k tokens)
MAX_ANSWER_CHARS = 512  # a longer extracted final answer scores 0 (bounds the math-verify / parser work)



def completion_text(completion) -> str:
    """The assistant text of one TRL completion: a plain string, or a conversational list of messages.

    Conversational completions join the ``content`` of their assistant messages (a tool-calling rollout can
    have several); content given as parts (``[{"type": "text", "text": ...}]``) is flattened. Anything else
    (``None``, numbers, malformed dicts) gives ``""``.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if not isinstance(completion, (list, tuple)):
        return ""
    pieces = []
    for message in completion:
        if not isinstance(message, dict) or message.get("role", "assistant") != "assistant":
            continue
        content = message.get("content")
        if isinstance(content, str):
            pieces.append(content)
        elif isinstance(content, (list, tuple)):
            pieces.extend(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "\n".join(pieces)


def tail(text: str, n: int = TAIL_CHARS) -> str:
    return text[-n:] if len(text) > n else text


def last_answer_tag(text: str) -> str | None:
    """Content of the last complete ``<answer>...</answer>``, stripped; ``None`` when there is none."""
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    if start < 0:
        return None
    return text[start + len("<answer>") : end].strip()


def last_boxed(text: str) -> str | None:
    """Content of the last balanced ``\\boxed{...}`` (or ``\\fbox{...}``), stripped; ``None`` when none closes.

    Linear time: when the group opened at position ``i`` never closes, no earlier group can close after ``i``
    either, so earlier scans stop there.
    """
    for command in ("\\boxed", "\\fbox"):
        pos = end = len(text)
        while True:
            pos = text.rfind(command, 0, pos)
            if pos < 0:
                break
            content = _braced(text, pos + len(command), end)
            if content is not None:
                return content.strip()
            end = pos
    return None


def _braced(text: str, i: int, end: int) -> str | None:
    """The brace-balanced group opening at ``text[i]`` (after optional spaces) and closing before ``end``."""
    while i < end and text[i] == " ":
        i += 1
    if i >= end or text[i] != "{":
        return None
    depth = 0
    for j in range(i, end):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None
