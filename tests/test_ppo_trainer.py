"""AnchorPPOTrainer on a real TRL loop with a tiny real-architecture model: the critic learns, warm-up, KL in the
reward, credit on GAE advantages, LoRA."""

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, TrainerCallback

from attncredit import AnchorPPOConfig, AnchorPPOTrainer
from attncredit.models import load_tokenizer
from tiny_training import digit_reward, image_prompts, tiny_args, weights_hash


def prompt_reward(prompts, completions, **kwargs):
    """1 for the 'yes' prompts, 0 for the 'no' ones, whatever the completion: a critic can predict it from the prompt."""
    return [1.0 if "yes" in p[-1]["content"] else 0.0 for p in prompts]


def yes_no_prompts(n=16):
    return Dataset.from_list(
        [{"prompt": [{"role": "user", "content": "yes yes yes yes" if i % 2 else "no no no no"}]} for i in range(n)]
    )


def ppo_args(output_dir, **overrides) -> dict:
    """A few steps of 8 completions (one per prompt) of at most 8 tokens, on the CPU, without credit."""
    args = dict(per_device_train_batch_size=8, num_generations=1, max_completion_length=8, learning_rate=1e-5,
                lr_scheduler_type="constant", credit_strategy="none")  # fmt: skip
    return tiny_args(output_dir, trainer="ppo", **{**args, **overrides})


def make_trainer(
    model_dir, tmp_path, trainer_cls=AnchorPPOTrainer, reward=prompt_reward, data=None, peft_config=None, eval_dataset=None,
    **overrides,
):
    return trainer_cls(
        model=str(model_dir),
        reward_funcs=reward,
        args=AnchorPPOConfig(**ppo_args(tmp_path, **overrides)),
        train_dataset=data if data is not None else yes_no_prompts(),
        processing_class=load_tokenizer(str(model_dir)),
        peft_config=peft_config,
        eval_dataset=eval_dataset,
    )


def logged(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


def test_critic_learns_a_reward_it_can_predict_from_the_prompt(tiny_qwen2, tmp_path):
    trainer = make_trainer(tiny_qwen2, tmp_path, max_steps=12)
    trainer.train()
    value_loss = logged(trainer, "critic/value_loss")
    explained = logged(trainer, "critic/explained_variance")
    assert len(value_loss) == len(explained) == 12
    for key in ("critic/vpred_mean", "critic/returns_mean", "critic/clipfrac", "ppo/advantages_mean", "ppo/advantages_std"):
        assert len(logged(trainer, key)) == 12, key
    # the head starts at 0: V = 0, explained variance 0, value loss 0.5 * E[R^2] = 0.25 on a balanced batch
    assert explained[0] == 0.0 and value_loss[0] == pytest.approx(0.25, abs=0.05)
    assert sum(value_loss[-3:]) / 3 < 0.2 * sum(value_loss[:3]) / 3
    assert min(explained[-3:]) > 0.8
    # whitened advantages: mean 0, std 1 over the batch's valid tokens
    assert all(abs(m) < 1e-5 for m in logged(trainer, "ppo/advantages_mean"))
    assert all(s == pytest.approx(1.0, abs=1e-3) for s in logged(trainer, "ppo/advantages_std"))
    # the final save writes the critic where critic_model_name_or_path can read it back
    trainer.save_model(str(tmp_path / "final"))
    from attncredit.ppo import ValueModel

    reloaded = ValueModel.from_pretrained(str(tmp_path / "final" / "critic"))
    assert weights_hash(reloaded) == weights_hash(trainer.accelerator.unwrap_model(trainer.critic))


class Snapshots(TrainerCallback):
    """Digest of the policy and the critic after every optimizer step."""

    def __init__(self):
        self.trainer, self.steps = None, []

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        unwrap = t.accelerator.unwrap_model
        self.steps.append((weights_hash(unwrap(t.model)), weights_hash(unwrap(t.critic))))


def test_critic_warmup_trains_only_the_critic(tiny_qwen2, tmp_path):
    trainer = make_trainer(tiny_qwen2, tmp_path, max_steps=3, critic_warmup_steps=2, learning_rate=1e-3)
    snapshots = Snapshots()
    snapshots.trainer = trainer
    trainer.add_callback(snapshots)
    policy0, critic0 = weights_hash(trainer.model), weights_hash(trainer.critic)
    trainer.train()
    (p1, c1), (p2, c2), (p3, c3) = snapshots.steps
    assert p1 == p2 == policy0  # warm-up: the policy is untouched
    assert len({critic0, c1, c2, c3}) == 4  # the critic trains at every step
    assert p3 != p2  # after the warm-up the policy trains
    assert all(g > 0 for g in logged(trainer, "grad_norm")[2:])


class KLCapture(AnchorPPOTrainer):
    """Keeps each rollout's KL, returns, rewards and the log-probs of the policy and of a separately loaded
    reference, computed here with plain transformers forwards."""

    def _rollout_kl(self, output, input_ids, attention_mask, logits_to_keep):
        kl = super()._rollout_kl(output, input_ids, attention_mask, logits_to_keep)

        def logps(model):
            logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -logits_to_keep - 1 : -1]
            return torch.log_softmax(logits.float(), -1).gather(-1, input_ids[:, -logits_to_keep:, None]).squeeze(-1)

        with torch.no_grad():
            self.captured.append(
                {"kl": kl, "policy": logps(self.accelerator.unwrap_model(self.model)), "ref": logps(self.reference)}
            )
        return kl

    def _rollout_advantages(self, output):
        advantages = super()._rollout_advantages(output)
        self.captured[-1].update(returns=output["returns"], mask=output["value_mask"].bool(), values=output["old_values"])
        return advantages


