"""Large catalogues: the cross-entropy and the evaluation ranks computed over item chunks equal the whole-matrix
path (mdsrec.models.catalogue, ranking.chunked_target_ranks).

Tolerances: the chunked log-sum-exp adds the same terms in another order (per chunk, rescaled by a running
maximum), so losses and gradients agree to float32 rounding (rtol 1e-5, atol 1e-6 on values of order 1e-2..10;
a whole model's parameter gradients, where backpropagation amplifies the rounding, rtol 1e-4, atol 1e-5);
ranks are integers and agree exactly on these random scores, where no two items are within rounding of each other.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mdsrec.config import DataConfig, EvalConfig, TrainConfig, resolve_config
from mdsrec.data.protocol import Batch, Split, build_train_rows, eval_batches, train_batches
from mdsrec.errors import ConfigError
from mdsrec.evaluation.evaluator import diagnose, evaluate, item_train_counts
from mdsrec.evaluation.ranking import chunked_target_ranks, exclusion_mask, masked, target_ranks
from mdsrec.models.catalogue import Chunking, Factors, FactorSum, catalogue_cross_entropy
from mdsrec.training import trainer as trainer_mod
from tests.conftest import make_model

CHUNKED = Chunking(above_items=0, block_elements=70)  # every catalogue chunked, a few items per chunk
TOL = {"rtol": 1e-5, "atol": 1e-6}
MODEL_TOL = {
    "rtol": 1e-4,
    "atol": 1e-5,
}  # gradients through whole models: the rounding is amplified on the way


def _leaves(t: int = 9, n: int = 23, d: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(t, d, generator=g, requires_grad=True), torch.randn(
        n + 1, d, generator=g, requires_grad=True
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("divisor", [1.0, 0.07])
def test_chunked_cross_entropy_equals_the_whole_matrix(reduction, divisor) -> None:
    h, table = _leaves()
    target = torch.tensor([1, 5, 23, 7, 7, 2, 11, 19, 3])

    def run(chunking: Chunking) -> tuple[torch.Tensor, ...]:
        loss = catalogue_cross_entropy(Factors(h, table, divisor), target, chunking, reduction)
        weights = torch.linspace(0.5, 1.5, loss.numel()).view(loss.shape)
        return (loss, *torch.autograd.grad((loss * weights).sum(), (h, table)))

    whole, chunked = run(Chunking()), run(CHUNKED)
    for a, b in zip(chunked, whole, strict=True):
        torch.testing.assert_close(a, b, **TOL)
    y = h @ table.t() / divisor  # the definition: padding column out of the softmax
    y[:, 0] = float("-inf")
    torch.testing.assert_close(whole[0], F.cross_entropy(y, target, reduction=reduction), **TOL)
    assert float(chunked[2][0].abs().sum()) == 0.0  # the padding row gets no gradient


def test_chunk_sizes_do_not_change_the_loss_and_one_item_chunks_work() -> None:
    h, table = _leaves(t=4, n=10)
    target = torch.tensor([1, 2, 10, 4])
    losses = [
        catalogue_cross_entropy(Factors(h, table), target, Chunking(0, 4 * c)).detach()
        for c in (1, 3, 11, 50)
    ]
    for x in losses[1:]:
        torch.testing.assert_close(x, losses[0], **TOL)


def test_a_bias_is_folded_into_one_more_column() -> None:
    """BERT4Rec's output bias: the chunked loss and ranks equal those of q @ t.T + bias."""
    h, table = _leaves()
    bias = torch.randn(24, requires_grad=True)
    target = torch.tensor([1, 5, 23, 7, 7, 2, 11, 19, 3])
    f = Factors(h, table, bias=bias)
    torch.testing.assert_close(f.folded().scores(), h @ table.t() + bias, **TOL)

    def run(chunking: Chunking) -> tuple[torch.Tensor, ...]:
        loss = catalogue_cross_entropy(f, target, chunking, "sum")
        return (loss, *torch.autograd.grad(loss, (h, table, bias)))

    for a, b in zip(run(CHUNKED), run(Chunking()), strict=True):
        torch.testing.assert_close(a, b, **TOL)
    g = f.folded()
    y = (h @ table.t() + bias).detach()
    y[:, 0] = float("-inf")
    assert torch.equal(
        chunked_target_ranks(g.query.detach(), g.table.detach(), target, 5), target_ranks(y, target)
    )


