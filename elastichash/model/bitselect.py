"""Choose the 64 short-code bits from a sample of long codes (ElasticHash's bit selection).

Four groups of 16 distinct positions: bits as balanced as possible, weakly correlated with one
another and especially inside a group (a subcode's 16 bits should spread the codes over the
65536 buckets). Greedy choice by balance + correlation, then Kernighan-Lin style pairwise swaps
between groups to lower the within-group |correlation|. Deterministic: ties break by position.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from elastichash import codes

log = logging.getLogger(__name__)

GROUPS = codes.NUM_SUBCODES
GROUP_SIZE = codes.SUBCODE_BITS


def bit_stats(long_codes: npt.ArrayLike) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(balance per bit, |correlation| matrix) of (N, 32) packed codes; constant bits get 1."""
    bits = np.unpackbits(np.asarray(long_codes, dtype=np.uint8), axis=-1).astype(np.float64)
    balance = bits.mean(axis=0)
    centred = bits - balance
    std = np.sqrt((centred**2).mean(axis=0))
    safe = np.where(std > 0, std, 1.0)
    corr = np.abs((centred.T @ centred) / len(bits) / np.outer(safe, safe))
    dead = std == 0
    corr[dead, :] = 1.0
    corr[:, dead] = 1.0
    np.fill_diagonal(corr, 0.0)
    return balance, corr


def select_short_bits(long_codes: npt.ArrayLike, corr_weight: float = 0.5) -> tuple[int, ...]:
    """64 distinct positions, MSB-first order of the short code (group g is bits 16g..16g+15)."""
    arr = np.asarray(long_codes, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != codes.LONG_BYTES or len(arr) < 2:
        raise ValueError(f"need (N >= 2, {codes.LONG_BYTES}) packed codes, got {arr.shape}")
    balance, corr = bit_stats(arr)
    imbalance = np.abs(balance - 0.5)
    n_bits = corr.shape[0]
    chosen: list[int] = []
    max_corr = np.zeros(n_bits)
    free = np.ones(n_bits, dtype=bool)
    for _ in range(GROUPS * GROUP_SIZE):
        cost = np.where(free, imbalance + corr_weight * max_corr, np.inf)
        pick = int(np.argmin(cost))  # argmin: lowest position on ties
        chosen.append(pick)
        free[pick] = False
        max_corr = np.maximum(max_corr, corr[pick])
    groups = partition(chosen, corr)
    positions = tuple(int(p) for g in groups for p in sorted(g))
    log.info(
        "selected short bits: balance %.3f..%.3f, mean within-group |corr| %.4f",
        balance[list(positions)].min(),
        balance[list(positions)].max(),
        within_group_corr(positions, corr),
    )
    return positions


def within_group_corr(
    positions: tuple[int, ...] | list[int], corr: npt.NDArray[np.float64]
) -> float:
    total, pairs = 0.0, 0
    for g in range(GROUPS):
        idx = list(positions[g * GROUP_SIZE : (g + 1) * GROUP_SIZE])
        sub = corr[np.ix_(idx, idx)]
        total += float(sub.sum()) / 2
        pairs += GROUP_SIZE * (GROUP_SIZE - 1) // 2
    return total / pairs


def partition(chosen: list[int], corr: npt.NDArray[np.float64]) -> list[list[int]]:
    groups = [chosen[g::GROUPS] for g in range(GROUPS)]  # round-robin spreads the best bits
    for _ in range(500):
        best: tuple[float, int, int, int, int] | None = None
        for ga in range(GROUPS):
            for gb in range(ga + 1, GROUPS):
                a, b = np.array(groups[ga]), np.array(groups[gb])
                # moving x out of A into B and y out of B into A
                in_a = corr[np.ix_(a, a)].sum(axis=1)
                in_b = corr[np.ix_(b, b)].sum(axis=1)
                a_to_b = corr[np.ix_(a, b)]
                # delta[i,j] = (corr(x,B\\y) - corr(x,A\\x)) + (corr(y,A\\x) - corr(y,B\\y))
                delta = (a_to_b.sum(axis=1)[:, None] - a_to_b - in_a[:, None]) + (
                    a_to_b.sum(axis=0)[None, :] - a_to_b - in_b[None, :]
                )
                flat = int(np.argmin(delta))
                i, j = divmod(flat, delta.shape[1])
                if delta[i, j] < -1e-12 and (best is None or delta[i, j] < best[0]):
                    best = (float(delta[i, j]), ga, i, gb, j)
        if best is None:
            break
        _, ga, i, gb, j = best
        groups[ga][i], groups[gb][j] = groups[gb][j], groups[ga][i]
    return groups


def add_thresholds(model: Any, output: str, thresholds: npt.NDArray[np.float64]) -> None:
    """Subtract per-bit ``thresholds`` from ``output`` inside the graph (in place).

    Used to re-centre a model on a collection: with each threshold the sample's median
    pre-activation, every bit is 1 for half of the sample.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    raw = f"{output}_uncentred"
    for node in graph.node:
        node.output[:] = [raw if o == output else o for o in node.output]
        node.input[:] = [raw if i == output else i for i in node.input]
    name = f"{output}_thresholds"
    if any(init.name == name for init in graph.initializer):
        name = f"{name}_{len(graph.initializer)}"
    graph.initializer.append(numpy_helper.from_array(thresholds.astype(np.float32), name))
    graph.node.append(helper.make_node("Sub", [raw, name], [output], name=f"{output}_recentre"))


def write_short_bits(
    model_path: Path,
    positions: tuple[int, ...],
    out: Path | None = None,
    thresholds: npt.NDArray[np.float64] | None = None,
) -> Path:
    """Store ``positions`` in the model's metadata (atomically), checking the contract after."""
    import onnx

    from elastichash.model import contract
    from elastichash.model.default import atomic_write

    model = onnx.load(str(model_path))
    if thresholds is not None:
        spec = contract.spec_from_model(model, require_short=False)
        add_thresholds(model, spec.code_output, thresholds)
    contract.check_short_bits(positions)
    contract.set_metadata(model, {contract.K_SHORT_BITS: ",".join(str(p) for p in positions)})
    data = model.SerializeToString()
    contract.spec_from_model(onnx.load_from_string(data))
    target = out or model_path
    atomic_write(target, data)
    return target
