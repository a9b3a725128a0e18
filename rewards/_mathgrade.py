"""Math answer grading with math-verify under a hard time limit, safe in threads and subprocesses.

This file imports only the standard library and ``math_verify``: a child interpreter loads it by path (not
through the ``rewards`` package) to serve as the isolation worker.

Time limits. math-verify's own timeouts use ``signal.alarm`` (whole seconds, main thread only; elsewhere it
raises ``ValueError``). We call it with its timeouts off and enforce our own budget per graded item:

* main thread of any process: ``signal.setitimer`` (sub-second) around parse + verify, raising a
  ``BaseException`` subclass that math-verify's ``except Exception`` handlers cannot swallow;
* any other thread (TRL's async reward loop, a thread pool, a web server): the items go to one persistent child
  interpreter (``python`` running this file), which grades them in its main thread with the same timer. Its
  replies travel on a pipe of their own, one framed line per item, so whatever the child prints cannot be taken
  for a score. The caller waits for each item with a deadline and kills and restarts the child if it overruns
  (e.g. a C-level big-integer computation that a signal cannot interrupt): that item scores 0 and the rest are
  graded by the new child. A child that cannot start raises ``GradingWorkerError``. A forked process starts its
  own child.

Answers that run out of time score 0 and are counted (``stats["timed_out"]`` of ``grade_many``).

Parallel grading. In the main thread each answer first gets ``QUICK_S`` seconds in process, which grades every
ordinary answer (milliseconds); the few that overrun it (hostile answers such as ``10^{10^{10}}``, which use their
whole budget) are graded in parallel by up to ``MAX_PARALLEL`` child interpreters (one per CPU core), with the
rest of their budget, instead of one after another: 8 such answers took 16 s. Where no child can start, they are
graded in process, one after another, as before.
"""

from __future__ import annotations

import atexit
import collections
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
QUICK_S = 0.25  # main thread: each answer's first, in-process share of its budget; overruns are graded in parallel
MAX_PARALLEL = 8  # child interpreters grading overrunning answers at once (at most one per CPU core)
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


def _grade_in_process(items, budget_s: float, stats: dict | None = None, overran: list | None = None) -> list[float]:
    """Scores of ``items`` graded here, one after another; with ``overran`` given, the indices of the items that ran
    out of ``budget_s`` go there instead of being counted as timed out."""
    scores = []
    for index, (candidate, kind, gold) in enumerate(items):
        try:
            scores.append(run_with_deadline(grade, budget_s, candidate, kind, gold))
        except _Deadline:
            scores.append(0.0)
            if overran is not None:
                overran.append(index)
            else:
                _count(stats, "timed_out")
        except _NoSignals:
            raise
        except Exception:  # noqa: BLE001  (a reward never raises on a bad completion)
            scores.append(0.0)
    return scores


def _count(stats: dict | None, key: str, n: int = 1) -> None:
    if stats is not None:
        stats[key] = stats.get(key, 0) + n


class GradingWorkerError(RuntimeError):
    """The child interpreter that grades off the main thread could not start or kept dying."""


