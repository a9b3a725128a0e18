"""Trainer callbacks of attncredit."""

from __future__ import annotations

import json
import math
import os

from transformers import TrainerCallback


class MetricsJsonlCallback(TrainerCallback):
    """Append every logged metrics dict, with its step, to ``<output_dir>/metrics.jsonl`` (main process only).

    The file survives a crash and grows across ``--resume_from_checkpoint`` (entries past the checkpoint are
    logged again by the resumed run, so readers keep the last entry per step).
    """

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch}
        for key, value in logs.items():
            if isinstance(value, (int, float)) and not (isinstance(value, float) and not math.isfinite(value)):
                record[key] = value
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