def test_a_sum_of_products_is_scored_as_its_concatenation() -> None:
    """MDSRec's Eq. 22 (y_s + sum rho_m y_m) as one product: chunked equals the sum of the matrices."""
    h1, t1 = _leaves(seed=1)
    h2, t2 = _leaves(seed=2)
    rho = torch.tensor(0.3, requires_grad=True)
    target = torch.tensor([1, 5, 23, 7, 7, 2, 11, 19, 3])
    scores = FactorSum(Factors(h1, t1), ((rho, Factors(h2, t2, 0.5)),))
    torch.testing.assert_close(scores.as_factors().scores(), h1 @ t1.t() + rho * (h2 @ t2.t() / 0.5), **TOL)

    def run(chunking: Chunking) -> tuple[torch.Tensor, ...]:
        loss = catalogue_cross_entropy(scores, target, chunking)
        return (loss, *torch.autograd.grad(loss, (h1, t1, h2, t2, rho)))

    for a, b in zip(run(CHUNKED), run(Chunking()), strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("chunk", [1, 4, 24, 100])
@pytest.mark.parametrize("with_history", [False, True])
def test_chunked_ranks_equal_ranks_of_the_whole_matrix(chunk, with_history) -> None:
    q, table = (t.detach() for t in _leaves(t=6, n=23))
    target = torch.tensor([3, 9, 23, 1, 14, 9])
    # user 1 saw its own target before (it stays rankable); user 2 has no history; item 0 pads
    history = torch.tensor([[2, 5, 0], [9, 4, 17], [0, 0, 0], [22, 21, 20], [1, 2, 3], [5, 5, 6]])
    hist = history if with_history else None
    whole = target_ranks(masked(q @ table.t(), exclusion_mask(23, hist, target)), target)
    got = chunked_target_ranks(q, table, target, chunk, hist)
    assert torch.equal(got, whole)
    assert int(got.min()) >= 1 and int(got.max()) <= 23


def test_chunked_ranks_count_ties_against_the_target_and_refuse_bad_scores() -> None:
    q = torch.ones(2, 1)
    table = torch.ones(6, 1)  # every item scores 1: rank N for any target, as target_ranks
    target = torch.tensor([1, 5])
    assert chunked_target_ranks(q, table, target, 2).tolist() == [5, 5]
    with pytest.raises(ValueError, match="padding id 0"):
        chunked_target_ranks(q, table, torch.tensor([0, 1]), 2)
    table[3] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        chunked_target_ranks(q, table, target, 2)


@pytest.mark.parametrize(
    ("name", "over"),
    [
        ("sasrec", {}),
        ("gru4recf", {}),
        ("mdsrec", {}),
        ("mdsrec", {"fused_loss": "final", "ext_cosine_tau": 0.1}),
    ],
)
def test_a_models_loss_and_gradients_are_the_same_chunked(tiny_data, name, over) -> None:
    model, split = make_model(name, tiny_data, **over)
    model.eval()  # no dropout or Gumbel noise: the two passes see the same function
    batch = next(iter(_train_batches(split)))

    def run(chunking: Chunking) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.chunking = chunking
        model.zero_grad()
        torch.manual_seed(5)  # BERT4Rec's cloze masks: the same in both passes
        loss = model.compute_loss(batch)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    (lw, gw), (lc, gc) = run(Chunking()), run(CHUNKED)
    torch.testing.assert_close(lc, lw, **TOL)
    assert len(gc) == len(gw) > 0
    for a, b in zip(gc, gw, strict=True):
        torch.testing.assert_close(a, b, **MODEL_TOL)


def _train_batches(split: Split) -> list[Batch]:
    return train_batches(build_train_rows(split, 20), DataConfig(max_len=20, batch_size=64), 0)


@pytest.mark.parametrize("name", ["sasrec", "mdsrec", "gru4recf", "bert4rec"])
@pytest.mark.parametrize("exclude", [False, True])
def test_evaluation_is_the_same_chunked(tiny_data, name, exclude) -> None:
    model, split = make_model(name, tiny_data)
    data_cfg = resolve_config(None, ["data.max_len=20", "data.eval_batch_size=16"], model=name).data
    eval_cfg = EvalConfig(exclude_history=exclude)
    counts = item_train_counts(split, tiny_data.num_items)
    whole = diagnose(model, split, "valid", data_cfg, eval_cfg, counts)
    model.chunking = Chunking(above_items=0, block_elements=16 * 7, num_items=tiny_data.num_items)
    calls = []
    real = model.score_all
    model.score_all = lambda b: calls.append(1) or real(b)  # type: ignore[method-assign]
    chunked = diagnose(model, split, "valid", data_cfg, eval_cfg, counts)
    assert evaluate(model, split, "valid", data_cfg, eval_cfg) == whole.metrics
    assert not calls  # the chunked path never built a [B, N+1] matrix through score_all
    assert chunked.metrics == whole.metrics
    assert chunked.channels == whole.channels
    assert chunked.popularity == whole.popularity


def test_the_catalogue_threshold_is_a_checked_operational_setting(tiny_data) -> None:
    with pytest.raises(ConfigError, match="score_chunk_above"):
        TrainConfig(score_chunk_above=-1)
    cfg = trainer_mod.full_config(
        resolve_config(None, ["train.score_chunk_above=7", "model.hidden_size=16"], model="sasrec")
    )
    exp = trainer_mod.make_experiment(cfg, tiny_data)
    assert exp.model.chunking == Chunking(above_items=7, num_items=tiny_data.num_items)
    assert exp.model.chunking.chunk(16) is not None  # 60 items > 7
    assert Chunking(above_items=60, num_items=60).chunk(16) is None  # not above: the whole matrix


def test_a_model_without_products_is_ranked_whole(tiny_data) -> None:
    """MISSRec's fusion gates each item's modality scores (not a product): it keeps the whole-matrix path."""
    model, split = make_model("missrec", tiny_data)
    assert model.score_factors(next(iter(eval_batches(split, "valid", _dc())))) is None
    model.chunking = Chunking(above_items=0, num_items=tiny_data.num_items)
    data_cfg = _dc()
    assert evaluate(model, split, "valid", data_cfg, EvalConfig())  # ranks through score_all
    batch = Batch(torch.tensor([[1, 2, 0]]), torch.tensor([2]))
    assert model.score_all(batch).shape == (1, tiny_data.num_items + 1)


def _dc():
    return resolve_config(None, ["data.max_len=20", "data.eval_batch_size=16"], model="missrec").data
