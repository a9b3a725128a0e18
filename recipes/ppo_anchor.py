"""PPO with a learned critic, GAE and attention-aware credit: the attncredit PPO entry point.

    accelerate launch recipes/ppo_anchor.py --config recipes/configs/X.yaml [--field value ...]

The same data, reward and model arguments as recipes/grpo_anchor.py (``AnchorScriptArguments``, TRL's
``ModelConfig``), with ``attncredit.AnchorPPOConfig`` (AnchorGRPOConfig plus ``critic_*``, ``gae_*``, ``kl_coef``,
``cliprange_value``, ``vf_coef``, ``advantage_whitening``) for the training arguments. Without ``--config`` it runs
``recipes/configs/ppo_default.yaml``: the embedded SmolLM2-135M-Instruct on small Countdown problems, on a CPU,
offline. The final critic is saved to ``<output_dir>/critic`` (``critic_model_name_or_path`` reads it back).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the GRPO recipe's data and argument helpers
import grpo_anchor  # noqa: E402

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "ppo_default.yaml"


def parse_args(argv: list[str]):
    from trl import ModelConfig, TrlParser

    from attncredit import AnchorPPOConfig

    dataclass_types = (grpo_anchor.AnchorScriptArguments, AnchorPPOConfig, ModelConfig)
    if "--config" not in argv:
        argv = ["--config", str(DEFAULT_CONFIG), *argv]
    index = argv.index("--config")
    if index + 1 >= len(argv):
        grpo_anchor._fail("--config needs a YAML file path")
    grpo_anchor._check_config_file(argv[index + 1], dataclass_types)
    return TrlParser(dataclass_types).parse_args_and_config(argv)


def main(argv: list[str] | None = None) -> None:
    # As the GRPO recipe: no deprecation notices a user cannot act on, one progress bar (training's).
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    from attncredit import AnchorPPOTrainer
    from attncredit.data import validate_columns
    from attncredit.errors import ConfigError, NonFiniteTrainingError
    from attncredit.models import load_tokenizer, resolve_model_name
    from attncredit.output_dir import check_writable, prepare_output_dir, resolve_resume
    from rewards import GradingWorkerError, get_reward_funcs

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        script_args, training_args, model_args = parse_args(argv)
        from trl import get_peft_config

        # Before anything slow: a bad output_dir, or one holding another run.
        resume = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
        check_writable(training_args.output_dir)
        prepare_output_dir(training_args.output_dir, resume, training_args.overwrite_output_dir, delete=False)

        model_path = resolve_model_name(model_args.model_name_or_path or "smollm2-135m-instruct")
        tokenizer = load_tokenizer(model_path)
        training_args.model_init_kwargs = {
            **(training_args.model_init_kwargs or {}),
            "dtype": model_args.dtype or "auto",
            **({"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}),
        }
        seed = training_args.seed
        train_dataset = grpo_anchor.load_data(script_args, script_args.dataset_train_split, script_args.max_train_samples, seed)
        eval_dataset = None
        if script_args.dataset_test_split:
            eval_dataset = grpo_anchor.load_data(script_args, script_args.dataset_test_split, script_args.max_eval_samples, seed)
        reward_funcs = get_reward_funcs(script_args.reward_funcs)
        for data in (train_dataset, eval_dataset):
            if data is not None:
                validate_columns(data, rewards=script_args.reward_funcs)
        # The critic is loaded here too: a missing critic_model_name_or_path is a one-line error like the others.
        trainer = AnchorPPOTrainer(
            model=model_path,
            reward_funcs=reward_funcs,
            args=training_args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=get_peft_config(model_args),
        )
    except (ConfigError, ValueError) as e:
        grpo_anchor._fail(str(e).splitlines()[0] if str(e) else type(e).__name__)

    try:
        trainer.train(resume_from_checkpoint=resume)
    except (NonFiniteTrainingError, GradingWorkerError) as e:  # the message names the step or worker
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        print(json.dumps({"output_dir": training_args.output_dir, "global_step": trainer.state.global_step}))


if __name__ == "__main__":
    main()
