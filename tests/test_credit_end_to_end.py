"""End to end: the advantages that reach TRL's loss are A x gamma, with gamma recomputed here from scratch.

For every strategy, in the loss-forward path (one optimizer step per generation: the statistics come from the loss
forward) and the old-log-prob path (two steps per generation: from TRL's no-grad old-log-prob forward), the trainer
runs one real TRL step on a tiny model. The test takes the rows of the micro-batch that TRL's loss reads, after
TRL's shuffling and padding, runs the same initial weights over exactly those rows with eager attention and
``output_attentions=True``, and writes out the paper's equations plainly (no attncredit strategy or statistics
code is called):

* Eq. 7  d(l,h) = mean over response rows t of sum_s A[t,s] (t - s); the 5 probe layers of the middle third;
* Eq. 8  H_loc / H_glob = the heads with the smallest / largest d (30% of them), A_loc / A_glob their mean maps;
* Eq. 9  WAAD_t = sum_s A_loc[t,s] min(t - s, W), W = 10;
* Eq. 10 FAI_s = mean of A_glob[t,s] over response rows t with s + 10 <= t <= s + 100 (0 when there is none);
* Eq. 14-17 TopQ per response (ceil(0.4 n) tokens, ties to the earlier one), gamma 1.5 on the selected tokens;
* Eq. 18-19 coupled credit with k = 3, alpha = 0.5, tau_WAAD = the response's lower median WAAD, tau_Delta = the
  smallest Delta of TopQ(Delta);
* high-entropy credit on the sampling entropy of the same forward; random credit: ceil(0.4 n) tokens at 1.5.

A is TRL's group-normalised advantage, taken from TRL's own ``_generate_and_score_completions`` output. A statistic
read one token off, or a response mask that loses the first completion token, changes gamma and fails this test.
"""

import math

import pytest
import torch
from tiny_training import AdvantageReads, digit_reward, prompts, tiny_args
from transformers import AutoModelForCausalLM
from trl import GRPOTrainer

from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
from attncredit.models import load_tokenizer

AMP, W, H_LO, H_HI, ALPHA, K, HEAD_Q = 1.5, 10, 10, 100, 0.5, 3, 0.3  # paper defaults; q = 0.4 below
ROWS = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")


class AdvantageValues(AdvantageReads):
    """AdvantageReads that also keeps the value of every read of 'advantages'."""

    def __init__(self, inner, reads, values):
        super().__init__(inner, reads)
        self._values = values

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if key == "advantages":
            self._values.append(value.detach().clone())
        return value


class Spy(AnchorGRPOTrainer):
    """Keeps each loss micro-batch's rows and the advantages TRL's loss read (its last read, after its forward)."""

    def _compute_loss(self, model, inputs):
        rows = {k: inputs[k].clone() for k in ROWS}
        reads, values = [], []
        loss = super()._compute_loss(model, AdvantageValues(inputs, reads, values))
        self.loss_batches.append((rows, values[-1]))
        return loss


@pytest.fixture
def trl_rollouts(monkeypatch):
    """Every generation batch TRL scored: its rows and TRL's sequence advantages A (before any credit)."""
    records = []
    original = GRPOTrainer._generate_and_score_completions

    def recording(self, inputs):
        output = original(self, inputs)
        records.append({k: output[k].clone() for k in (*ROWS, "advantages")})
        return output

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", recording)
    return records


def train(model_dir, tmp_path, **overrides):
    torch.set_num_threads(1)
    args = tiny_args(tmp_path, max_steps=1, max_completion_length=24, **overrides)
    trainer = Spy(
        model=str(model_dir),
        reward_funcs=digit_reward,
        args=AnchorGRPOConfig(**args),
        train_dataset=prompts(),
        processing_class=load_tokenizer(str(model_dir)),
    )
    trainer.loss_batches = []
    trainer.train()
    assert trainer.loss_batches, "TRL's loss never ran"
    return trainer


