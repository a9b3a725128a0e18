"""Probe-layer choice (docs/method.md, "Probe layers") and local/global head groups (Eq. 7-8)."""

import numpy as np
import pytest
import torch

from attncredit.attention import AttentionStats
from attncredit.attention.groups import group_size, group_token_stats, select_head_groups
from attncredit.attention.probes import probe_layers


@pytest.mark.parametrize(
    "num_layers, expected",
    [
        (36, [12, 15, 18, 21, 24]),  # Qwen3-4B/8B: the paper's reading
        (28, [9, 11, 14, 16, 18]),  # 9, 11.25, 13.5, 15.75, 18 rounded half up
        (30, [10, 13, 15, 18, 20]),  # 12.5 -> 13, 17.5 -> 18 (half up, not half to even)
        (6, [2, 3, 4]),  # 2, 2.5, 3, 3.5, 4: duplicates dropped
        (3, [1, 2]),
        (1, [0]),
    ],
)
def test_default_probe_layers(num_layers, expected):
    assert probe_layers(num_layers) == expected


def test_probe_layer_count_and_explicit_lists():
    assert probe_layers(36, count=1) == [18]
    assert probe_layers(36, count=3) == [12, 18, 24]
    assert probe_layers(36, count=13) == list(range(12, 25))
    assert probe_layers(36, explicit=[24, 3, np.int64(12)]) == [3, 12, 24]
    assert probe_layers(6, count=99, explicit=(5, 0)) == [0, 5]  # count is ignored


@pytest.mark.parametrize(
    "explicit, match",
    [
        ([12, 36], r"\[0, 35\].*\[36\]"),
        ([-1], r"\[0, 35\]"),
        ([12, 12, 15], r"distinct.*\[12\]"),
        ([], "empty"),
        ([12.0], r"\[12\.0\]"),
        ([True], "True"),
        ("12", "list"),
        (12, "list"),
    ],
)
def test_bad_explicit_probe_layers(explicit, match):
    with pytest.raises(ValueError, match=match):
        probe_layers(36, explicit=explicit)


@pytest.mark.parametrize("num_layers, count", [(0, 5), (-3, 5), (2.0, 5), (36, 0), (36, 2.5)])
def test_bad_probe_layer_arguments(num_layers, count):
    with pytest.raises(ValueError):
        probe_layers(num_layers, count)


@pytest.mark.parametrize(
    "heads, quantile, k",
    [(160, 0.3, 48), (20, 0.3, 6), (12, 0.3, 4), (10, 0.25, 3), (4, 0.3, 1), (2, 0.5, 1), (3, 0.5, 1), (1, 0.3, 1)],
)
def test_group_size(heads, quantile, k):
    assert group_size(heads, quantile) == k


# two sequences, 2 layers x 3 heads; flat head index = layer * 3 + head
D = torch.tensor(
    [
        [[5.0, 1.0, 3.0], [0.0, 9.0, 2.0]],
        [[2.0, 2.0, 2.0], [7.0, 1.0, 2.0]],  # ties at 2.0: lower flat index is "more local"
    ]
)


def _flat_set(mask):
    return [set(torch.nonzero(row.flatten()).flatten().tolist()) for row in mask]


def test_head_groups_per_sequence():
    local, glob = select_head_groups(D, quantile=0.34, per="sequence")  # k = round(2.04) = 2
    assert local.shape == glob.shape == D.shape and local.dtype == torch.bool
    assert _flat_set(local) == [{3, 1}, {4, 0}]
    assert _flat_set(glob) == [{0, 4}, {5, 3}]


def test_head_groups_per_batch():
    # batch-mean d = [3.5, 1.5, 2.5, 3.5, 5.0, 2.0]: ascending 1, 5, 2, 0, 3, 4 (the 3.5 tie: 0 before 3)
    local, glob = select_head_groups(D, quantile=0.34, per="batch")
    assert _flat_set(local) == [{1, 5}, {1, 5}]
    assert _flat_set(glob) == [{3, 4}, {3, 4}]
    local[0, 0, 0] = True  # the rows are independent tensors, not views of one another
    assert not local[1, 0, 0]


