"""Shared pieces of the tiny trainer tests (in-process and tests/scripts/train_tiny.py): reward, prompts, small
config, and a spy on the advantages the loss reads."""

from datasets import Dataset


def digit_reward(completions, **kwargs):
    """Share of digits in the completion: random models give spread inside every group."""
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]


def prompts(n=8):
    return Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"What is {i} + {2 * i + 1}? Answer with a number."}]} for i in range(n)]
    )


def tiny_args(output_dir, **overrides) -> dict:
    """AnchorGRPOConfig fields of a 1-2 step run: 4 completions of at most 16 tokens per step, on the CPU."""
    args = dict(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        bf16=False,
        credit_strategy="coupled",
    )
    args.update(overrides)
    return args


class AdvantageReads(dict):
    """The loss's input dict, noting the dimension of each read of 'advantages' and writing changes through."""

    def __init__(self, inner, reads):
        super().__init__(inner)
        self._inner, self._reads = inner, reads

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if key == "advantages":
            self._reads.append(value.dim())
        return value

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._inner[key] = value
