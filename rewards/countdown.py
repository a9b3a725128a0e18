"""``countdown``: TinyZero's rule reward for Countdown (the paper's Countdown task; it names no reward, so this is the TinyZero rule it builds on), with a safe exact evaluator.

Score of one completion, given the row's ``numbers`` and ``target``:

* **1.0**: the equation uses every given number exactly once (as a multiset: a number given twice must be
  used twice), only ``+ - * /``, parentheses and unary minus, and equals ``target`` exactly (``Fraction``
  arithmetic, no floating point);
* **format_score** (default 0.1, TinyZero's): the equation sits in an ``<answer>`` tag (or ``\\boxed{}``) and is
  well formed, but uses the wrong numbers or misses the target;
* **0.0**: anything else, including no equation, other characters (``**``, ``//``, ``^``, ``x``, ``×``,
  letters, decimals), a division by zero, and an unfinished ``<answer>`` tag.

Where the equation is read from (last ``TAIL_CHARS`` of the completion): the last ``<answer>...</answer>``,
else the last ``\\boxed{}``, else the last non-empty line (correct there still earns 1.0, never the format
score). ``expr = N`` and ``N = expr`` are accepted when true: ``expr`` must hit the target, and a false ``N``
(``1+2+3 = 7`` for target 6) makes the answer wrong (format score in a tag, 0.0 on the last line).

The evaluator is a recursive-descent parser over integer tokens, never ``eval``; input is capped at
``MAX_EQUATION_CHARS`` characters and ``MAX_DEPTH`` nested parentheses.
"""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

from .errors import RewardConfigError

from .extract import completion_text, last_answer_tag, last_boxed, tail

MAX_EQUATION_CHARS = 256
MAX_DEPTH = 32
MAX_DIGITS = 12

_TOKEN = re.compile(r"\s*(?:([0-9]+)|(.))", re.DOTALL)
_CANDIDATE_RUN = re.compile(r"[0-9 \t+\-*/()=]+")


class InvalidEquation(ValueError):
    """Not an arithmetic expression of integers, + - * / and parentheses."""


def _tokenize(text: str) -> list[str]:
    tokens = []
    for number, other in _TOKEN.findall(text):
        if number:
            if len(number) > MAX_DIGITS:
                raise InvalidEquation("number too long")
            tokens.append(number)
        elif other.isspace() or other == "":
            continue
        elif other in "+-*/()":
            tokens.append(other)
        else:
            raise InvalidEquation(f"character {other!r} not allowed")
    return tokens


