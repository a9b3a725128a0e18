"""Training-time token views: attncredit.analysis.token_view.log_token_view / trainer_token_view.

Trackers are replaced by small fakes in ``sys.modules`` (none of wandb / trackio / tensorboard is a dependency), so
the tests check what is handed to each one and that an absent or failing tracker is skipped.
"""

import logging
import sys
import types

import pytest
import torch
from PIL import Image

from attncredit.analysis.token_view import log_token_view, tensorboard_writer_of, trainer_token_view

TOKENS = [" She", " lays", " 16", " eggs", ".", "\n", " So", " 16", " -", " 3", " =", " 13", "<|im_end|>"]
N = len(TOKENS)


def _stats():
    g = torch.Generator().manual_seed(0)
    waad = 4 + 3 * torch.rand(N, generator=g)
    fai = 0.01 * torch.rand(N, generator=g)
    gamma = torch.ones(N)
    gamma[[2, 7, 11]] = 1.5
    return waad, fai, gamma


class FakeWriter:
    def __init__(self):
        self.images, self.texts = [], []

    def add_image(self, tag, image, global_step=None, dataformats="CHW"):
        self.images.append((tag, image.shape, global_step, dataformats))

    def add_text(self, tag, text, global_step=None):
        self.texts.append((tag, text, global_step))


@pytest.fixture
def fake_trackers(monkeypatch):
    """Active fake wandb and trackio runs that record what they are given."""
    logged = {"wandb": [], "trackio": []}
    wandb = types.ModuleType("wandb")
    wandb.run = object()
    wandb.Html = lambda html: ("html", html)
    wandb.Image = lambda path: ("image", path)
    wandb.log = lambda payload: logged["wandb"].append(payload)
    trackio = types.ModuleType("trackio")
    trackio.context_vars = types.SimpleNamespace(current_run=types.SimpleNamespace(get=lambda: "run"))
    trackio.Image = lambda path: ("image", path)
    trackio.log = lambda payload: logged["trackio"].append(payload)
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    monkeypatch.setitem(sys.modules, "trackio", trackio)
    return logged