def test_kl_in_reward_uses_the_reference_and_enters_the_returns(tiny_qwen2, tmp_path):
    trainer = make_trainer(
        tiny_qwen2, tmp_path, trainer_cls=KLCapture, max_steps=2, kl_coef=0.5, learning_rate=1e-2, critic_gae_lambda=1.0
    )
    trainer.captured, trainer.reference = [], AutoModelForCausalLM.from_pretrained(str(tiny_qwen2)).eval()
    assert trainer.beta == 0.0 and trainer.ref_model is not None  # TRL's KL loss off, its reference model loaded
    trainer.train()
    assert len(trainer.captured) == 2
    first, second = trainer.captured
    for c in trainer.captured:
        mask = c["mask"]
        torch.testing.assert_close(c["kl"][mask], (c["policy"] - c["ref"])[mask], rtol=1e-4, atol=1e-4)
    assert first["kl"][first["mask"]].abs().max() < 1e-5  # the policy starts at the reference
    assert second["kl"][second["mask"]].abs().max() > 1e-3  # one step at lr 1e-2 moved it
    # gamma = lambda_critic = 1: R_t = outcome - kl_coef * sum_{s >= t} kl_s
    mask = second["mask"]
    kl_to_go = torch.flip(torch.cumsum(torch.flip(second["kl"] * mask, [1]), 1), [1])
    outcome = (second["returns"] + 0.5 * kl_to_go)[mask]
    assert set(torch.round(outcome, decimals=4).tolist()) <= {0.0, 1.0}
    assert all("kl" not in h for h in trainer.state.log_history if "loss" in h)  # no KL loss term
    assert logged(trainer, "ppo/reward_kl")[1] != 0.0


def test_lora_policy_with_a_full_critic_and_the_adapter_off_reference(tiny_qwen2, tmp_path):
    trainer = make_trainer(
        tiny_qwen2,
        tmp_path,
        reward=digit_reward,
        max_steps=2,
        kl_coef=0.1,
        learning_rate=1e-2,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert trainer.ref_model is None  # the reference is the policy with its adapter disabled
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    critic_before = weights_hash(trainer.critic)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    lora = [n for n in after if "lora_B" in n]
    assert lora and all(not torch.equal(after[n], before[n]) for n in lora)
    assert all(torch.equal(after[n], before[n]) for n in after if "lora_" not in n)
    assert weights_hash(trainer.critic) != critic_before
    assert all(p.requires_grad for p in trainer.critic.parameters())
    kl = logged(trainer, "ppo/reward_kl")
    assert kl[0] == pytest.approx(0.0, abs=1e-6) and kl[1] != 0.0  # adapter on vs off differ after one step


class LastRead(dict):
    """TRL's micro-batch dict, keeping the value of the last read of 'advantages' (TRL reads it after its forward)."""

    def __init__(self, inner, sink):
        super().__init__(inner)
        self._inner, self._sink = inner, sink

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if key == "advantages":
            self._sink["advantages"] = value.detach().clone()
        return value

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._inner[key] = value


def row_keys(batch) -> list[tuple]:
    return [tuple(r) for r in torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1).tolist()]