def row_key(rows, i) -> tuple:
    """A row's real tokens (prompt and completion without padding): TRL may re-pad between scoring and the loss."""
    prompt = rows["prompt_ids"][i][rows["prompt_mask"][i].bool()].tolist()
    completion = rows["completion_ids"][i][rows["completion_mask"][i].bool()].tolist()
    return tuple(prompt), tuple(completion)


def sequence_advantages(rows, rollouts) -> torch.Tensor:
    """A of each loss row, found by its tokens among the scored rollouts (TRL shuffles between the two)."""
    scored = {}
    for r in rollouts:
        for j in range(r["prompt_ids"].shape[0]):
            scored.setdefault(row_key(r, j), set()).add(float(r["advantages"][j]))
    found = []
    for i in range(rows["prompt_ids"].shape[0]):
        values = scored.get(row_key(rows, i))
        assert values is not None, f"loss row {i} is not among the scored rollouts"
        assert len(values) == 1, f"identical rows with different advantages {values}"
        found.append(next(iter(values)))
    return torch.tensor(found, dtype=torch.float64)


# ------------------------------------------------------------------------------------------------------------
# The paper's equations, written out
# ------------------------------------------------------------------------------------------------------------
def probe_layers(num_layers: int, count: int = 5) -> list[int]:
    """Five evenly spaced layers from floor(L/3) to floor(2L/3), rounded half up, duplicates dropped."""
    lo, hi = num_layers // 3, (2 * num_layers) // 3
    return sorted({math.floor(lo + i * (hi - lo) / (count - 1) + 0.5) for i in range(count)})


def quantile_count(n: int) -> int:
    """ceil(0.4 n) in integer arithmetic."""
    return (2 * n + 4) // 5


def top_q(scores: list[float], largest: bool = True) -> set[int]:
    """TopQ per response: the ceil(0.4 n) largest (or smallest) scores, ties to the earlier index."""
    order = sorted(range(len(scores)), key=lambda t: ((-scores[t] if largest else scores[t]), t))
    return set(order[: quantile_count(len(scores))])