def test_log_token_view_writes_html_and_png(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    monkeypatch.delitem(sys.modules, "trackio", raising=False)
    waad, fai, gamma = _stats()
    out = log_token_view(tmp_path, 50, TOKENS, waad, fai, gamma, strategy="coupled")
    assert out["html"] == tmp_path / "token_views" / "step_00050.html"
    assert out["png"] == tmp_path / "token_views" / "step_00050.png"
    assert out["logged"] == []  # no tracker installed / active, no writer: files only
    with Image.open(out["png"]) as im:
        im.verify()
    page = out["html"].read_text(encoding="utf-8")
    assert page.count('<span class="t') == N
    for tok in (" lays", " eggs", " 13"):
        assert f">{tok}</span>" in page
    assert "&lt;|im_end|&gt;" in page and "<|im_end|>" not in page  # tokens are escaped
    assert f"WAAD {float(waad[0]):.3f}" in page and "γ[coupled] 1.500" in page
    assert "gamma:coupled" in page and "data:image/png;base64," in page  # PNG embedded: one self-contained file
    assert "<script src" not in page and "<link" not in page


def test_log_token_view_logs_to_active_trackers(tmp_path, fake_trackers):
    waad, fai, gamma = _stats()
    writer = FakeWriter()
    out = log_token_view(tmp_path, 7, TOKENS, waad, fai, gamma, strategy="global_anchor", tensorboard_writer=writer)
    assert out["logged"] == ["wandb", "trackio", "tensorboard"]
    (payload,) = fake_trackers["wandb"]
    assert payload["train/global_step"] == 7
    assert payload["attncredit/token_view"][0] == "html" and " eggs" in payload["attncredit/token_view"][1]
    assert payload["attncredit/token_view_plot"] == ("image", str(out["png"]))
    (payload,) = fake_trackers["trackio"]
    assert payload["attncredit/token_view_plot"] == ("image", str(out["png"])) and payload["train/global_step"] == 7
    (image,) = writer.images
    assert image[0] == "attncredit/token_view" and image[2] == 7 and image[3] == "HWC" and image[1][2] == 3
    (text,) = writer.texts
    assert "' eggs'" in text[1] and "1.500" in text[1]


def test_log_token_view_skips_inactive_and_failing_trackers(tmp_path, fake_trackers, monkeypatch, caplog):
    sys.modules["wandb"].run = None  # installed, but no run
    sys.modules["trackio"].log = lambda payload: (_ for _ in ()).throw(RuntimeError("trackio is down"))
    waad, fai, gamma = _stats()
    with caplog.at_level(logging.WARNING):
        out = log_token_view(tmp_path, 3, TOKENS, waad, fai, gamma, trackers=["wandb", "trackio", "tensorboard"])
    assert out["logged"] == []
    assert "trackio is down" in caplog.text
    assert out["html"].exists() and out["png"].exists()
    assert log_token_view(tmp_path, 4, TOKENS, gamma=gamma, trackers=())["logged"] == []  # gamma alone is fine


def test_log_token_view_rejects_bad_input(tmp_path):
    waad, fai, gamma = _stats()
    with pytest.raises(ValueError, match="one per token"):
        log_token_view(tmp_path, 0, TOKENS[:-1], waad, fai, gamma)
    with pytest.raises(ValueError, match="at least one"):
        log_token_view(tmp_path, 0, TOKENS)
    with pytest.raises(ValueError, match="unknown trackers"):
        log_token_view(tmp_path, 0, TOKENS, waad, fai, gamma, trackers=["mlflow"])


class _Tok:
    def decode(self, ids):
        return "".join(TOKENS[i] for i in ids)


def _fake_trainer(tmp_path, main=True, writer=None):
    callbacks = [types.SimpleNamespace(tb_writer=writer)] if writer is not None else [types.SimpleNamespace()]
    return types.SimpleNamespace(
        accelerator=types.SimpleNamespace(is_main_process=main),
        processing_class=_Tok(),
        args=types.SimpleNamespace(output_dir=str(tmp_path), credit_top_quantile=0.4, credit_gamma_amp=1.5),
        state=types.SimpleNamespace(global_step=100),
        callback_handler=types.SimpleNamespace(callbacks=callbacks),
    )


def test_trainer_token_view_uses_the_first_completion_and_its_mask(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    monkeypatch.delitem(sys.modules, "trackio", raising=False)
    waad, fai, gamma = _stats()
    c = N + 3  # right padding after the completion
    ids = torch.zeros(2, c, dtype=torch.long)
    ids[0, :N] = torch.arange(N)
    mask = torch.zeros(2, c)
    mask[0, :N] = 1
    mask[1] = 1
    big = (torch.cat([waad, torch.zeros(3)])[None].repeat(2, 1), torch.cat([fai, torch.zeros(3)])[None].repeat(2, 1),
           torch.cat([gamma, torch.ones(3)])[None].repeat(2, 1))
    writer = FakeWriter()
    trainer = _fake_trainer(tmp_path, writer=writer)
    assert tensorboard_writer_of(trainer) is writer
    out = trainer_token_view(trainer, ids, *big, mask, strategy="coupled")
    assert out["html"].name == "step_00100.html" and out["logged"] == ["tensorboard"]
    page = out["html"].read_text(encoding="utf-8")
    assert page.count('<span class="t') == N  # padding dropped
    assert trainer_token_view(_fake_trainer(tmp_path, main=False), ids, *big, mask, strategy="coupled") is None
    out = trainer_token_view(_fake_trainer(tmp_path / "b"), ids, None, None, big[2], mask, strategy="random")
    assert out["png"].exists() and "γ[random]" in out["html"].read_text(encoding="utf-8")


def test_trainer_writes_a_token_view_every_credit_log_every_steps(tiny_qwen2, tmp_path):
    from datasets import Dataset

    from attncredit import AnchorGRPOConfig, AnchorGRPOTrainer
    from attncredit.errors import ConfigError
    from attncredit.models import load_tokenizer

    def digit_reward(completions, **kwargs):
        texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
        return [sum(ch.isdigit() for ch in t) / max(len(t), 1) for t in texts]

    def run(out, every):
        args = AnchorGRPOConfig(
            output_dir=str(out), max_steps=3, per_device_train_batch_size=4, num_generations=4,
            max_completion_length=12, learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none",
            use_cpu=True, seed=0, bf16=False, credit_strategy="coupled", credit_log_every=every,
        )
        prompts = Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}]} for i in range(8)])
        AnchorGRPOTrainer(model=str(tiny_qwen2), reward_funcs=digit_reward, args=args, train_dataset=prompts,
                          processing_class=load_tokenizer(str(tiny_qwen2))).train()
        return out / "token_views"

    views = run(tmp_path / "a", 2)
    assert sorted(p.name for p in views.iterdir()) == ["step_00000.html", "step_00000.png", "step_00002.html",
                                                       "step_00002.png"]
    page = (views / "step_00002.html").read_text(encoding="utf-8")
    assert "γ[coupled]" in page and "WAAD" in page and "FAI" in page
    assert not run(tmp_path / "b", 0).exists()
    with pytest.raises(ConfigError, match="credit_log_every"):
        AnchorGRPOConfig(output_dir=str(tmp_path / "c"), use_cpu=True, bf16=False, credit_log_every=-1)
