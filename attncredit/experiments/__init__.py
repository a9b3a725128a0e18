"""Config-driven experiments: arms x seeds over one recipe config, run resumably, reported with intervals.

* ``spec.py``: the experiment file (YAML) and its validation (``load_experiment``);
* ``runner.py``: every run as a subprocess of the recipe's own training path (``attncredit grpo``/``ppo``),
  N at a time, skipping finished runs and resuming the others from their newest complete checkpoint; ``collect``
  copies finished runs' small files to a results folder;
* ``report.py`` and ``stats.py``: per arm the primary metric's mean with a t-interval, paired differences to the
  baseline with t and bootstrap intervals, learning curves and per-step time.

The command line is ``attncredit exp run|collect|report`` (attncredit/cli/exp.py).
"""

from .report import write_report
from .runner import collect, run_experiment
from .spec import Experiment, load_experiment, parse_only

__all__ = ["Experiment", "load_experiment", "parse_only", "run_experiment", "collect", "write_report"]