class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ;
    unary := '-' unary | '(' expr ')' | INT"""

    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.depth, self.numbers = tokens, 0, 0, []

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self):
        token = self.peek()
        self.pos += 1
        return token

    def parse(self):
        """(value or None on division by zero, numbers used)."""
        value = self.expr()
        if self.peek() is not None:
            raise InvalidEquation(f"unexpected {self.peek()!r}")
        return value, self.numbers

    # Values are Fractions, or None after a division by zero (the parse still checks the syntax).
    def expr(self):
        value = self.term()
        while self.peek() in ("+", "-"):
            op, right = self.take(), self.term()
            value = None if value is None or right is None else (value + right if op == "+" else value - right)
        return value

    def term(self):
        value = self.unary()
        while self.peek() in ("*", "/"):
            op, right = self.take(), self.unary()
            if value is None or right is None:
                value = None
            elif op == "*":
                value = value * right
            else:
                value = None if right == 0 else value / right
        return value

    def unary(self):
        token = self.take()
        if token == "-":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise InvalidEquation("nested too deeply")
            value = self.unary()
            self.depth -= 1
            return None if value is None else -value
        if token == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise InvalidEquation("nested too deeply")
            value = self.expr()
            if self.take() != ")":
                raise InvalidEquation("unbalanced parentheses")
            self.depth -= 1
            return value
        if token is not None and token[0] in "0123456789":
            self.numbers.append(int(token))
            return Fraction(int(token))
        raise InvalidEquation(f"unexpected {token!r}")


def evaluate_equation(equation: str) -> tuple[Fraction | None, list[int]]:
    """(exact value, integers used in order) of an arithmetic expression, optionally ``expr = N`` / ``N = expr``.

    The value is ``None`` after a division by zero. Raises ``InvalidEquation`` for anything that is not such an
    expression. The stated ``N`` is not checked here: :func:`equation_claim` returns it.
    """
    return _evaluate(equation)[:2]


def equation_claim(equation: str) -> Fraction | None:
    """The ``N`` of ``expr = N`` / ``N = expr`` (None without one); raises ``InvalidEquation`` as
    :func:`evaluate_equation`."""
    return _evaluate(equation)[2]


def _evaluate(equation: str) -> tuple[Fraction | None, list[int], Fraction | None]:
    if not isinstance(equation, str):
        raise InvalidEquation("not a string")
    equation = equation.strip().rstrip(".").strip()
    if not equation or len(equation) > MAX_EQUATION_CHARS:
        raise InvalidEquation("empty or too long")
    sides = equation.split("=")
    claim = None
    if len(sides) == 2:
        left, right = (s.strip() for s in sides)
        if re.fullmatch(r"-?[0-9]+", right):
            equation, claim = left, right
        elif re.fullmatch(r"-?[0-9]+", left):
            equation, claim = right, left
        else:
            raise InvalidEquation("both sides of '=' are expressions")
    elif len(sides) > 2:
        raise InvalidEquation("more than one '='")
    tokens = _tokenize(equation)
    if not tokens:
        raise InvalidEquation("empty")
    value, used = _Parser(tokens).parse()
    if claim is not None and len(claim.lstrip("-")) > MAX_DIGITS:
        raise InvalidEquation("number too long")
    return value, used, None if claim is None else Fraction(int(claim))


def score_equation(equation: str, numbers, target, format_score: float = 0.1) -> float:
    """The Countdown score of one equation string (see the module docstring); never raises."""
    try:
        value, used, claim = _evaluate(equation)
    except (InvalidEquation, RecursionError, ValueError, TypeError, OverflowError):
        return 0.0
    if value is None:  # division by zero
        return 0.0
    if claim is not None and claim != value:  # a false equation (1+2+3 = 7) is a wrong answer, whatever expr hits
        return format_score
    try:
        given = Counter(int(n) for n in numbers)
        goal = Fraction(int(target))
    except (TypeError, ValueError):
        return 0.0
    if Counter(used) == given and value == goal:
        return 1.0
    return format_score


def _last_line_equation(text: str) -> str | None:
    """The longest arithmetic-looking run on the last non-empty line (e.g. ``So 2*(3+4) = 14.``)."""
    for line in reversed(text.splitlines()):
        if line.strip():
            runs = [r.strip() for r in _CANDIDATE_RUN.findall(line[-4 * MAX_EQUATION_CHARS :])]
            runs = [r for r in runs if any(op in r for op in "+-*/") and any(c.isdigit() for c in r)]
            return max(runs, key=len) if runs else None
    return None


def make_countdown_reward(format_score: float = 0.1, name: str = "countdown"):
    """A TRL reward ``fn(completions, numbers, target, **kwargs) -> list[float]`` (TinyZero: 1.0 / format / 0)."""
    try:
        format_score = float(format_score)
    except (TypeError, ValueError):
        raise RewardConfigError(f"countdown format_score must be a number in [0, 1), got {format_score!r}") from None
    if not 0.0 <= format_score < 1.0:
        raise RewardConfigError(f"countdown format_score must be a number in [0, 1), got {format_score!r}")

    def reward(completions, numbers=None, target=None, **kwargs) -> list[float]:
        if numbers is None or target is None:
            missing = [c for c, v in (("numbers", numbers), ("target", target)) if v is None]
            raise RewardConfigError(
                f"reward '{name}' needs the dataset columns 'numbers' (list of ints) and 'target' (int); "
                f"missing: {', '.join(missing)}"
            )
        scores = []
        for completion, nums, goal in zip(completions, numbers, target):
            text = tail(completion_text(completion))
            container = last_answer_tag(text)
            if container is None:
                container = last_boxed(text)
            if container is not None:
                scores.append(score_equation(container, nums, goal, format_score))
                continue
            if "<answer>" in text:  # an unfinished answer tag (truncated rollout) earns nothing
                scores.append(0.0)
                continue
            equation = _last_line_equation(text)
            scores.append(1.0 if equation and score_equation(equation, nums, goal, 0.0) == 1.0 else 0.0)
        scores += [0.0] * (len(completions) - len(scores))
        return scores

    reward.__name__ = reward.__qualname__ = name
    reward.required_columns = ("numbers", "target")
    return reward


countdown = make_countdown_reward()
