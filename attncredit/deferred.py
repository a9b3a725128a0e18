"""Input checks whose verdicts stay on the device until one read: validation without a host wait per check.

A check that looks at a tensor's values (NaN on a response token, a mask with two runs in a row) makes the host wait
for the GPU when its verdict is read with ``bool(...)``: every kernel queued so far must finish first, and the GPU
then idles while the host queues the next ones. :class:`DeferredChecks` keeps each verdict as a 0-dim bool tensor
and reads them all at once in :meth:`DeferredChecks.verify`, which the trainer calls where the step waits for the GPU
anyway (after TRL's loss and its logged metrics), before anything uses the checked values for an update.
"""

from __future__ import annotations

from typing import Callable

import torch


class DeferredChecks:
    """Device-side verdicts of input checks, read together by :meth:`verify`.

    ``add(failed, error)``: ``failed`` is a 0-dim (or one-element) bool tensor, True when the check failed;
    ``error()`` builds the exception to raise then (it runs only on failure, so it may read values freely, e.g.
    the first bad row). :meth:`verify` reads every pending verdict in one host sync and raises the error of the
    first failed check, in the order the checks were added; it clears the pending checks either way.
    """

    def __init__(self):
        self._pending: list[tuple[torch.Tensor, Callable[[], Exception]]] = []

    def add(self, failed: torch.Tensor, error: Callable[[], Exception]) -> None:
        self._pending.append((failed.reshape(()), error))

    def __len__(self) -> int:
        return len(self._pending)

    def clear(self) -> None:
        """Drop the pending checks unread (their step failed otherwise already)."""
        self._pending = []

    def verify(self) -> None:
        """Raise the first failed check's error (one host sync for all of them); nothing pending: no sync."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        device = pending[0][0].device
        flags = torch.stack([failed.to(device) for failed, _ in pending]).tolist()
        for (_, error), failed in zip(pending, flags):
            if failed:
                raise error()


__all__ = ["DeferredChecks"]