class _Worker:
    """One child interpreter that runs ``serve()`` from this file.

    Requests go to its stdin as JSON lines. Replies come back on a pipe of their own (an inherited file
    descriptor), one framed line per graded item, ``{"id": request, "i": item, "score": s}``, after a
    ``{"ready": pid}`` line once math-verify is imported. The child's stdout and stderr go to a drain that keeps
    their tail for error messages, so nothing the child or its imports print can be read as a reply.
    """

    def __init__(self):
        code = (
            "import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('_attncredit_mathgrade', {os.path.abspath(__file__)!r})\n"
            "mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod); mod.serve(int(sys.argv[1]))\n"
        )
        self.pid = os.getpid()
        self.requests = 0
        self.output: collections.deque = collections.deque(maxlen=20)  # last lines the child printed
        read_fd, write_fd = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, str(write_fd)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
                pass_fds=(write_fd,),
            )
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.replies: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, args=(os.fdopen(read_fd, "r"), self.replies), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.proc.stdout, self.output), daemon=True).start()

    @staticmethod
    def _read(stream, replies):
        try:
            for line in stream:
                try:
                    replies.put(json.loads(line))
                except ValueError:
                    continue
        finally:
            replies.put(None)

    @staticmethod
    def _drain(stream, output):
        for line in stream:
            output.append(line.rstrip())

    def describe(self) -> str:
        """The child's exit status and last printed line, for error messages."""
        code = self.proc.poll()
        status = "still running" if code is None else f"exit code {code}"
        time.sleep(0.1)  # let the drain thread catch the child's last lines
        last = " | ".join([line.strip() for line in self.output if line.strip()][-3:])
        return f"{status}; last output: {last[-400:]!r}" if last else f"{status}; no output"

    def wait_ready(self, timeout: float) -> bool:
        try:
            reply = self.replies.get(timeout=timeout)
        except queue.Empty:
            return False
        if reply is None:  # the reply pipe closed: the child is exiting
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        return isinstance(reply, dict) and "ready" in reply

    def grade(self, items, budget_s: float, stats: dict | None = None) -> tuple[list[float], int]:
        """(scores of a prefix of ``items``, index of the item that overran or crashed the child, or len(items)).

        Every item has ``budget_s`` plus 0.5 s; an item that takes longer (e.g. a C-level big-integer computation
        that the child's timer cannot interrupt) or kills the child ends the request, and the child is killed.
        """
        self.requests += 1
        request = self.requests
        scores: list[float] = []
        try:
            self.proc.stdin.write(json.dumps({"id": request, "items": items, "budget": budget_s}) + "\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            self.close()
            return scores, 0
        while len(scores) < len(items):
            try:
                reply = self.replies.get(timeout=budget_s + 0.5)
            except queue.Empty:
                reply = None
            if reply is None:
                self.close()
                return scores, len(scores)
            if reply.get("id") == request and reply.get("i") == len(scores):
                scores.append(float(reply["score"]))
                if reply.get("timed_out"):
                    _count(stats, "timed_out")
        return scores, len(items)

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


_pool: dict[int, _Worker] = {}  # the parallel graders, by slot
_pool_lock = threading.Lock()


def _forget_worker_after_fork():
    """A forked child starts its own workers (the parent's pipes are not its own) with fresh locks."""
    global _worker, _worker_lock, _pool, _pool_lock
    _worker, _worker_lock = None, threading.Lock()
    _pool, _pool_lock = {}, threading.Lock()


def _close_worker():
    for worker in [_worker, *_pool.values()]:
        if worker is not None and worker.alive():
            worker.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_worker_after_fork)
atexit.register(_close_worker)


def _start_worker() -> _Worker:
    """A ready worker, or ``GradingWorkerError`` naming why the child did not come up."""
    try:
        worker = _Worker()
    except OSError as exc:
        raise GradingWorkerError(f"math grading worker: cannot start a child {sys.executable}: {exc}") from None
    if not worker.wait_ready(_WORKER_START_S):
        failed = "exited before it was ready" if worker.proc.poll() is not None else f"was not ready within {_WORKER_START_S:.0f} s"
        reason = worker.describe()
        worker.close()
        raise GradingWorkerError(
            f"math grading worker: child {sys.executable} {failed} ({reason}); grading off the main thread needs it"
        )
    return worker


def _grade_isolated(items, budget_s: float, stats: dict | None = None) -> list[float]:
    """Grade in the worker; an item that overruns or crashes it scores 0 (counted as ``timed_out``), the worker
    restarts, and the remaining items are sent again. Raises ``GradingWorkerError`` when it cannot (re)start."""
    global _worker
    with _worker_lock:
        _worker, scores = _grade_with(_worker, items, budget_s, stats)
    return scores


def _grade_with(worker: _Worker | None, items, budget_s: float, stats: dict | None):
    """(the worker to keep, scores of ``items``) graded by ``worker``, (re)started as needed (see _grade_isolated)."""
    scores: list[float] = []
    while len(scores) < len(items):
        if worker is None or not worker.alive():
            worker = _start_worker()
        done, stop = worker.grade(items[len(scores):], budget_s, stats)
        scores.extend(done)
        if len(scores) < len(items) and stop == len(done):
            if not worker.alive():
                worker = None
            scores.append(0.0)  # the item that overran or crashed the worker
            _count(stats, "timed_out")
    return worker, scores