class CreditCapture(AnchorPPOTrainer):
    """Per row (prompt + completion ids): the GAE advantages of the rollout, the gamma of the recorded forward that
    saw the row, and the advantages TRL's loss read."""

    def _rollout_advantages(self, output):
        advantages = super()._rollout_advantages(output)
        self.gae.update(zip(row_keys(output), advantages.clone()))
        return advantages

    def _recorded_forward(self, model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        out = super()._recorded_forward(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs)
        self.gamma.update(zip([tuple(r) for r in input_ids.tolist()], out[3].clone()))
        return out

    def _compute_loss(self, model, inputs):
        sink = {}
        loss = super()._compute_loss(model, LastRead(inputs, sink))
        self.loss_reads.append((row_keys(inputs), sink["advantages"], inputs["completion_mask"].bool()))
        return loss


@pytest.mark.parametrize("steps_per_generation", [1, 2], ids=["loss-forward", "old-logps-forward"])
@pytest.mark.parametrize("strategy", ["none", "coupled"])
def test_credit_scales_the_gae_advantages_of_the_same_rows(tiny_qwen2, tmp_path, strategy, steps_per_generation):
    trainer = make_trainer(
        tiny_qwen2,
        tmp_path,
        trainer_cls=CreditCapture,
        reward=digit_reward,
        data=yes_no_prompts(16),
        credit_strategy=strategy,
        steps_per_generation=steps_per_generation,
        max_steps=steps_per_generation,  # one generation
        max_completion_length=16,
    )
    trainer.gae, trainer.gamma, trainer.loss_reads = {}, {}, []
    trainer.train()
    assert trainer._trl_runs_old_logps_forward() == (steps_per_generation == 2)
    assert len(trainer.gae) == 8 * steps_per_generation and len(trainer.loss_reads) == steps_per_generation
    rows = 0
    for keys, read, mask in trainer.loss_reads:
        assert read.dim() == 2
        for key, adv, m in zip(keys, read, mask):
            gae = trainer.gae[key]
            if strategy == "none":
                assert not trainer.gamma
                assert torch.equal(adv, gae)  # bit for bit
            else:
                gamma = trainer.gamma[key]  # recorded on this very row
                assert torch.equal(adv, gae * gamma)
                assert bool((gamma[m] > 1).any()) and bool((gamma[~m] == 1).all())
            rows += 1
    assert rows == 8 * steps_per_generation
    if strategy == "coupled":
        assert logged(trainer, "attncredit/gamma_mean")[0] > 1.0


def test_missing_critic_path_is_one_line(tiny_qwen2, tmp_path):
    from attncredit.errors import ConfigError

    missing = str(tmp_path / "no-such-critic")
    with pytest.raises(ConfigError) as info:
        make_trainer(tiny_qwen2, tmp_path, critic_model_name_or_path=missing)
    assert str(info.value).startswith(f"critic_model_name_or_path={missing!r} is not a folder")
    with pytest.raises(ConfigError) as info:
        make_trainer(tiny_qwen2, tmp_path, critic_model_name_or_path="no-such-model")
    assert str(info.value).startswith("critic_model_name_or_path: unknown model 'no-such-model'")
    assert "\n" not in str(info.value)


def test_bad_rows_are_refused_before_the_critic_loads(tiny_qwen2, tmp_path, monkeypatch):
    from attncredit.errors import ConfigError

    def no_loading(*args, **kwargs):
        raise AssertionError("the critic loaded before the data was checked")

    monkeypatch.setattr(AnchorPPOTrainer, "_load_critic", staticmethod(no_loading))
    rows = Dataset.from_list([{"prompt": "Say yes"}, {"prompt": ""}])
    with pytest.raises(ConfigError, match=r"^train_dataset row 1: a null or empty prompt in column 'prompt'"):
        AnchorPPOTrainer(model=str(tiny_qwen2), reward_funcs=prompt_reward,
                         args=AnchorPPOConfig(**ppo_args(tmp_path, max_steps=1)), train_dataset=rows)


def test_evaluation_scores_with_the_critic_and_logs_eval_metrics(tiny_qwen2, tmp_path):
    trainer = make_trainer(tiny_qwen2, tmp_path, max_steps=1, eval_strategy="steps", eval_steps=1,
                           per_device_eval_batch_size=4, eval_dataset=yes_no_prompts(4))  # fmt: skip
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals) == 1
    assert "eval_critic/returns_mean" in evals[0] and "eval_ppo/advantages_std" in evals[0]
    assert len(logged(trainer, "critic/value_loss")) == 1  # the critic trains on training batches only
    assert trainer.critic.training