def statistics(model_dir, rows, grouping: str, autocast_bf16: bool):
    """Per row: WAAD, FAI, entropy over its completion tokens (lists), from eager attention of the same rows."""
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), attn_implementation="eager", dtype=torch.float32)
    ids = torch.cat([rows["prompt_ids"], rows["completion_ids"]], dim=1)
    mask = torch.cat([rows["prompt_mask"], rows["completion_mask"]], dim=1)
    b, n = ids.shape
    c = rows["completion_ids"].shape[1]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16):
        out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    layers = probe_layers(model.config.num_hidden_layers)
    attn = torch.stack([out.attentions[layer].double() for layer in layers], dim=1)  # [B, L, H, N, N]
    heads = attn.shape[1] * attn.shape[2]
    attn = attn.reshape(b, heads, n, n)  # flat head index = layer position * H + head
    logits = out.logits[:, n - c - 1 : n - 1].double()  # position t-1 predicts completion token t
    entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)  # temperature 1

    response = [[n - c + j for j in range(c) if rows["completion_mask"][i, j]] for i in range(b)]
    # Eq. 7: d(l,h) over the response rows of each sequence
    d = torch.zeros(b, heads, dtype=torch.float64)
    for i in range(b):
        for t in response[i]:
            for s in range(t + 1):
                d[i] += attn[i, :, t, s] * (t - s)
        d[i] /= len(response[i])
    k = min(max(1, math.floor(HEAD_Q * heads + 0.5)), heads // 2)
    out_stats = []
    for i in range(b):
        ranking_d = d.mean(0) if grouping == "batch" else d[i]
        order = sorted(range(heads), key=lambda h: (float(ranking_d[h]), h))
        local, glob = order[:k], order[heads - k :]
        a_loc, a_glob = attn[i, local].mean(0), attn[i, glob].mean(0)  # Eq. 8
        waad, fai = [], []
        for t in response[i]:
            waad.append(float(sum(a_loc[t, s] * min(t - s, W) for s in range(t + 1))))  # Eq. 9
            receivers = [u for u in response[i] if t + H_LO <= u <= min(n - 1, t + H_HI)]
            fai.append(float(sum(a_glob[u, t] for u in receivers) / len(receivers)) if receivers else 0.0)  # Eq. 10
        ent = [float(entropy[i, t - (n - c)]) for t in response[i]]
        out_stats.append({"waad": waad, "fai": fai, "entropy": ent, "positions": [t - (n - c) for t in response[i]]})
    return out_stats


def deltas(waad: list[float]) -> list[float]:
    """Eq. 14: |WAAD_t - WAAD_t+1|, 0 for the last response token."""
    return [abs(waad[t] - waad[t + 1]) for t in range(len(waad) - 1)] + [0.0]


def reference_gamma(strategy: str, st: dict, selection: str = "top") -> list[float]:
    """gamma over one response's tokens (Eq. 15, 17, 19, and the entropy control)."""
    n, a = len(st["waad"]), AMP - 1
    largest = selection == "top"
    if strategy == "none":
        return [1.0] * n
    if strategy in ("entropy", "local_chunk", "global_anchor"):
        score = {"entropy": st["entropy"], "local_chunk": deltas(st["waad"]), "global_anchor": st["fai"]}[strategy]
        chosen = top_q(score, largest=largest)
        return [AMP if t in chosen else 1.0 for t in range(n)]
    assert strategy == "coupled"
    waad, delta = st["waad"], deltas(st["waad"])
    anchors = top_q(st["fai"], largest=largest)
    tau_delta = min(delta[t] for t in top_q(delta))
    tau_waad = sorted(waad)[(n - 1) // 2]
    dominated, intro = set(), set()
    for s in anchors:
        previous = list(range(max(0, s - K), s))
        if not previous:
            continue
        jump = max(delta[u] for u in previous)
        if waad[s] <= tau_waad and jump >= tau_delta and jump > 0:  # Eq. 18
            dominated.add(s)
            intro.add(min(u for u in previous if delta[u] == jump))
    return [
        1.0 + a * (t in anchors and t not in dominated) + (1 - ALPHA) * a * (t in dominated) + ALPHA * a * (t in intro)
        for t in range(n)
    ]  # Eq. 19


def expected_advantages(model_dir, rows, adv, strategy, *, sign="both", normalize="none", grouping="sequence",
                        selection="top", bf16=False) -> torch.Tensor:
    """A x gamma (B, C): gamma from the equations above, then the sign mode and mean-one normalisation."""
    b, c = rows["completion_ids"].shape
    gamma = torch.ones(b, c, dtype=torch.float64)
    for i, st in enumerate(statistics(model_dir, rows, grouping, bf16)):
        applies = sign == "both" or (adv[i] >= 0 if sign == "positive" else adv[i] < 0)
        g = reference_gamma(strategy, st, selection) if applies else [1.0] * len(st["positions"])
        if normalize == "mean_one":
            g = [x * len(g) / sum(g) for x in g]
        for pos, x in zip(st["positions"], g):
            gamma[i, pos] = x
    return adv[:, None] * gamma


def check(trainer, rollouts, model_dir, strategy, bf16=False, **options):
    assert trainer.loss_batches
    informative = 0
    for rows, received in trainer.loss_batches:
        adv = sequence_advantages(rows, rollouts)
        if strategy == "none":  # plain GRPO: TRL's own 1-D advantages, untouched
            assert received.dim() == 1
            torch.testing.assert_close(received.double(), adv)
            continue
        assert received.dim() == 2, "TRL's loss read 1-D advantages: no credit reached it"
        expected = expected_advantages(model_dir, rows, adv, strategy, bf16=bf16, **options)
        mask = rows["completion_mask"].bool()
        if bf16:
            # Under bf16 autocast the eager reference's attention probabilities are rounded to bf16, the trainer's
            # statistics are not: near-equal scores can rank differently, so gamma must take Eq. 19's values and
            # agree with the reference on most tokens, not all.
            live = mask & (adv != 0)[:, None]
            ratio = received.double()[live] / adv[:, None].expand_as(received)[live]
            values = torch.tensor([1.0, AMP, 1 + (1 - ALPHA) * (AMP - 1), 1 + ALPHA * (AMP - 1), AMP + ALPHA * (AMP - 1)],
                                  dtype=torch.float64)
            assert bool(torch.isclose(ratio[:, None], values, atol=1e-2).any(dim=1).all()), ratio
            agree = torch.isclose(received.double()[live], expected[live], rtol=1e-2, atol=1e-3).double().mean()
            assert agree >= 0.8, f"bf16 gamma agrees with the reference on only {float(agree):.0%} of tokens"
        else:
            torch.testing.assert_close(received.double()[mask], expected[mask], rtol=1e-5, atol=1e-6)
        informative += int(((adv != 0)[:, None] & (expected != adv[:, None])).sum())
    if strategy != "none":
        assert informative > 0, "no token had both a nonzero advantage and gamma != 1: the test saw nothing"


PATHS = {"loss-forward": 1, "old-logps-forward": 2}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("strategy", ["none", "entropy", "local_chunk", "global_anchor", "coupled"])
def test_loss_reads_a_times_gamma_from_the_rows_own_attention(tiny_qwen2, tmp_path, trl_rollouts, strategy, path):
    trainer = train(tiny_qwen2, tmp_path, credit_strategy=strategy, steps_per_generation=PATHS[path])
    assert trainer._trl_runs_old_logps_forward() == (path == "old-logps-forward")
    check(trainer, trl_rollouts, tiny_qwen2, strategy)


@pytest.mark.parametrize("path", PATHS)
def test_random_credit_amplifies_ceil_q_n_tokens_of_each_response(tiny_qwen2, tmp_path, trl_rollouts, path):
    trainer = train(tiny_qwen2, tmp_path, credit_strategy="random", steps_per_generation=PATHS[path])
    for rows, received in trainer.loss_batches:
        adv = sequence_advantages(rows, trl_rollouts)
        for i in range(adv.shape[0]):
            tokens = received[i][rows["completion_mask"][i].bool()].double()
            if adv[i] == 0:
                assert bool((tokens == 0).all())
                continue
            ratio = tokens / adv[i]
            amplified = torch.isclose(ratio, torch.tensor(AMP, dtype=torch.float64))
            assert bool((amplified | torch.isclose(ratio, torch.ones_like(ratio))).all())
            assert int(amplified.sum()) == quantile_count(len(tokens))


OPTIONS = {
    "sign=positive": (dict(credit_advantage_sign="positive"), dict(sign="positive")),
    "sign=negative": (dict(credit_advantage_sign="negative"), dict(sign="negative")),
    "normalize=mean_one": (dict(credit_normalize="mean_one"), dict(normalize="mean_one")),
    "head_grouping=batch": (dict(credit_head_grouping="batch"), dict(grouping="batch")),
    "selection=bottom": (dict(credit_options={"selection": "bottom"}), dict(selection="bottom")),
    "bf16": (dict(bf16=True), dict(bf16=True)),
}


@pytest.mark.parametrize("option", OPTIONS)
def test_credit_options_reach_the_loss(tiny_qwen2, tmp_path, trl_rollouts, option):
    config, expected = OPTIONS[option]
    trainer = train(tiny_qwen2, tmp_path, credit_strategy="coupled", **config)
    check(trainer, trl_rollouts, tiny_qwen2, "coupled", **expected)
