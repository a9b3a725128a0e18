"""attncredit.analysis and `attncredit analyze` (scripts/analyze_rhythm.py): peaks, Table 2 statistics, perturbation Jaccard, the
recorded analysis forward (against eager attention), and the script end to end on a tiny model."""

import json
import math
import re

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from attncredit.analysis import (
    PeakRule,
    ResponseCoupling,
    cooccurrence,
    content_words,
    excess_kurtosis,
    find_peaks,
    follows_or_coincides,
    jaccard,
    lift,
    receiver_heads,
    response_coupling,
    shuffled_follows_or_coincides,
    table2,
)
from attncredit.analysis.forward import BandWindow, rhythm_forward
from attncredit.analysis.perturbation import fai_positions, perturb_response, summarize
from attncredit.analysis.responses import pack_batch
from attncredit.analysis.rhythm import chunk_delta, fai_eligible
from attncredit.attention import enable_recording, record_attention
from attncredit.evaluation.generate import make_generator

def _script():
    """`attncredit analyze` (scripts/analyze_rhythm.py is a thin wrapper of it)."""
    from attncredit.cli import analyze

    return analyze


# ---------------------------------------------------------------------------------------------------------------
# peaks
# ---------------------------------------------------------------------------------------------------------------
def test_top_quantile_peaks_take_ceil_q_n_largest_ties_to_earlier():
    v = [1.0, 5.0, 3.0, 5.0, 0.0, 2.0, 4.0, 4.0, 1.0, 0.5]
    assert find_peaks(v, quantile=0.2).nonzero()[0].tolist() == [1, 3]  # ceil(0.2 * 10) = 2
    assert find_peaks(v, quantile=0.3).nonzero()[0].tolist() == [1, 3, 6]  # tie 6/7 -> 6
    assert find_peaks(v, quantile=0.25).nonzero()[0].tolist() == [1, 3, 6]  # ceil(2.5) = 3
    eligible = [True] * 8 + [False] * 2
    assert find_peaks(v, eligible, quantile=0.2).nonzero()[0].tolist() == [1, 3]  # ceil(0.2 * 8) = 2
    assert find_peaks(v, [False, False, False] + [True] * 7, quantile=0.2).nonzero()[0].tolist() == [3, 6]


def test_local_max_peaks_plateau_edges_threshold_and_eligibility():
    v = [3.0, 1.0, 4.0, 4.0, 2.0, 0.0, 5.0, 1.0, 2.0]
    # maxima: 0 (left edge, 3 > 1), 2 (first of the plateau 4, 4), 6, 8 (right edge, 2 > 1)
    assert find_peaks(v, method="local_max", z=-10).nonzero()[0].tolist() == [0, 2, 6, 8]
    # mean 2.444, std 1.707: z = 0 keeps values > 2.444
    assert find_peaks(v, method="local_max", z=0).nonzero()[0].tolist() == [0, 2, 6]
    assert find_peaks(v, method="local_max", z=1).nonzero()[0].tolist() == [6]  # > 4.15
    # skipping position 7 makes 8 the right neighbour of 6 (5 >= 2) and 8 the last position (2 > 5? no)
    eligible = [True] * 7 + [False, True]
    assert find_peaks(v, eligible, method="local_max", z=-10).nonzero()[0].tolist() == [0, 2, 6]
    assert not find_peaks([float("nan")] * 3, method="local_max").any()


def test_peak_rule_validation_and_description():
    with pytest.raises(ValueError, match="peak method"):
        PeakRule("valley")
    with pytest.raises(ValueError, match="quantile"):
        PeakRule("top_quantile", 0.0)
    assert "0.2" in PeakRule().describe()
    assert PeakRule("local_max", z=1.5).find([0, 1, 0]).tolist() == [False, False, False]


