"""The critic: a causal-LM backbone (transformer without its LM head) and a scalar value head.

``V_t`` for completion token ``t`` is the head applied to the backbone's hidden state at the position *before*
``t`` (the state from which token ``t`` is chosen), as verl's critic. A critic folder is the backbone's
``save_pretrained`` output plus ``value_head.safetensors``; ``ValueModel.from_pretrained`` reads such a folder, or
any causal-LM folder / hub id, whose backbone it takes with a fresh head (weights and bias 0, so ``V = 0`` at first).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import ConfigError, first_line

VALUE_HEAD_FILE = "value_head.safetensors"


class ValueModel(nn.Module):
    """``backbone`` (a transformers base model) + ``value_head`` (hidden -> 1) in the backbone's dtype (FSDP2 shards
    the two together and needs one dtype); values come out in float32."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.get_text_config().hidden_size
        self.value_head = nn.Linear(hidden, 1, dtype=backbone.dtype)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    @property
    def config(self):
        return self.backbone.config

    @property
    def _no_split_modules(self):
        """The backbone's layer classes: FSDP2's transformer auto-wrap policy shards the critic layer by layer."""
        return self.backbone._no_split_modules

    @classmethod
    def from_pretrained(cls, path: str, **model_init_kwargs) -> ValueModel:
        """The backbone of the model at ``path`` (critic folder, causal-LM folder or hub id) and its value head,
        if ``path`` holds one (else a fresh one)."""
        from transformers import AutoModel

        try:
            backbone = AutoModel.from_pretrained(path, **model_init_kwargs)
        except OSError as e:
            raise ConfigError(f"critic_model_name_or_path={path!r} cannot be loaded: {first_line(e)}") from e
        model = cls(backbone)
        head = Path(path) / VALUE_HEAD_FILE
        if head.is_file():
            model.value_head.load_state_dict(load_file(str(head)))
        return model

    @classmethod
    def from_causal_lm(cls, causal_lm: nn.Module) -> ValueModel:
        """A critic whose backbone is a copy of ``causal_lm``'s (a transformers ``*ForCausalLM``)."""
        import copy

        return cls(copy.deepcopy(causal_lm.base_model))

    def save_pretrained(self, folder: str, state_dict: dict | None = None) -> None:
        """Write the backbone (``save_pretrained``) and ``value_head.safetensors`` to ``folder``."""
        state_dict = state_dict if state_dict is not None else self.state_dict()
        backbone = {k[len("backbone.") :]: v for k, v in state_dict.items() if k.startswith("backbone.")}
        head = {k[len("value_head.") :]: v.contiguous() for k, v in state_dict.items() if k.startswith("value_head.")}
        os.makedirs(folder, exist_ok=True)
        self.backbone.save_pretrained(folder, state_dict=backbone)
        save_file(head, os.path.join(folder, VALUE_HEAD_FILE))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int, **vision_inputs
    ) -> torch.Tensor:
        """Values (B, logits_to_keep) of the states before the last ``logits_to_keep`` tokens, in float32.

        ``vision_inputs`` (``pixel_values``, ``image_grid_thw``, ...) go to a vision-language backbone as its own
        forward takes them, so that the values of a rollout with images see the images."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **vision_inputs
        ).last_hidden_state
        hidden = hidden[:, -logits_to_keep - 1 : -1]
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()
