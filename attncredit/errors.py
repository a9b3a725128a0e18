"""The one error type a user sees for bad input: a one-line message naming the bad value and what is allowed.

Entry points (the ``attncredit`` commands, ``recipes/*.py``, ``scripts/*.py``) print it as ``error: <message>`` and exit with
code 2, without a traceback.
"""


def first_line(error: BaseException) -> str:
    """The first non-empty line of ``error``'s message, stripped (messages of hub, dataset or worker failures can run
    over many lines), or the exception's type name when the message is empty: the text of a one-line error."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()
    return type(error).__name__


class ConfigError(ValueError):
    """Bad user input (config value, model or dataset name, dataset column, YAML file)."""


class NonFiniteTrainingError(RuntimeError):
    """A training step met a NaN or inf where it needs finite numbers (a reward, an attention statistic, the loss
    or the gradient norm); the message names the step and what was not finite."""


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written (e.g. a full disk); the message names the folder (removed), the reason and
    the checkpoint to resume from. Entry points print it as one ``error:`` line and exit with code 1."""