# ---------------------------------------------------------------------------------------------------------------
# Table 2 statistics
# ---------------------------------------------------------------------------------------------------------------
def test_cooccurrence_counts_receiver_peaks_on_global_peaks():
    receiver = [1, 0, 1, 0, 1, 0, 0, 1]
    glob = [1, 1, 0, 0, 1, 0, 0, 0]
    assert cooccurrence(receiver, glob) == (2, 4)
    assert cooccurrence([0, 0], [1, 1]) == (0, 0)


def test_follows_or_coincides_counts_lag_zero_and_one_only():
    waad = [0, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    fai = [0, 1, 1, 1, 0, 0, 0, 1, 0, 1]  # 1: coincides, 2: follows; 3 and 7: two after; 9: no
    assert follows_or_coincides(fai, waad) == 2
    assert follows_or_coincides(fai, waad, max_lag=2) == 4  # + 3 (two after 1) and 7 (two after 5)
    assert follows_or_coincides(fai, waad, max_lag=0) == 1
    assert follows_or_coincides([0, 0], [1, 1]) == 0


def test_shuffled_baseline_keeps_the_count_and_matches_its_expectation():
    rng = np.random.default_rng(0)
    # every position a WAAD peak: every FAI peak wherever it lands follows one
    assert shuffled_follows_or_coincides([1, 0, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], rng, shuffles=20) == 2.0
    # one WAAD peak at 2 among 6 eligible positions: positions 2 and 3 count, so each of the 2 FAI peaks hits with
    # probability 2/6: expectation 2/3
    waad = [0, 0, 1, 0, 0, 0]
    got = shuffled_follows_or_coincides([1, 1, 0, 0, 0, 0], waad, [1] * 6, rng, shuffles=4000)
    assert got == pytest.approx(2 / 3, abs=0.03)
    # ineligible positions never receive a moved peak
    got = shuffled_follows_or_coincides([1, 0, 0, 0, 0, 0], waad, [1, 1, 0, 0, 0, 0], rng, shuffles=200)
    assert got == 0.0
    assert shuffled_follows_or_coincides([0] * 6, waad, [1] * 6, rng) == 0.0


def test_excess_kurtosis_and_receiver_heads():
    # [0, 0, 0, 4]: mean 1, central moments m2 = 3, m4 = (3 * 1 + 81) / 4 = 21 -> 21 / 9 - 3
    assert excess_kurtosis([0, 0, 0, 4]) == pytest.approx(21 / 9 - 3)
    assert excess_kurtosis([[1, 1, 1]])[0] == -3.0
    fai = np.array([
        [1.0, 1.2, 1.0, 1.2, 1.0, 1.2],  # two values, half and half: excess kurtosis -2
        [0.0, 0.0, 5.0, 0.0, 0.0, 0.0],  # one spike in six: +1.2, the highest
        [0.0, 1.0, 0.0, 1.0, 0.0, 1.0],  # -2
        [0.0, 0.0, 3.0, 3.0, 0.0, 0.0],  # two in six: -1.5
    ])
    assert receiver_heads(fai, [True] * 6, 1).nonzero()[0].tolist() == [1]
    assert receiver_heads(fai, [True] * 6, 2).nonzero()[0].tolist() == [1, 3]
    # the spike at an ineligible token is not seen
    assert not receiver_heads(fai, [True, True, False, True, True, True], 1)[1]


def test_response_coupling_and_table2_on_a_hand_made_response():
    #            0    1    2    3    4    5    6    7    8    9
    waad = [1.0, 9.0, 2.0, 1.0, 8.0, 1.0, 2.0, 1.0, 1.0, 3.0]  # top-20% peaks: 1, 4
    fai = [0.1, 0.2, 0.9, 0.1, 0.1, 0.8, 0.1, 0.1, 0.0, 0.0]  # eligible 0..7: top-20% = ceil(1.6) = 2: 2, 5
    recv = [0.1, 0.2, 0.7, 0.1, 0.1, 0.1, 0.9, 0.1, 0.0, 0.0]  # peaks 2, 6
    ent = [0.5, 2.0, 0.5, 0.5, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5]
    eligible = fai_eligible(10, 2)
    assert eligible.tolist() == [True] * 8 + [False] * 2
    c, peaks = response_coupling(waad=waad, fai=fai, receiver_fai=recv, entropy=ent, fai_eligible=eligible,
                                 rule=PeakRule(), rng=np.random.default_rng(0), shuffles=50)
    assert peaks["waad_peaks"].nonzero()[0].tolist() == [1, 4]
    assert peaks["fai_peaks"].nonzero()[0].tolist() == [2, 5]
    assert peaks["receiver_peaks"].nonzero()[0].tolist() == [2, 6]
    assert (c.entropy_at_peaks, c.waad_peaks, c.entropy_all, c.tokens) == (3.0, 2, 7.0, 10)
    assert (c.receiver_on_global, c.receiver_peaks, c.global_peaks, c.fai_tokens) == (1, 2, 2, 8)
    assert c.fai_follow == 2  # 2 follows 1, 5 follows 4
    t = table2(c + ResponseCoupling())
    assert t["waad_peak_entropy"]["observed"] == pytest.approx(1.5)
    assert t["waad_peak_entropy"]["random"] == pytest.approx(0.7)
    assert t["waad_peak_entropy"]["lift"] == pytest.approx((1.5 - 0.7) / 0.7)
    assert t["receiver_global_fai_cooccurrence"]["observed"] == 0.5
    assert t["receiver_global_fai_cooccurrence"]["random"] == 0.25
    assert t["receiver_global_fai_cooccurrence"]["lift"] == pytest.approx(1.0)
    assert t["fai_follows_waad"]["observed"] == 1.0
    # shuffled: 4 of the 8 eligible positions (1, 2, 4, 5) sit at or right after a WAAD peak: about 1/2
    assert t["fai_follows_waad"]["random"] == pytest.approx(0.5, abs=0.12)
    assert t["waad_peak_next_token_entropy"]["observed"] is None  # no next-token entropy given


def test_lift_edge_cases():
    assert lift(0.3, 0.2) == pytest.approx(0.5)
    assert lift(0.3, 0.0) is None
    assert lift(None, 0.2) is None
    assert chunk_delta(np.array([1.0, 4.0, 2.0])).tolist() == [3.0, 2.0, 0.0]


# ---------------------------------------------------------------------------------------------------------------
# perturbation (Table 1)
# ---------------------------------------------------------------------------------------------------------------
def test_content_words_and_jaccard():
    assert content_words("So, the answer is 42 apples and 7 Pears!") == {"answer", "42", "apples", "7", "pears"}
    assert jaccard({"a", "b"}, {"b", "c"}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 1.0
    assert jaccard({"x"}, set()) == 0.0
    a = content_words("She spends 3 dollars on eggs every day")
    b = content_words("She will spend 3 dollars on milk every day")
    assert jaccard(a, b) == pytest.approx(len({"3", "dollars", "every", "day"}) / len(a | b))


def test_fai_positions_are_disjoint_extremes_of_eligible_tokens():
    fai = [0.5, 0.1, 0.9, 0.3, 0.2, 0.8, 0.05, 1.0]
    eligible = [True] * 7 + [False]
    assert fai_positions(fai, eligible, 2) == ([2, 5], [1, 6])
    assert fai_positions(fai[:3], [True] * 3, 5) == ([2], [1])  # k capped at half the eligible tokens
    assert fai_positions(fai, [False] * 8, 2) == ([], [])


def test_perturbation_summary_pr_top_lt_bottom():
    from attncredit.analysis.perturbation import PerturbedPosition, ResponsePerturbation

    def resp(top, bottom):
        return ResponsePerturbation(top=[PerturbedPosition(0, 1.0, "a", ["b"], top)],
                                    bottom=[PerturbedPosition(1, 0.0, "c", ["d"], bottom)])

    s = summarize([resp([0.2, 0.4], [0.9]), resp([0.5], [0.5]), resp([0.8], [0.1])])
    assert s["pr_top_lt_bottom"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert s["top_jaccard"] == pytest.approx((0.2 + 0.4 + 0.5 + 0.8) / 4)
    assert s["ties"] == 1 and s["responses"] == 3


# ---------------------------------------------------------------------------------------------------------------
# the recorded analysis forward, against eager attention and the full model's logits
# ---------------------------------------------------------------------------------------------------------------
def test_rhythm_forward_matches_eager_attention_and_logits(tiny_qwen2):
    torch.manual_seed(0)
    eager = AutoModelForCausalLM.from_pretrained(tiny_qwen2, attn_implementation="eager", dtype=torch.float32).eval()
    model = enable_recording(AutoModelForCausalLM.from_pretrained(tiny_qwen2, dtype=torch.float32).eval())
    vocab = model.config.vocab_size
    ids = torch.randint(4, vocab, (2, 30))
    attention = torch.ones(2, 30, dtype=torch.bool)
    attention[0, :4] = False  # left padding
    attention[1, -3:] = False  # right padding after the response
    response = torch.zeros(2, 30, dtype=torch.bool)
    response[0, 12:] = True
    response[1, 10:27] = True
    layers = [1, 2, 4]
    windows = [BandWindow(14, 22, 8), BandWindow(10, 20, 3)]
    fwd = rhythm_forward(model, ids, attention, response, layers, window=4, fai_horizon=(1, None),
                         credit_layers=[2, 4], credit_fai_horizon=(2, 6), band_windows=windows, num_candidates=3)
    with torch.no_grad():
        out = eager(input_ids=ids, attention_mask=attention.long(), output_attentions=True)
    for i, win in enumerate(windows):
        for layer in layers:
            ref = out.attentions[layer][i, :, win.row_start:win.row_stop, win.col_start:win.row_stop]
            torch.testing.assert_close(fwd.bands[i][layer], ref.float(), atol=1e-5, rtol=1e-4)
    # statistics: the analysis horizon (1, end) and the credit horizon (2, 6) equal record_attention's
    for horizon, got in (((1, 30), fwd.stats), ((2, 6), fwd.credit_stats)):
        with record_attention(model, layers, attention, response, window=4, fai_horizon=horizon) as rec, \
                torch.no_grad():
            model(input_ids=ids, attention_mask=attention.long())
        for layer in got:
            torch.testing.assert_close(got[layer].fai, rec.stats[layer].fai)
            torch.testing.assert_close(got[layer].waad, rec.stats[layer].waad)
    assert sorted(fwd.credit_stats) == [2, 4]
    # entropy of token t from the logits of row t - 1; next_entropy from row t; candidates = top tokens of row t - 1
    logp = torch.log_softmax(out.logits.float(), -1)
    ent = -(logp.exp() * logp).sum(-1)
    for i in range(2):
        pos = response[i].nonzero().flatten()
        torch.testing.assert_close(fwd.entropy[i, pos], ent[i, pos - 1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(fwd.next_entropy[i, pos], ent[i, pos], atol=1e-4, rtol=1e-4)
        assert torch.equal(fwd.candidates[i, pos, 0], out.logits[i, pos - 1].argmax(-1))
        assert torch.isnan(fwd.entropy[i, ~response[i]]).all()


def test_pack_batch_left_pads_prompts_and_right_pads_responses():
    ids, attention, response = pack_batch([[1, 2], [3, 4, 5]], [[6], [7, 8]], pad_id=0)
    assert ids.tolist() == [[0, 1, 2, 6, 0], [3, 4, 5, 7, 8]]
    assert attention.tolist() == [[False, True, True, True, False], [True] * 5]
    assert response.tolist() == [[False, False, False, True, False], [False, False, False, True, True]]
    with pytest.raises(ValueError, match="2 prompts for 1 responses"):
        pack_batch([[1], [2]], [[3]], pad_id=0)


def test_perturb_response_runs_on_a_tiny_model(tiny_qwen2):
    generator = make_generator(str(tiny_qwen2), backend="hf")
    tok = generator.tokenizer
    prompt = tok("What is 2 + 3?", add_special_tokens=False)["input_ids"]
    response = tok(" The answer is 5 because 2 plus 3 makes 5 apples in total here", add_special_tokens=False)[
        "input_ids"]
    n = len(response)
    fai = np.linspace(0.0, 1.0, n)[::-1].copy()
    candidates = np.tile(np.arange(10, 14), (n, 1))
    res = perturb_response(generator, prompt, response, fai, np.ones(n, bool), candidates, k=1, alternatives=2,
                           max_tokens=6, min_following=3)
    assert [p.position for p in res.top] == [0] and [p.position for p in res.bottom] == [n - 4]
    for p in res.top + res.bottom:
        assert len(p.jaccards) == 2 and all(0.0 <= j <= 1.0 for j in p.jaccards)


# ---------------------------------------------------------------------------------------------------------------
# the script, end to end
# ---------------------------------------------------------------------------------------------------------------
def _finite_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _finite_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _finite_numbers(v)
    elif isinstance(obj, float):
        yield obj


def test_analyze_rhythm_script_writes_every_output(tiny_qwen2, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "run"
    argv = ["--model", str(tiny_qwen2), "--num-samples", "2", "--max-new-tokens", "20", "--out", str(out),
            "--heatmap-rows", "12", "--shuffles", "5", "--perturbation", "1", "--perturbation-tokens", "4",
            "--perturbation-alternatives", "2"]
    assert _script().main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_responses"] == 2
    for key in ("waad_peak_entropy", "receiver_global_fai_cooccurrence", "fai_follows_waad"):
        row = summary["table2"][key]
        assert isinstance(row["random"], float) and isinstance(row["observed"], float)
        assert key in summary["paper_table2"]
    assert set(summary["segments"]) == {"bottom", "middle", "top"}
    assert summary["perturbation"]["continuations"] > 0
    assert all(math.isfinite(v) for v in _finite_numbers(summary))
    assert summary["config"]["fai_horizon"] == [1, "end"]
    assert len(summary["heads"]["mean_head_distance"]) == 6  # --layers all on a 6-layer model
    pngs = [out / "heads.png"] + [out / p for s in summary["samples"] for p in s["images"]]
    assert len(pngs) == 5
    for png in pngs:
        with Image.open(png) as im:
            im.verify()
            assert im.format == "PNG"
    page = (out / "index.html").read_text()
    assert "<script src" not in page and "stylesheet" not in page  # self-contained
    assert page.count('<span class="t') == sum(s["num_tokens"] for s in summary["samples"])  # one span per token
    assert re.search(r'title="#0 [^"]*WAAD [0-9.]+ [^"]*FAI [0-9.e-]+[^"]*γ\[coupled\] 1\.[0-9]+', page)
    assert "gamma:coupled" in page and "gamma:local_chunk" in page and 'id="token-data"' in page
    md = (out / "summary.md").read_text()
    assert "Table 2" in md and "Lift" in md and "Table 1" in md


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "no-such-model"], "unknown model"),
        (["--dataset", "no-such-set"], "unknown dataset"),
        (["--fai-horizon", "5", "2"], "FAI horizon"),
        (["--strategy", "nope"], "unknown credit strategy"),
    ],
)
def test_analyze_rhythm_reports_bad_input_without_traceback(argv, message, tiny_qwen2, tmp_path, capsys):
    if argv[0] != "--model":
        argv = ["--model", str(tiny_qwen2)] + argv
    assert _script().main(argv + ["--out", str(tmp_path / "x"), "--num-samples", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