def _grade_parallel(items, budget_s: float, stats: dict | None = None) -> list[float]:
    """Grade ``items`` spread over up to ``MAX_PARALLEL`` workers (one per CPU core), each in a thread of its own.
    Raises ``GradingWorkerError`` when a worker cannot start."""
    slots = max(1, min(len(items), MAX_PARALLEL, os.cpu_count() or 1))
    if slots == 1:
        return _grade_isolated(items, budget_s, stats)
    parts = [[i for i in range(len(items)) if i % slots == slot] for slot in range(slots)]
    results: list = [None] * slots
    counts = [{} for _ in range(slots)]
    errors: list[BaseException] = []

    def run(slot: int) -> None:
        try:
            _pool[slot], results[slot] = _grade_with(_pool.get(slot), [items[i] for i in parts[slot]], budget_s, counts[slot])
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            _pool.pop(slot, None)
            errors.append(exc)

    with _pool_lock:
        threads = [threading.Thread(target=run, args=(slot,), daemon=True) for slot in range(slots)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    scores = [0.0] * len(items)
    for slot, indices in enumerate(parts):
        for i, score in zip(indices, results[slot]):
            scores[i] = score
    for count in counts:
        _count(stats, "timed_out", count.get("timed_out", 0))
    return scores


_warm = False


def _warm_up() -> None:
    """Import math-verify and let sympy build its lazy parts once, outside any deadline: a timer that fires inside an
    import leaves the module half-initialised (and the first grading takes longer than ``QUICK_S``)."""
    global _warm
    if not _warm:
        _warm = True
        try:
            grade("\\frac{1}{2}", "final", "0.5")
            grade("The answer is 2^{n-1}", "text", "2^(n-1)")
        except Exception:  # noqa: BLE001 - grading errors score 0 later anyway
            pass


def _grade_main_thread(items, budget_s: float, stats: dict | None = None) -> list[float]:
    """Every item first gets ``QUICK_S`` in process; those that overrun it are graded with the rest of their
    budget in parallel workers (in process, one after another, where a single one overran or no worker starts)."""
    _warm_up()
    if budget_s <= QUICK_S or len(items) == 1:
        return _grade_in_process(items, budget_s, stats)
    overran: list[int] = []
    scores = _grade_in_process(items, QUICK_S, stats, overran)
    if not overran:
        return scores
    slow = [items[i] for i in overran]
    rest = budget_s - QUICK_S
    if len(slow) > 1:
        try:
            regraded = _grade_parallel([list(map(str, item)) for item in slow], rest, stats)
        except GradingWorkerError:
            regraded = _grade_in_process(slow, rest, stats)
    else:
        regraded = _grade_in_process(slow, rest, stats)
    for i, score in zip(overran, regraded):
        scores[i] = score
    return scores


def grade_many(items: list[tuple[str, str, str]], budget_s: float = DEFAULT_BUDGET_S, stats: dict | None = None) -> list[float]:
    """Scores for ``(candidate, kind, gold)`` items, each limited to ``budget_s`` seconds.

    An item whose grading overruns its budget scores 0 and is counted in ``stats["timed_out"]`` (when a dict is
    given). Off the main thread, a grading worker that cannot start raises ``GradingWorkerError``.
    """
    if not items:
        return []
    if _signals_usable():
        try:
            return _grade_main_thread(items, budget_s, stats)
        except _NoSignals:
            pass
    return _grade_isolated([list(map(str, item)) for item in items], budget_s, stats)


def serve(reply_fd: int):  # pragma: no cover  (runs in the child interpreter)
    """Worker loop: one JSON request per stdin line; one framed JSON reply per item on ``reply_fd``.

    Anything else the child prints (its imports, math-verify warnings) goes to stdout/stderr, which the parent
    only drains.
    """
    replies = os.fdopen(reply_fd, "w", buffering=1)
    sys.stdout = sys.stderr  # a stray print in this process cannot reach the reply pipe anyway; keep it off stdout
    _mv()
    replies.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        try:
            request = json.loads(line)
            ident, items, budget = request["id"], request["items"], float(request["budget"])
        except (ValueError, KeyError, TypeError):
            continue
        for i, item in enumerate(items):
            stats: dict = {}
            try:
                score = _grade_in_process([item], budget, stats)[0]
            except Exception:  # noqa: BLE001
                score = 0.0
            replies.write(json.dumps({"id": ident, "i": i, "score": score, "timed_out": bool(stats)}) + "\n")
