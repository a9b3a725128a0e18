"""Countdown puzzles in the TinyZero style (the paper's Countdown task): reach ``target`` with + - * / using each number once.

Every puzzle is solvable by construction: the generator draws the numbers (default 4 numbers in 1..99), folds
them into one random expression tree (random pairs, random operators) with exact ``Fraction`` arithmetic, and
keeps the puzzle only when the value is an integer in ``[min_target, max_target]`` (default 1..100, as in
TinyZero's ``Countdown-Tasks-3to4``). The expression it built is stored as the reference solution.

Splits are deterministic and disjoint: the test set comes from its own random stream (seeded by ``seed``
alone, so it does not change with ``num_train``), and the train stream skips every puzzle whose
(sorted numbers, target) also appears in the test set. Within a split no puzzle repeats.

``solve_countdown`` is an exhaustive solver (used by the tests to prove solvability, and handy for analysis).
"""

from __future__ import annotations

import random
from fractions import Fraction

_OPS = ("+", "-", "*", "/")


def _random_expression(numbers: list[int], rng: random.Random) -> tuple[int, int, object]:
    """Fold ``numbers`` into one random expression that uses each exactly once.

    Returns (numerator, denominator > 0, expression tree of nested ``(left, op, right)``). Exact rational arithmetic on integer pairs (the same as
    ``Fraction`` without its per-operation overhead; the generator evaluates ~20 trees per kept puzzle).
    """
    random_ = rng.random
    items = [(n, 1, n) for n in numbers]  # (numerator, denominator, expression tree)
    while len(items) > 1:
        k = len(items)
        i = int(random_() * k)
        j = int(random_() * (k - 1))
        j += j >= i
        (p1, q1, e1), (p2, q2, e2) = items[i], items[j]
        op = _OPS[int(random_() * 4)]
        if op == "/" and p2 == 0:  # division by zero: multiply instead
            op = "*"
        if op == "+":
            p, q = p1 * q2 + p2 * q1, q1 * q2
        elif op == "-":
            p, q = p1 * q2 - p2 * q1, q1 * q2
        elif op == "*":
            p, q = p1 * p2, q1 * q2
        else:
            p, q = p1 * q2, q1 * p2
            if q < 0:
                p, q = -p, -q
        items = [items[m] for m in range(k) if m != i and m != j]
        items.append((p, q, (e1, op, e2)))
    return items[0]


def _render(tree, top: bool = True) -> str:
    if isinstance(tree, int):
        return str(tree)
    left, op, right = tree
    text = f"{_render(left, False)} {op} {_render(right, False)}"
    return text if top else f"({text})"


def puzzle_key(numbers, target) -> tuple:
    """Identity of a puzzle for de-duplication and train/test disjointness: (sorted numbers, target)."""
    return (tuple(sorted(int(n) for n in numbers)), int(target))


def generate_countdown(
    n: int,
    *,
    seed: int | str = 0,
    num_numbers: int = 4,
    min_number: int = 1,
    max_number: int = 99,
    min_target: int = 1,
    max_target: int = 100,
    exclude: set | frozenset = frozenset(),
) -> list[dict]:
    """``n`` distinct solvable puzzles, each ``{"numbers": [...], "target": int, "solution": str}``.

    Deterministic in ``seed`` (Python's ``random.Random``; string seeds hash stably). Puzzles whose
    ``puzzle_key`` is in ``exclude`` are skipped.
    """
    rng = random.Random(seed)
    seen = set(exclude)
    out: list[dict] = []
    misses = 0  # draws since the last new puzzle
    while len(out) < n:
        misses += 1
        if misses > 20_000:  # only with ranges that admit (almost) no more distinct puzzles
            raise ValueError(
                f"could generate only {len(out)} of {n} distinct Countdown puzzles with numbers "
                f"{min_number}..{max_number} and targets {min_target}..{max_target}"
            )
        numbers = [rng.randint(min_number, max_number) for _ in range(num_numbers)]
        for _ in range(8):  # a few expression trees per draw of numbers
            p, q, tree = _random_expression(numbers, rng)
            if p % q == 0 and min_target <= p // q <= max_target:
                key = puzzle_key(numbers, p // q)
                if key not in seen:
                    seen.add(key)
                    out.append({"numbers": numbers, "target": p // q, "solution": _render(tree)})
                    misses = 0
                break
    return out


def countdown_split(split: str, n: int, *, seed: int = 0, num_test: int = 512, **ranges) -> list[dict]:
    """The first ``n`` puzzles of split ``"train"`` or ``"test"``.

    Test comes from stream ``"countdown-test-<seed>"``; train from ``"countdown-train-<seed>"`` minus every puzzle
    of the ``num_test``-puzzle test split. So the test split never depends on the train size, and any ``n`` gives
    a prefix of the same sequence. ``ranges`` go to ``generate_countdown``.
    """
    if split == "test":
        return generate_countdown(n, seed=f"countdown-test-{seed}", **ranges)
    test = generate_countdown(num_test, seed=f"countdown-test-{seed}", **ranges)
    exclude = {puzzle_key(p["numbers"], p["target"]) for p in test}
    return generate_countdown(n, seed=f"countdown-train-{seed}", exclude=exclude, **ranges)


def countdown_splits(
    num_train: int = 20_000, num_test: int = 512, *, seed: int = 0, **ranges
) -> tuple[list[dict], list[dict]]:
    """(train, test) puzzle lists, as ``countdown_split`` builds them."""
    test = countdown_split("test", num_test, seed=seed, **ranges)
    return countdown_split("train", num_train, seed=seed, num_test=num_test, **ranges), test


def solve_countdown(numbers, target) -> str | None:
    """An expression that uses every number exactly once and equals ``target`` exactly, or ``None``.

    Exhaustive search over pairs and the six orderings of + - * / with ``Fraction`` arithmetic; states already
    proven dead are memoised on the sorted multiset of values. Instant for 3-4 numbers, seconds for 6.
    """
    goal = Fraction(target)
    dead: set[tuple] = set()

    def search(items: list[tuple[Fraction, str]]) -> str | None:
        if len(items) == 1:
            return items[0][1] if items[0][0] == goal else None
        key = tuple(sorted(v for v, _ in items))
        if key in dead:
            return None
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                (a, ea), (b, eb) = items[i], items[j]
                rest = [items[k] for k in range(len(items)) if k != i and k != j]
                candidates = [(a + b, f"({ea} + {eb})"), (a * b, f"({ea} * {eb})"),
                              (a - b, f"({ea} - {eb})"), (b - a, f"({eb} - {ea})")]
                if b != 0:
                    candidates.append((a / b, f"({ea} / {eb})"))
                if a != 0:
                    candidates.append((b / a, f"({eb} / {ea})"))
                for value, text in candidates:
                    found = search(rest + [(value, text)])
                    if found is not None:
                        return found
        dead.add(key)
        return None

    found = search([(Fraction(n), str(n)) for n in numbers])
    if found is not None and len(numbers) > 1:
        found = found[1:-1]
    return found