def test_deepspeed_is_refused_in_one_line_before_loading(tmp_path):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from attncredit.errors import ConfigError

    args = AnchorPPOConfig(**ppo_args(tmp_path))
    args.distributed_state = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED)  # as under a ZeRO config
    with pytest.raises(ConfigError) as info:
        AnchorPPOTrainer(model="no-model-is-loaded", args=args)
    message = str(info.value)
    assert "\n" not in message and message.startswith("AnchorPPOTrainer does not support DeepSpeed (ZeRO-2/3)")
    # the reason names the part of accelerate that makes it unsound, and the way out is FSDP2
    assert "Accelerator.deepspeed_engine_wrapped" in message and "the first one prepared" in message
    assert "the policy's loss would run and step the critic's engine" in message
    assert "use FSDP2 (recipes/accelerate/fsdp2.yaml" in message


class AdvantageLog(AnchorPPOTrainer):
    """Keeps the whitened GAE advantages and valid-token mask of every rollout, to compare with the logged table."""

    def _log_completion_advantages(self, advantages, mask):
        self.rollouts = getattr(self, "rollouts", []) + [(advantages.clone(), mask.clone())]
        super()._log_completion_advantages(advantages, mask)


def test_completions_table_shows_each_completions_mean_gae_advantage(tiny_qwen2, tmp_path):
    trainer = make_trainer(tiny_qwen2, tmp_path, trainer_cls=AdvantageLog, max_steps=2)
    trainer.train()
    advantages, mask = trainer.rollouts[-1]
    expected = ((advantages * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist()
    logged_table = list(trainer._logs["advantages"])
    assert len(logged_table) == len(trainer._logs["prompt"])  # one value per completion row of the table
    assert logged_table[-len(expected):] == pytest.approx(expected, abs=1e-6)
    # whitened token advantages: the per-completion means are not TRL's group advantages, which are 0 for n = 1
    assert any(abs(v) > 1e-3 for v in expected)


def test_critic_values_see_the_image():
    """A vision-language critic's values of one text differ with the image: the vision inputs reach its backbone."""
    import numpy as np
    from PIL import Image

    from attncredit.ppo.critic import ValueModel
    from attncredit.testing import build_tiny_vlm

    model, processor = build_tiny_vlm()
    critic = ValueModel.from_causal_lm(model).eval()
    torch.nn.init.normal_(critic.value_head.weight)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "1 + 1 ="}]}],
        add_generation_prompt=True, tokenize=False,
    ) + "2 3 4"  # fmt: skip
    values = []
    for seed in (0, 1):
        image = Image.fromarray((np.random.default_rng(seed).random((40, 40, 3)) * 255).astype("uint8"))
        inputs = processor(text=[text], images=[[image]], return_tensors="pt")
        vision = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        with torch.no_grad():
            values.append(critic(inputs["input_ids"], inputs["attention_mask"], 3, **vision))
    assert not torch.allclose(values[0], values[1])


@pytest.mark.parametrize("arch", ["gemma3", "llava"])
def test_vision_language_ppo_gives_the_critic_the_images(tmp_path, arch):
    """PPO on a VLM: the critic's rollout values and its update both read the rollout's images (and, for Gemma 3,
    the token type ids that make image tokens attend to each other), not the image placeholder tokens alone."""
    from attncredit.testing import build_tiny_vlm

    model, processor = build_tiny_vlm(num_layers=6 if arch == "gemma3" else 4, arch=arch)
    trainer = AnchorPPOTrainer(
        model=model,
        reward_funcs=digit_reward,
        args=AnchorPPOConfig(**tiny_args(tmp_path, trainer="ppo", max_completion_length=8)),
        train_dataset=image_prompts(),
        processing_class=processor,
    )
    seen = []
    backbone = trainer.accelerator.unwrap_model(trainer.critic).backbone
    backbone.register_forward_pre_hook(lambda module, args, kwargs: seen.append(sorted(kwargs)), with_kwargs=True)
    trainer.train()
    assert len(seen) == 4  # per step: the rollout's values, then one update
    expected = {"pixel_values", "token_type_ids"} if arch == "gemma3" else {"pixel_values"}
    assert all(expected <= set(keys) for keys in seen), seen
    assert all("critic/value_loss" in h for h in trainer.state.log_history[:2])
