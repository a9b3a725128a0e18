"""User data files (``.jsonl``, ``.json``, ``.parquet``) as datasets, with one-line errors for what goes wrong."""

from __future__ import annotations

from pathlib import Path

from attncredit.errors import ConfigError, first_line

DATA_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


def load_data_file(path: str, limit: int | None = None):
    """A ``datasets.Dataset`` of the rows of a local data file (its first ``limit`` rows when given).

    Raises ``ConfigError`` for a missing, unreadable (permissions, malformed JSON / Parquet) or empty file.
    """
    import datasets

    file = Path(path)
    if file.suffix not in DATA_FILE_SUFFIXES:
        raise ConfigError(f"dataset file {path!r} has an unknown type; allowed: {', '.join(DATA_FILE_SUFFIXES)}")
    if not file.is_file():
        raise ConfigError(f"dataset file {path!r} does not exist")
    try:
        with open(file, "rb") as f:
            empty = not f.read(1)
    except OSError as exc:
        raise ConfigError(f"dataset file {path!r} cannot be read ({exc.strerror})") from None
    if empty:
        raise ConfigError(f"dataset file {path!r} is empty; expected rows with a 'prompt' column")
    kind = "parquet" if file.suffix == ".parquet" else "json"
    try:
        data = datasets.load_dataset(kind, data_files=str(file), split="train")
    except Exception as exc:  # noqa: BLE001  (datasets raises many types, often with the cause chained)
        cause = exc
        while cause.__cause__ is not None:
            cause = cause.__cause__
        raise ConfigError(f"dataset file {path!r} cannot be read as {kind}: {first_line(cause)}") from None
    if len(data) == 0:
        raise ConfigError(f"dataset file {path!r} has no rows; expected rows with a 'prompt' column")
    return data.select(range(min(limit, len(data)))) if limit is not None else data
