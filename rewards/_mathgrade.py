"""Math answer grading with math-verify under a hard time limit, safe in threads and subprocesses.

This file imports only the standard library and ``math_verify``: a child interpreter loads it by path (not
through the ``rewards`` package) to serve as the isolation worker.

Time limits. math-verify's own timeouts use ``signal.alarm`` (whole seconds, main thread only; elsewhere it
raises ``ValueError``). We call it with its timeouts off and enforce our own budget per graded item:

* main thread of any process: ``signal.setitimer`` (sub-second) around parse + verify, raising a
  ``BaseException`` subclass that math-verify's ``except Exception`` handlers cannot swallow;
* any other thread (TRL's async reward loop, a thread pool, a web server): the items go to one persistent child
  interpreter (``python`` running this file), which grades them in its main thread with the same timer. The
  caller also waits with a deadline and kills and restarts the child if it overruns (e.g. a C-level big-integer
  computation that a signal cannot interrupt); the unfinished items score 0. A forked process starts its own
  child.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

DEFAULT_BUDGET_S = 2.0  # per graded completion: parse + verify
_WORKER_START_S = 60.0  # extra wait for the child's first answer (it imports sympy / math-verify)

_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUMBER_WITH_UNITS = re.compile(r"\\?\$?\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*((?:[A-Za-z]{2,}\.?\s*){1,3})")
_NOT_UNITS = {"pi", "sqrt", "log", "ln", "sin", "cos", "tan", "cdot", "times", "and", "or"}
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox|operatorname)\s*\{([^{}]*)\}")
_TEXT_ANSWER = re.compile(r"[A-Za-z][A-Za-z ,.;'’()-]*")
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_MATH_WORDS = {
    "and", "sqrt", "floor", "ceil", "sum", "prod", "sin", "cos", "tan", "cot", "sec", "csc", "log", "exp",
    "lim", "max", "min", "gcd", "lcm", "mod", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "det",
}


class _Deadline(BaseException):
    """Raised from SIGALRM; a BaseException so library ``except Exception`` blocks let it through."""


class _NoSignals(Exception):
    """This thread cannot install a SIGALRM handler after all (e.g. a sub-interpreter): use the worker."""


# ----------------------------------------------------------------------------------------------------------
# Normalisation


def _strip_dollars(s: str) -> str:
    s = s.strip()
    while len(s) >= 2 and s[0] == "$" and s[-1] == "$":
        s = s[1:-1].strip()
    return s


def _strip_units(s: str) -> str:
    """``72 clips`` -> ``72``, ``$18.00`` -> ``18.00``, ``98 values`` -> ``98``; other text unchanged.

    Only a plain number followed by one to three words of two or more letters (not ``pi``, ``sqrt``, ...).
    """
    m = _NUMBER_WITH_UNITS.fullmatch(s.strip().rstrip("."))
    if m and not ({w.strip(". ").lower() for w in m.group(2).split()} & _NOT_UNITS):
        return m.group(1)
    return s


def clean_answer(s: str) -> str:
    """Normalise a gold or predicted final-answer string before parsing.

    Takes the text after GSM8K's ``####``, strips ``$...$`` delimiters, thousands separators of a plain number
    (``1,000`` -> ``1000``) and trailing unit words (``72 clips`` -> ``72``).
    """
    s = str(s).strip()
    if "####" in s:
        s = s.rsplit("####", 1)[1].strip()
    s = _strip_dollars(s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = _strip_units(s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s.strip()


def normalize_text(s: str) -> str:
    """Case- and space-insensitive form for exact textual comparison (``\\text{No}`` == ``no.``)."""
    s = _TEXT_WRAPPER.sub(r"\1", s)
    s = s.replace("$", "").replace("\\,", " ").replace("\\ ", " ").replace("\\!", "")
    s = " ".join(s.lower().split())
    return s.rstrip(". ")


def is_text_answer(gold: str) -> bool:
    """A worded gold answer, compared as text only, never as a product of math symbols.

    Either only words (``No``, ``No integer solutions``), or at least two English words of three or more
    letters around the math (``At least 1 number``, ``x(n)>y(n-1) for all n≥2``). Math names (``sqrt``,
    ``floor``, ...), LaTeX commands and the joiners ``and``/``or`` do not count as words.
    """
    s = _TEXT_WRAPPER.sub(r"\1", gold).strip()
    words = [w for w in _WORD.findall(s) if w.lower() not in _MATH_WORDS]
    if _TEXT_ANSWER.fullmatch(s):
        return s.lower().rstrip(".") in {"no", "yes"} or len(words) >= 1
    return len(words) >= 2


# ----------------------------------------------------------------------------------------------------------
# Grading (no time limit here: callers wrap it)


def _mv():
    import math_verify  # imported lazily: ~0.3 s, and not needed by the Countdown reward

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_SilenceTimeoutWarnings())
    return math_verify


class _SilenceTimeoutWarnings(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:  # we disable math-verify's timeouts on purpose
        return "Timeout is disabled" not in record.getMessage()


@functools.lru_cache(maxsize=8192)
def _gold_forms(gold: str):
    """(normalised text, parsed math-verify objects or None for a worded answer)."""
    cleaned = clean_answer(gold)
    if not cleaned:
        return "", None
    if is_text_answer(cleaned):
        return normalize_text(cleaned), None
    mv = _mv()
    parsed = mv.parse("\\boxed{" + cleaned + "}", parsing_timeout=None) or mv.parse(cleaned, parsing_timeout=None)
    return normalize_text(cleaned), (parsed or None)


def grade(candidate: str, kind: str, gold: str) -> float:
    """1.0 when ``candidate`` states the same answer as ``gold``, else 0.0.

    ``kind`` says where the candidate came from: ``"final"`` (the content of a ``\\boxed{}`` or an
    ``<answer>`` tag: parsed as the answer itself, then as text) or ``"text"`` (the end of a completion with
    neither: math-verify's own extraction, which prefers "the answer is ..." and LaTeX, then the last number).
    """
    if not candidate or gold is None:
        return 0.0
    gold_text, gold_parsed = _gold_forms(str(gold))
    if not gold_text:
        return 0.0
    if kind == "final":
        cleaned = clean_answer(candidate)
        if normalize_text(cleaned) == gold_text:
            return 1.0
        if gold_parsed is None:
            return 0.0
        mv = _mv()
        attempts = [lambda: mv.parse("\\boxed{" + cleaned + "}", parsing_timeout=None),
                    lambda: mv.parse(candidate, parsing_timeout=None)]
    else:
        if gold_parsed is None:
            return 0.0
        mv = _mv()
        attempts = [lambda: mv.parse(candidate, parsing_timeout=None)]
    for attempt in attempts:
        parsed = attempt()
        if parsed and mv.verify(gold_parsed, parsed, timeout_seconds=None):
            return 1.0
    return 0.0


# ----------------------------------------------------------------------------------------------------------
# Time limits


def _signals_usable() -> bool:
    return (
        hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )


def run_with_deadline(fn, seconds: float, *args):
    """``fn(*args)`` in the main thread, interrupted by ``_Deadline`` after ``seconds``.

    A timer that was already running (another library's alarm) is restored with its remaining time.
    """
    state = {"armed": True}

    def handler(signum, frame):
        if state["armed"]:
            signal.setitimer(signal.ITIMER_REAL, 0.05)  # fire again should something swallow the exception
            raise _Deadline

    try:
        old_handler = signal.signal(signal.SIGALRM, handler)
    except (ValueError, OSError) as exc:
        raise _NoSignals(str(exc)) from None
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        return fn(*args)
    finally:
        while True:  # the handler may fire inside this block; retry until disarmed
            try:
                state["armed"] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old_handler)
                if old_delay > 0:
                    left = max(old_delay - (time.monotonic() - start), 1e-3)
                    signal.setitimer(signal.ITIMER_REAL, left, old_interval)
                break
            except _Deadline:
                continue


def _grade_in_process(items, budget_s: float) -> list[float]:
    scores = []
    for candidate, kind, gold in items:
        try:
            scores.append(run_with_deadline(grade, budget_s, candidate, kind, gold))
        except _Deadline:
            scores.append(0.0)
        except _NoSignals:
            raise
        except Exception:  # noqa: BLE001  (a reward never raises on a bad completion)
            scores.append(0.0)
    return scores


class _Worker:
    """One child interpreter that runs ``serve()`` from this file; requests and replies are JSON lines."""

    def __init__(self):
        code = (
            "import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('_attncredit_mathgrade', {os.path.abspath(__file__)!r})\n"
            "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); mod.serve()\n"
        )
        self.pid = os.getpid()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.replies: queue.Queue = queue.Queue()
        self.fresh = True
        threading.Thread(target=self._read, args=(self.proc.stdout, self.replies), daemon=True).start()

    @staticmethod
    def _read(stream, replies):
        try:
            for line in stream:
                replies.put(line)
        finally:
            replies.put(None)

    def grade(self, items, budget_s: float) -> list[float] | None:
        """Scores, or ``None`` when the child died or overran (it is then killed)."""
        wait = len(items) * (budget_s + 0.5) + 5.0 + (_WORKER_START_S if self.fresh else 0.0)
        try:
            self.proc.stdin.write(json.dumps({"items": items, "budget": budget_s}) + "\n")
            self.proc.stdin.flush()
            line = self.replies.get(timeout=wait)
            scores = json.loads(line) if line else None
        except (OSError, ValueError, queue.Empty, TypeError):
            scores = None
        self.fresh = False
        if not isinstance(scores, list) or len(scores) != len(items):
            self.close()
            return None
        return [float(s) for s in scores]

    def alive(self) -> bool:
        return self.proc.poll() is None and self.pid == os.getpid()

    def close(self):
        try:
            self.proc.kill()
            self.proc.wait(timeout=5)
        except Exception:  # noqa: BLE001
            pass


_worker: _Worker | None = None
_worker_lock = threading.Lock()


def _forget_worker_after_fork():
    """A forked child starts its own worker (the parent's pipes are not its own) with a fresh lock."""
    global _worker, _worker_lock
    _worker, _worker_lock = None, threading.Lock()


def _close_worker():
    if _worker is not None and _worker.alive():
        _worker.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker_after_fork)
atexit.register(_close_worker)


def _grade_isolated(items, budget_s: float) -> list[float]:
    global _worker
    with _worker_lock:
        if _worker is None or not _worker.alive():
            try:
                _worker = _Worker()
            except OSError:
                return [0.0] * len(items)
        scores = _worker.grade(items, budget_s)
        if scores is None:
            _worker = None
            return [0.0] * len(items)
        return scores


def grade_many(items: list[tuple[str, str, str]], budget_s: float = DEFAULT_BUDGET_S) -> list[float]:
    """Scores for ``(candidate, kind, gold)`` items, each limited to ``budget_s`` seconds. Never raises."""
    if not items:
        return []
    if _signals_usable():
        try:
            return _grade_in_process(items, budget_s)
        except _NoSignals:
            pass
    return _grade_isolated([list(map(str, item)) for item in items], budget_s)


def serve():  # pragma: no cover  (runs in the child interpreter)
    """Worker loop: one JSON request per stdin line, one JSON list of scores per stdout line."""
    for line in sys.stdin:
        try:
            request = json.loads(line)
            scores = _grade_in_process(request["items"], float(request["budget"]))
        except Exception:  # noqa: BLE001
            scores = None
        sys.stdout.write(json.dumps(scores) + "\n")
        sys.stdout.flush()
