"""Attention statistics of the policy: head distance (Eq. 7), WAAD (Eq. 9) and FAI (Eq. 10); docs/method.md."""

from .groups import HeadGroups, group_token_stats, select_head_groups
from .probes import probe_layers
from .recording import (
    ATTN_IMPLEMENTATION,
    EAGER_IMPLEMENTATION,
    RecordingUnsupportedError,
    attention_layer_types,
    enable_recording,
    model_probe_layers,
    record_attention,
    register_attention_function,
)
from .stats import attention_stats
from .types import AttentionStats

__all__ = [
    "ATTN_IMPLEMENTATION",
    "AttentionStats",
    "EAGER_IMPLEMENTATION",
    "HeadGroups",
    "RecordingUnsupportedError",
    "attention_layer_types",
    "attention_stats",
    "enable_recording",
    "group_token_stats",
    "model_probe_layers",
    "probe_layers",
    "record_attention",
    "register_attention_function",
    "select_head_groups",
]
