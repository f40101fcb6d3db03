import math

import pytest
import torch

from mdsrec.config import DataConfig, EvalConfig
from mdsrec.data.protocol import Batch, Split
from mdsrec.evaluation.evaluator import evaluate, exclude_history
from mdsrec.evaluation.metrics import metrics_from_ranks
from mdsrec.evaluation.ranking import target_ranks
from mdsrec.models.base import SequentialRecommender, mask_padding_column


def test_ranks_hand_computed() -> None:
    scores = mask_padding_column(torch.tensor([[0.0, 0.9, 0.5, 0.7, 0.1], [0.0, 0.2, 0.2, 0.2, 0.3]]))
    ranks = target_ranks(scores, torch.tensor([3, 2]))
    # user 0: 0.9 > 0.7 -> rank 2; user 1: ties with items 1 and 3 and item 4 higher -> pessimistic rank 4
    assert ranks.tolist() == [2, 4]


def test_metrics_hand_computed() -> None:
    m = metrics_from_ranks(torch.tensor([1, 3, 11, 25]), [10, 20])
    assert m["recall@10"] == pytest.approx(2 / 4)
    assert m["recall@20"] == pytest.approx(3 / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(4)) / 4)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(12)) / 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 3) / 4)
    assert m["mrr@20"] == pytest.approx((1 + 1 / 3 + 1 / 11) / 4)


def test_nan_scores_rejected() -> None:
    with pytest.raises(FloatingPointError):
        target_ranks(torch.tensor([[float("-inf"), float("nan"), 1.0]]), torch.tensor([2]))


def test_padding_target_rejected() -> None:
    with pytest.raises(ValueError, match="padding"):
        target_ranks(mask_padding_column(torch.zeros(1, 4)), torch.tensor([0]))


class FixedScorer(SequentialRecommender):
    """A hand-written scorer over n items (no parameters): subclasses define score_all."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n


class Constant(FixedScorer):
    name = "constant"

    def score_all(self, batch: Batch) -> torch.Tensor:
        return mask_padding_column(torch.zeros(batch.items.size(0), self.n + 1))


class Oracle(FixedScorer):
    """Scores the target highest, and the padding item even higher (which must be ignored)."""

    name = "oracle"

    def score_all(self, batch: Batch) -> torch.Tensor:
        s = torch.zeros(batch.items.size(0), self.n + 1)
        assert batch.target is not None
        s.scatter_(1, batch.target.view(-1, 1), 1.0)
        s[:, 0] = 100.0
        return mask_padding_column(s)


def test_constant_model_scores_about_zero(tiny_data) -> None:
    split = Split(tiny_data.sequences)
    m = evaluate(Constant(tiny_data.num_items), split, "test", DataConfig(), EvalConfig())
    assert all(v == 0.0 for v in m.values())  # 60 items: every tie ranks the target last (> 20)


def test_oracle_is_perfect_and_padding_never_ranked(tiny_data) -> None:
    split = Split(tiny_data.sequences)
    m = evaluate(Oracle(tiny_data.num_items), split, "valid", DataConfig(), EvalConfig())
    assert m["recall@10"] == 1.0 and m["ndcg@10"] == pytest.approx(1.0) and m["mrr@20"] == pytest.approx(1.0)


def test_exclude_history_keeps_target() -> None:
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 1.0]])
    batch = Batch(items=torch.tensor([[1, 3, 0]]), lengths=torch.tensor([2]), target=torch.tensor([3]))
    out = exclude_history(scores, batch)
    assert torch.isneginf(out[0, 1]) and torch.isneginf(out[0, 0])
    assert out[0, 3] == 3.0  # the target was in the history but stays rankable
    assert target_ranks(out, batch.target).tolist() == [2]  # only item 2 (4.0) is above it now


class Flat(FixedScorer):
    """Scores item i as i (so higher ids rank first)."""

    name = "flat"

    def score_all(self, batch: Batch) -> torch.Tensor:
        return mask_padding_column(torch.arange(self.n + 1, dtype=torch.float).repeat(batch.items.size(0), 1))


def test_exclude_history_uses_the_whole_history_not_the_window() -> None:
    # history 9 8 7 6 (then target 1); with max_len 2 the model sees only 7 6, but 9 and 8 are history too
    split = Split([__import__("numpy").array([9, 8, 7, 6, 1, 5])])
    cfg = DataConfig(max_len=2)
    ranks = {}
    for flag in (False, True):
        m = evaluate(Flat(9), split, "valid", cfg, EvalConfig(ks=[1, 5, 9], exclude_history=flag))
        ranks[flag] = m["mrr@9"]
    assert ranks[False] == pytest.approx(1 / 9)  # items 2..9 all score above item 1
    assert ranks[True] == pytest.approx(1 / 5)  # 9, 8, 7, 6 excluded: 5, 4, 3, 2 remain above