def test_head_groups_never_overlap_and_ties_are_deterministic():
    d = torch.zeros(4, 5, 8)  # all tied
    local, glob = select_head_groups(d, quantile=0.5)
    assert _flat_set(local) == [set(range(20))] * 4 and _flat_set(glob) == [set(range(20, 40))] * 4
    local, glob = select_head_groups(torch.rand(3, 1, 3), quantile=0.5)  # 1.5 -> 2, capped at 3 // 2 = 1
    assert local.sum(dim=(1, 2)).tolist() == [1, 1, 1] and not bool((local & glob).any())


@pytest.mark.parametrize("quantile, per", [(0.0, "sequence"), (0.6, "sequence"), (True, "batch"), (0.3, "heads")])
def test_bad_grouping_arguments(quantile, per):
    with pytest.raises(ValueError):
        select_head_groups(D, quantile, per)


def _stats(seed, b=2, h=3, n=7):
    g = torch.Generator().manual_seed(seed)
    return AttentionStats(
        waad=torch.rand(b, h, n, generator=g) * 10, fai=torch.rand(b, h, n, generator=g), head_distance=None
    )


@pytest.mark.parametrize("per", ["sequence", "batch"])
def test_group_token_stats_average_the_selected_heads(per):
    stats = {}
    for i, layer in enumerate([15, 9]):  # given out of order: layers are sorted
        s = _stats(i)
        s.head_distance = D[:, [9, 15].index(layer)].clone()
        stats[layer] = s
    groups = group_token_stats(stats, quantile=0.34, per=per)
    assert groups.layers == [9, 15]
    torch.testing.assert_close(groups.head_distance, D)
    local, glob = select_head_groups(D, 0.34, per)
    assert torch.equal(groups.local_mask, local) and torch.equal(groups.global_mask, glob)
    waad = torch.stack([stats[9].waad, stats[15].waad], dim=1)  # [B, L, H, N]
    fai = torch.stack([stats[9].fai, stats[15].fai], dim=1)
    for b in range(2):  # Eq. 8 literally: the plain mean over the group's (layer, head) pairs
        torch.testing.assert_close(groups.waad[b], waad[b][local[b]].mean(0))
        torch.testing.assert_close(groups.fai[b], fai[b][glob[b]].mean(0))
    assert groups.waad.shape == groups.fai.shape == (2, 7)
    # batch-mean ranking, labelled with the layer ids, for logging
    assert groups.batch_groups() == {"local": [[9, 1], [15, 2]], "global": [[15, 0], [15, 1]]}


def test_group_token_stats_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        group_token_stats({})
    a, b = _stats(0), _stats(1, n=8)
    a.head_distance, b.head_distance = torch.rand(2, 3), torch.rand(2, 3)
    with pytest.raises(ValueError, match="layer 5"):
        group_token_stats({4: a, 5: b})


def test_attention_package_has_no_import_circle():
    """Relative imports inside attncredit/attention form a DAG (types.py and masks.py import nothing from it)."""
    import ast
    from pathlib import Path

    import attncredit.attention as package

    folder = Path(package.__file__).parent
    graph = {}
    for path in folder.glob("*.py"):
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [alias.name for alias in node.names]
                edges |= {name.split(".")[0] for name in names if (folder / f"{name.split('.')[0]}.py").exists()}
        graph[path.stem] = edges
    assert graph["types"] == set() and graph["masks"] == set()
    done, stack = set(), []

    def visit(module):
        assert module not in stack, f"import circle: {' -> '.join(stack[stack.index(module):] + [module])}"
        if module in done:
            return
        stack.append(module)
        for other in graph[module]:
            visit(other)
        stack.pop()
        done.add(module)

    for module in graph:
        visit(module)
