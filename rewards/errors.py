"""Errors of the ``rewards`` package, which depends on nothing but the standard library and math-verify.

``RewardConfigError`` is a ``ValueError`` with a one-line message naming the bad value and what is allowed
(an unknown reward name, a bad option, a missing dataset column): entry points that print ``error: <message>``
for ``ValueError`` treat it like their own configuration errors. ``GradingWorkerError`` (a ``RuntimeError``)
says that the child interpreter grading ``math_accuracy`` off the main thread could not start.
"""

from ._mathgrade import GradingWorkerError


class RewardConfigError(ValueError):
    """Bad reward input: unknown reward name, invalid option, dataset column the reward needs is missing."""


__all__ = ["RewardConfigError", "GradingWorkerError"]
