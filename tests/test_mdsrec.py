"""MDSRec (arXiv 2412.08103): per-prefix interest-centralized attention, causality, Gumbel noise only in training,
ablation switches, reproducible graphs, any number of modalities (tiny, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mdsrec.config import DataConfig, resolve_config
from mdsrec.data.graphs import cooccurrence, normalize_adjacency
from mdsrec.data.processed import ModalityInfo, load_processed, write_processed
from mdsrec.data.protocol import Batch, Split, build_train_rows, train_batches
from mdsrec.errors import ConfigError
from mdsrec.models import DataInfo, build_model
from mdsrec.models.ica import ICALayer
from mdsrec.models.mdsrec import MDSRec, MDSRecConfig
from mdsrec.training.trainer import make_experiment
from tests.conftest import TINY_MODEL

# init_std 0.3: at the default 0.02 the folded ICA map W2 W1 U is ~1e-4 at D = 16 and the centres barely move the
# scores, so a broken per-prefix ICA would pass within tolerance. Here gamma E_c is ~0.6 of |e_m|.
TINY = {**TINY_MODEL["mdsrec"], "num_layers": 2, "init_std": 0.3}


def info_of(data, max_len: int = 8, features: dict[str, np.ndarray] | None = None) -> DataInfo:
    split = Split(data.sequences)
    train = [split.train_part(u) for u in range(split.num_users)]
    return DataInfo(data.num_items, max_len, data.features if features is None else features, train)


def make(data, max_len: int = 8, features: dict[str, np.ndarray] | None = None, **over) -> MDSRec:
    torch.manual_seed(0)
    model = build_model({"name": "mdsrec", **TINY, **over}, info_of(data, max_len, features))
    assert isinstance(model, MDSRec)
    return model


def random_items(n_items: int, b: int = 3, n: int = 8, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, n_items + 1, (b, n), generator=g)


@pytest.mark.parametrize(
    "over", [{}, {"share_encoders": True}, {"num_layers": 3, "ica_activation": "sigmoid"}]
)
def test_one_pass_equals_every_prefix_separately(tiny_data, over) -> None:
    model = make(tiny_data, **over).eval()
    items = random_items(tiny_data.num_items)
    full = model.prefix_scores(items, torch.full((3,), 8))  # [B, L, N+1]
    out = model.represent(items, torch.full((3,), 8), torch.arange(8).expand(3, -1))
    assert (out.e_tilde[0] - out.e_m[0]).norm() > 0.1 * out.e_m[
        0
    ].norm()  # ICA matters here, so this can fail
    for p in range(1, 9):
        alone = model.score_all(Batch(items[:, :p], torch.full((3,), p)))  # the prefix as its own history
        torch.testing.assert_close(full[:, p - 1], alone, rtol=1e-4, atol=1e-5)


def test_loss_at_every_position_equals_loss_of_single_target_rows(tiny_data) -> None:
    model = make(tiny_data).eval()
    items = random_items(tiny_data.num_items, b=2, n=6)
    targets = random_items(tiny_data.num_items, b=2, n=6, seed=2)
    one_pass = model.compute_loss(Batch(items, torch.full((2,), 6), targets))
    rows, tgts = [], []
    for b in range(2):
        for p in range(1, 7):
            row, t = torch.zeros(6, dtype=torch.long), torch.zeros(6, dtype=torch.long)
            row[:p], t[p - 1] = items[b, :p], targets[b, p - 1]
            rows.append(row)
            tgts.append(t)
    lengths = torch.tensor([p for _ in range(2) for p in range(1, 7)])
    materialised = model.compute_loss(Batch(torch.stack(rows), lengths, torch.stack(tgts)))
    torch.testing.assert_close(one_pass, materialised, rtol=1e-5, atol=1e-6)


def test_later_items_never_change_earlier_scores(tiny_data) -> None:
    model = make(tiny_data).eval()
    items = random_items(tiny_data.num_items)
    changed = items.clone()
    changed[:, 5:] = random_items(tiny_data.num_items, n=3, seed=7)
    lengths = torch.full((3,), 8)
    before = model.prefix_scores(items, lengths)
    after = model.prefix_scores(changed, lengths)
    torch.testing.assert_close(after[:, :5], before[:, :5])
    assert not torch.allclose(after[:, 5:, 1:], before[:, 5:, 1:])  # the change is visible where it may be


def test_padding_and_what_lies_beyond_the_length_change_nothing(tiny_data) -> None:
    model = make(tiny_data).eval()
    items = random_items(tiny_data.num_items, n=5)
    lengths = torch.tensor([5, 3, 1])
    for b, n in enumerate(lengths.tolist()):
        items[b, n:] = 0
    wider = torch.cat([items, torch.zeros(3, 3, dtype=torch.long)], 1)
    garbage = wider.clone()
    for b, n in enumerate(lengths.tolist()):
        garbage[b, n:] = random_items(tiny_data.num_items, b=1, n=8 - n, seed=b)[0]
    ref = model.score_all(Batch(items, lengths))
    torch.testing.assert_close(model.score_all(Batch(wider, lengths)), ref)
    torch.testing.assert_close(model.score_all(Batch(garbage, lengths)), ref)
    full = model.prefix_scores(garbage, lengths)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(full[b, n - 1], ref[b], rtol=1e-4, atol=1e-5)


def test_gumbel_noise_only_in_training(tiny_data) -> None:
    model = make(tiny_data, dropout=0.0, attn_dropout=0.0)
    items = random_items(tiny_data.num_items)
    lengths = torch.full((3,), 8)
    ends = torch.arange(8).expand(3, -1)
    model.eval()
    b = Batch(items, lengths)
    assert torch.equal(model.score_all(b), model.score_all(b))
    clean = model.represent(items, lengths, ends)
    model.train()
    first, second = model.represent(items, lengths, ends), model.represent(items, lengths, ends)
    for i in range(2):
        torch.testing.assert_close(first.e_m[i], second.e_m[i])  # no dropout: only the noise differs
        torch.testing.assert_close(first.centres[i], clean.centres[i])
        assert not torch.allclose(first.gamma[i], second.gamma[i])
        assert not torch.allclose(first.gamma[i], clean.gamma[i])
        noiseless = (torch.einsum("bpd,bpkd->bpk", clean.e_m[i], clean.centres[i]) / model.cfg.tau).softmax(
            -1
        )
        torch.testing.assert_close(clean.gamma[i], noiseless)


def param_names(model: torch.nn.Module) -> set[str]:
    return {n for n, _ in model.named_parameters()}


def buffer_names(model: torch.nn.Module) -> set[str]:
    return {n for n, _ in model.named_buffers()}


def test_cooccurrence_comes_from_the_training_parts(tiny_data) -> None:
    model = make(tiny_data)
    info = info_of(tiny_data)
    assert info.train_sequences is not None
    o = normalize_adjacency(cooccurrence(info.train_sequences, tiny_data.num_items), "symmetric").tocoo()
    dense = torch.sparse_coo_tensor(model.cooc_idx, model.cooc_val, o.shape, check_invariants=True).to_dense()
    np.testing.assert_allclose(dense.numpy(), o.toarray(), rtol=1e-6)
    e = model.item_emb.weight.detach()
    torch.testing.assert_close(model.bar_id().detach(), 16.0 * torch.from_numpy(o.toarray()) @ e + e)


def test_bar_id_rows_equal_the_full_product_with_the_same_gradients(tiny_data) -> None:
    """The ID channel reads only the batch's rows of E-bar_id (``bar_id_of``): same values and same gradient on
    E_id as indexing the full product, rows without any co-occurrence (padding) included."""
    model = make(tiny_data)
    items = torch.tensor([[3, 0, 3, 7], [12, 5, 0, 0]])  # repeats and padding
    weights = torch.randn(2, 4, 16, generator=torch.Generator().manual_seed(2))
    part = model.bar_id_of(items)  # [2, 4, D]
    (part * weights).sum().backward()
    grad_part = model.item_emb.weight.grad.clone()
    model.zero_grad()
    full = model.bar_id()[items]
    (full * weights).sum().backward()
    torch.testing.assert_close(part, full)
    torch.testing.assert_close(grad_part, model.item_emb.weight.grad)
    assert grad_part[[3, 7, 12, 5]].abs().sum() > 0


@pytest.mark.parametrize("on_bar", [False, True])
def test_represent_computes_bar_id_once(tiny_data, monkeypatch, on_bar: bool) -> None:
    """With graph_on_bar_id the full E-bar_id is computed once and the ID channel reads its rows; without it only
    the batch's rows are computed. Either way the ID channel's input is E-bar_id[S]."""
    model = make(tiny_data, graph_on_bar_id=on_bar).eval()
    items = random_items(tiny_data.num_items)
    calls: list[bool] = []
    real = model.bar_id

    def counting(select=None, e=None):
        calls.append(select is None)
        return real(select, e)

    monkeypatch.setattr(model, "bar_id", counting)
    with torch.no_grad():
        out = model.represent(items, torch.full((3,), 8), torch.arange(8).expand(3, -1))
        ends = torch.arange(8).expand(3, -1)[:, :, None].expand(-1, -1, model.cfg.hidden_size)
        e_id = model.encoder(0)(real()[items])[-1].gather(1, ends)  # [B, P, D]
    assert calls == [on_bar]  # one call: the full table, or only the batch's rows
    # e_s = e_id + sum_m rho_m e_m (Eq. 17)
    e_s = e_id + sum(r * e for r, e in zip(model.rho, out.e_m, strict=True))
    torch.testing.assert_close(out.e_s, e_s)


def dense_buffer(model: MDSRec, idx_name: str, rows: int) -> torch.Tensor:
    """A model's sparse buffer pair (``idx_name`` and its ``_val`` twin) as a dense [rows, N+1] matrix."""
    idx, val = getattr(model, idx_name), getattr(model, idx_name.replace("idx", "val"))
    shape = (rows, model.num_items + 1)
    return torch.sparse_coo_tensor(idx, val, shape, check_invariants=True).to_dense()


def test_no_cooccurrence_through_validation_or_test_targets(tmp_path) -> None:
    """Built the way training builds it (processed files -> make_experiment), O holds no pair that co-occurs only
    through held-out targets: 11 and 12 are user 0's (valid, test) targets; user 1 has 11 in training and 12 as its
    test target; 12 never occurs in a training part. 1 and 2 co-occur in training and are related."""
    sequences = [
        [1, 2, 3, 11, 12],  # train [1, 2, 3], valid 11, test 12
        [4, 11, 5, 6, 12],  # train [4, 11, 5], valid 6, test 12
        [1, 2, 4, 5, 7],
        [3, 6, 7, 8, 9],
        [5, 8, 9, 10, 1],
        [2, 7, 10, 3, 4],
    ]
    n = 12
    feats = np.random.default_rng(0).normal(size=(n + 1, 4)).astype(np.float32)
    feats[0] = 0
    write_processed(
        tmp_path / "d",
        "leak",
        [f"u{u}" for u in range(len(sequences))],
        sequences,
        [str(i) for i in range(1, n + 1)],
        [f"item{i}" for i in range(1, n + 1)],
        {"text": feats},
        [ModalityInfo("text", 4, "dense")],
        {},
    )
    sizes = [f"model.{k}={v}" for k, v in {**TINY, "h": 2, "k": 3}.items()]
    cfg = resolve_config(None, [*sizes, "data.max_len=8"], model="mdsrec")
    model = make_experiment(cfg, load_processed(tmp_path / "d")).model
    assert isinstance(model, MDSRec)
    o = dense_buffer(model, "cooc_idx", n + 1)
    a, b = 11, 12
    assert o[a, b] == 0 and o[b, a] == 0
    assert (o[a, 1:4] == 0).all()  # user 0's valid target is not related to user 0's training items either
    assert (o[b] == 0).all() and (o[:, b] == 0).all()  # 12 is never in a training part
    assert o[a, 4] > 0 and o[a, 5] > 0  # 11 is related through user 1's training part
    assert o[1, 2] > 0 and o[2, 1] > 0  # a pair that co-occurs in training is there


def test_ablation_switches(tiny_data) -> None:
    full = make(tiny_data)
    params, buffers = param_names(full), buffer_names(full)
    assert not torch.equal(full.bar_id(), full.item_emb.weight)

    no_cre = make(tiny_data, use_cre=False)  # w/o CRE: E-bar_id == E_id, no O
    torch.testing.assert_close(no_cre.bar_id(), no_cre.item_emb.weight, rtol=0, atol=0)
    assert param_names(no_cre) == params and buffers - buffer_names(no_cre) == {"cooc_idx", "cooc_val"}

    no_dis = make(tiny_data, use_distance=False)  # w/o DIS: same pattern, other values
    assert torch.equal(no_dis.cooc_idx, full.cooc_idx) and not torch.allclose(no_dis.cooc_val, full.cooc_val)
    assert param_names(no_dis) == params

    no_mrgc = make(tiny_data, use_mrgc=False)  # w/o MRGC: projections instead of graphs
    assert param_names(no_mrgc) - params == {"proj.0.weight", "proj.0.bias", "proj.1.weight", "proj.1.bias"}
    assert params <= param_names(no_mrgc)
    graphs = {f"graph_{w}_{i}" for w in ("idx", "val") for i in range(2)}
    assert buffers - buffer_names(no_mrgc) == graphs
    assert buffer_names(no_mrgc) - buffers == {"features_0", "features_1"}
    feats = no_mrgc.features_0
    torch.testing.assert_close(no_mrgc.item_tables().modal[0], no_mrgc.proj[0](feats))

    no_ica = make(tiny_data, use_ica=False)  # w/o ICA: no centres, e-tilde == e
    assert params - param_names(no_ica) == {n for n in params if n.startswith("ica.")} != set()
    assert param_names(no_ica) <= params
    assert buffers - buffer_names(no_ica) == {f"member_{w}_{i}" for w in ("idx", "val") for i in range(2)}
    no_ica.eval()
    items = random_items(tiny_data.num_items)
    out = no_ica.represent(items, torch.full((3,), 8), torch.arange(8).expand(3, -1))
    assert not out.gamma and not out.centres
    for e_m, e_t in zip(out.e_m, out.e_tilde, strict=True):
        assert torch.equal(e_m, e_t)

    on_bar = make(tiny_data, graph_on_bar_id=True)  # Eq. 6 on E-bar_id: same parameters, other tables
    assert param_names(on_bar) == params
    assert not torch.allclose(on_bar.item_tables().modal[0], full.item_tables().modal[0])

    shared = make(tiny_data, share_encoders=True)
    assert {n.split(".")[1] for n in param_names(shared) if n.startswith("encoders.")} == {"0"}


def test_ablations_change_nothing_else(tiny_data) -> None:
    full = make(tiny_data)
    n1 = tiny_data.num_items + 1
    members = {f"member_{w}_{i}" for w in ("idx", "val") for i in range(2)}
    graphs = {f"graph_{w}_{i}" for w in ("idx", "val") for i in range(2)}
    ref = dict(full.named_buffers())

    # mu_m only enters the modal graphs: k-means runs on the raw features, not on E-bar_m.
    no_mu = make(tiny_data, mu_m=0.0)
    got = dict(no_mu.named_buffers())
    for name in members:
        assert torch.equal(got[name], ref[name]), name
    for i in range(2):
        assert not torch.equal(
            dense_buffer(no_mu, f"graph_idx_{i}", n1), dense_buffer(full, f"graph_idx_{i}", n1)
        )

    # w/o MRGC replaces the graphs only: the centres' membership is untouched.
    got = dict(make(tiny_data, use_mrgc=False).named_buffers())
    for name in members:
        assert torch.equal(got[name], ref[name]), name

    # w/o DIS: O is the normalised count of co-occurring pairs, exactly; the graphs see that O through mu_m.
    no_dis = make(tiny_data, use_distance=False)
    info = info_of(tiny_data)
    assert info.train_sequences is not None
    raw = cooccurrence(info.train_sequences, tiny_data.num_items, distance_weighted=False)
    want = normalize_adjacency(raw, "symmetric").toarray()
    np.testing.assert_array_equal(dense_buffer(no_dis, "cooc_idx", n1).numpy(), want)
    got = dict(no_dis.named_buffers())
    for name in members:
        assert torch.equal(got[name], ref[name]), name
    assert set(got) == set(ref) and graphs <= set(got)


def test_gumbel_softmax_formula(tiny_data) -> None:
    """Training-mode gamma = softmax((log d - log(1 - d) + e_m E_c^T) / tau) with d the model's own uniform draw,
    one rand_like per modality in modality order (re-drawn here from the same seed). tau != 1, so adding the noise
    after dividing by tau, or standard Gumbel noise -log(-log d), would not match."""
    tau = 0.5
    model = make(tiny_data, dropout=0.0, attn_dropout=0.0, tau=tau)  # no dropout: the noise is the only draw
    items = random_items(tiny_data.num_items)
    lengths, ends = torch.full((3,), 8), torch.arange(8).expand(3, -1)
    clean = model.eval().represent(items, lengths, ends)
    model.train()
    torch.manual_seed(123)
    noisy = model.represent(items, lengths, ends)
    torch.manual_seed(123)
    for i in range(2):
        logits = torch.einsum("bpd,bpkd->bpk", clean.e_m[i], clean.centres[i])  # [B, P, K]
        eps = torch.finfo(logits.dtype).eps
        d = torch.rand_like(logits).clamp(eps, 1.0 - eps)
        want = ((torch.log(d) - torch.log(1.0 - d) + logits) / tau).softmax(-1)
        torch.testing.assert_close(noisy.gamma[i], want, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(want, (logits / tau).softmax(-1), atol=1e-3)  # the noise is not negligible
        torch.testing.assert_close(
            noisy.e_tilde[i], noisy.e_m[i] + torch.einsum("bpk,bpkd->bpd", want, noisy.centres[i])
        )


def test_kmeans_seed_changes_the_clusters(tiny_data) -> None:
    """Features without cluster structure: k-means++ from another seed ends in another partition of the items
    (not just renumbered clusters), so kmeans_seed reaches k-means."""
    feats = np.random.default_rng(0).normal(size=(tiny_data.num_items + 1, 6)).astype(np.float32)
    feats[0] = 0

    def partition(model: MDSRec) -> set[frozenset[int]]:
        cluster, item = model.member_idx_0
        return {frozenset(item[cluster == c].tolist()) for c in range(model.cfg.k)}

    first = partition(make(tiny_data, features={"m": feats}, kmeans_seed=0))
    assert len(first) == 4
    assert partition(make(tiny_data, features={"m": feats}, kmeans_seed=1)) != first


@pytest.mark.parametrize("shared", [True, False])
def test_ica_layer_matches_the_equations_written_out(tiny_data, shared: bool) -> None:
    """Eq. 12-15 per prefix, unfolded (Q applied to the centres, U then W1 then W2 applied to the concatenated
    heads), with the shared Q/K/V: for layer-0 centres shared by every prefix and for per-prefix centres (layer >= 2),
    where the layer folds the maps into the keys and values."""
    model = make(tiny_data).eval()
    enc, ica = model.encoder(1), model.ica_layers(0)[0]
    assert isinstance(ica, ICALayer)
    attn = enc.layers[0].attn
    with torch.no_grad():  # non-zero biases, so the folded query bias term is exercised too
        for lin in (attn.q, attn.k, attn.v, ica.w1, ica.w2):
            lin.bias.normal_()
    torch.manual_seed(5)
    ends = [3, 5]  # prefix p sees positions 0..ends[p]
    per_prefix, states = torch.randn(2, 4, 16), torch.randn(1, 6, 16)
    centres = per_prefix[:1, None].expand(1, 1, 4, 16) if shared else per_prefix[None]  # [1, 1 or 2, K, D]
    visible = torch.arange(6)[None, None] <= torch.tensor(ends)[None, :, None]  # [1, 2, 6]
    got = ica(centres, states, attn, visible)[0]  # [2, K, D]
    assert got.shape == (2, 4, 16)
    for i, p in enumerate(ends):
        c = per_prefix[0 if shared else i]  # [K, D]
        heads = []
        for hh in range(2):
            sl = slice(8 * hh, 8 * hh + 8)
            q, k, v = attn.q(c)[:, sl], attn.k(states[0, : p + 1])[:, sl], attn.v(states[0, : p + 1])[:, sl]
            heads.append((q @ k.t() / 8**0.5).softmax(-1) @ v)
        want = F.gelu(ica.w2(ica.w1(ica.u(torch.cat(heads, 1)))))
        torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-5)


def test_ica_layer_l_reads_the_transformer_input_of_layer_l(tiny_data) -> None:
    """Centres of layer l attend over E_u^{m,l-1} (the input of Transformer layer l) with that layer's Q/K/V,
    starting from the cluster means of E-hat_m (Eq. 11-16), for the prefix of the whole sequence."""
    model = make(tiny_data).eval()
    items = random_items(tiny_data.num_items, b=1)
    out = model.represent(items, torch.tensor([8]), torch.tensor([[7]]))
    table = model.item_tables().modal[1]
    cluster, item = model.member_idx_1  # [N] each: (cluster, item) pairs
    means = torch.stack([table[item[cluster == j]].mean(0) for j in range(4)])  # [K, D]
    c = model.encoder(2).ln(means)[None, None]  # [1, 1, K, D] through the encoder's input LayerNorm
    states = model.encoder(2)(table[items])
    for j, ica in enumerate(model.ica_layers(1)):
        c = ica(c, states[j], model.encoder(2).layers[j].attn, torch.ones(1, 1, 8, dtype=torch.bool))
    torch.testing.assert_close(out.centres[1], c)
    torch.testing.assert_close(out.e_m[1][0, 0], states[-1][0, 7])


def test_graphs_and_kmeans_reproducible(tiny_data) -> None:
    a, b = make(tiny_data), make(tiny_data)
    for (name, x), (_, y) in zip(a.named_buffers(), b.named_buffers(), strict=True):
        assert torch.equal(x, y), name
    member = torch.sparse_coo_tensor(
        a.member_idx_0, a.member_val_0, (4, tiny_data.num_items + 1), check_invariants=True
    ).to_dense()
    torch.testing.assert_close(member.sum(1), torch.ones(4))  # each centre is a mean of its items
    assert ((member > 0).sum(0)[1:] == 1).all() and (member[:, 0] == 0).all()  # one cluster per item


@pytest.mark.parametrize("dims", [[5], [3, 8, 12]])
def test_any_number_of_modalities(tiny_data, dims: list[int]) -> None:
    rng = np.random.default_rng(0)
    feats = {
        f"m{i}": rng.normal(size=(tiny_data.num_items + 1, d)).astype(np.float32) for i, d in enumerate(dims)
    }
    for f in feats.values():
        f[0] = 0
    model = make(tiny_data, features=feats)
    assert len(model.item_tables().modal) == len(dims) and model.rho == [1 / len(dims)] * len(dims)
    batch = train_batches(build_train_rows(Split(tiny_data.sequences), 8), DataConfig(batch_size=32), 0)[0]
    loss = model.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.item_emb.weight.grad is not None
    model.eval()
    scores = model.score_all(Batch(batch.items, batch.lengths))
    assert (
        scores.shape == (batch.items.size(0), tiny_data.num_items + 1) and torch.isneginf(scores[:, 0]).all()
    )
    rho = [0.5] + [0.5 / (len(dims) - 1)] * (len(dims) - 1) if len(dims) > 1 else [1.0]
    assert make(tiny_data, features=feats, rho=rho).rho == rho


def test_clear_errors(tiny_data) -> None:
    with pytest.raises(ConfigError, match="at least one modality"):
        make(tiny_data, features={})
    with pytest.raises(ConfigError, match=r"k \(61\) must not exceed the number of items N \(60\)"):
        make(tiny_data, k=61)
    with pytest.raises(ConfigError, match=r"rho has 3 weights but the data set has 2 modalities"):
        make(tiny_data, rho=[0.2, 0.3, 0.5])
    with pytest.raises(ConfigError, match="summing to 1"):
        make(tiny_data, rho=[0.2, 0.3])
    with pytest.raises(ConfigError, match="cooc_norm"):
        make(tiny_data, cooc_norm="both")
    with pytest.raises(ConfigError, match=r"tau"):
        make(tiny_data, tau=0.0)


def test_defaults_follow_the_paper_and_design_notes() -> None:
    cfg = MDSRecConfig()
    assert (cfg.mu_id, cfg.mu_m, cfg.h, cfg.k, cfg.tau, cfg.num_layers, cfg.num_heads) == (
        16.0,
        0.2,
        10,
        32,
        1.0,
        2,
        2,
    )
    assert (cfg.cooc_norm, cfg.graph_norm, cfg.include_self, cfg.graph_on_bar_id) == (
        "symmetric",
        "row",
        True,
        False,
    )
    assert cfg.use_distance and cfg.use_cre and cfg.use_mrgc and cfg.use_ica and not cfg.share_encoders
    assert cfg.ica_activation == "gelu" and cfg.rho is None


def test_ica_maps_keep_the_input_norm_on_average(tiny_data) -> None:
    """Default ica_init_std (1/sqrt(D)): the folded map W2 W1 U keeps the norm of its input on average (it is not an
    isometry: single directions shrink or grow), so the centres carry signal from the first step; at the generic
    init_std 0.02 the map would shrink it by (0.02 sqrt(D))^3, ~250-fold at D = 64."""

    def gain(**over: object) -> float:
        model = make(tiny_data, init_std=0.02, hidden_size=64, **over)
        ica = model.ica_layers(0)[0]
        w = (ica.w2.weight @ ica.w1.weight @ ica.u.weight).detach()  # [D, D]
        x = torch.randn(256, 64, generator=torch.Generator().manual_seed(0))
        return float((x @ w.t()).norm() / x.norm())

    assert 0.5 < gain() < 2.0
    assert gain(ica_init_std=0.02) < 0.01


def test_interest_centres_stay_distinct_with_trained_attention(tiny_data) -> None:
    """E_id at N(0, 0.02) makes raw cluster means ~100x smaller than the LayerNorm-ed states the shared Q/K weights
    are trained on. With peaked (trained-like) attention, normalised centres keep distinct queries, so the K centres
    differ and gamma is not uniform; raw means (ica_center_norm=False) give every centre the same query and collapse
    to one vector -- what a 10-epoch Scientific run without the normalisation showed."""

    def spread(**over: object) -> tuple[float, float]:
        model = make(tiny_data, init_std=0.02, hidden_size=32, **over).eval()
        with torch.no_grad():  # attention as peaked as after training: scale the shared query/key maps up
            for layer in model.encoder(1).layers:
                layer.attn.q.weight.mul_(20.0)
                layer.attn.k.weight.mul_(20.0)
            out = model.represent(
                random_items(tiny_data.num_items, b=4), torch.full((4,), 8), torch.full((4, 1), 7)
            )
        c = out.centres[0][:, 0]  # [B, K, D]
        rel = float((c.std(dim=1).norm(dim=-1) / c.norm(dim=-1).mean(dim=1)).mean())
        return rel, float(out.gamma[0].max() - out.gamma[0].min())

    rel, gap = spread()
    assert rel > 0.02 and gap > 2e-3
    rel_raw, gap_raw = spread(ica_center_norm=False)
    assert rel_raw < 0.01 and rel > 10 * rel_raw and gap > 3 * gap_raw


# --- extensions beyond the paper (ext_*) and the modal part of Eq. 3 ---------------------------------------------


@pytest.mark.parametrize(
    "over",
    [
        {"ext_modal_features": True},
        {"ext_cosine_tau": 0.1},
        {"cooc_norm_modal": "none"},
        {"ext_id_features": True},
    ],
)
def test_extension_switches_change_the_scores_keep_causality_and_train(tiny_data, over) -> None:
    base, model = make(tiny_data).eval(), make(tiny_data, **over).eval()
    items = random_items(tiny_data.num_items)
    lengths = torch.full((3,), 8)
    batch = Batch(items, lengths)
    assert not torch.allclose(base.score_all(batch)[:, 1:], model.score_all(batch)[:, 1:])
    full = model.prefix_scores(items, lengths)
    for p in (1, 4, 8):
        torch.testing.assert_close(
            full[:, p - 1], model.score_all(Batch(items[:, :p], torch.full((3,), p))), rtol=1e-4, atol=1e-5
        )
    split = Split(tiny_data.sequences)
    rows = build_train_rows(split, 8)
    train = train_batches(rows, DataConfig(max_len=8, batch_size=16), epoch_seed=0)[0]
    model.train()
    loss = model.compute_loss(train)
    loss.backward()
    assert torch.isfinite(loss)
    for field, module in (("ext_modal_features", model.ext_features), ("ext_id_features", model.ext_id)):
        if over.get(field):
            assert module is not None
            grads = [p.grad for p in module.parameters()]
            assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("on_bar", [False, True])
def test_ext_id_features_add_each_items_projected_features_to_e_id(tiny_data, on_bar: bool) -> None:
    """With ext_id_features, E_id reads E_id + sum_m W'_m x_m (padding row zero) everywhere; with W' zeroed the
    model scores exactly as the paper's model with the same weights."""
    model = make(tiny_data, ext_id_features=True, graph_on_bar_id=on_bar).eval()
    assert model.ext_id is not None
    e = model.id_table().detach()
    own = sum(model.ext_id.proj[i](model.ext_id.table(i)) for i in range(len(model.ext_id))).detach()
    torch.testing.assert_close(e[1:], model.item_emb.weight.detach()[1:] + own[1:])
    assert torch.equal(e[0], torch.zeros_like(e[0]))
    batch = Batch(random_items(tiny_data.num_items), torch.full((3,), 8))
    with torch.no_grad():
        before = model.score_all(batch)
        for p in model.ext_id.parameters():
            p.zero_()
        zeroed = model.score_all(batch)
        model.ext_id = None  # the paper's model, the same weights otherwise
        paper = model.score_all(batch)
    assert not torch.allclose(before[:, 1:], zeroed[:, 1:])
    torch.testing.assert_close(zeroed, paper)


def test_modal_cooc_norm_changes_only_the_modal_graphs(tiny_data) -> None:
    base, literal = make(tiny_data), make(tiny_data, cooc_norm_modal="none")
    assert torch.equal(base.cooc_val, literal.cooc_val)  # E-bar_id's O unchanged
    assert not torch.equal(base.graph_idx_0, literal.graph_idx_0)
    same = make(tiny_data, cooc_norm_modal="symmetric")  # the default's own normalisation: the same graphs
    assert torch.equal(base.graph_idx_0, same.graph_idx_0) and torch.equal(base.graph_idx_1, same.graph_idx_1)


def test_extension_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="ext_cosine_tau"):
        MDSRecConfig(ext_cosine_tau=-1.0)
    with pytest.raises(ValueError, match="cooc_norm_modal"):
        MDSRecConfig(cooc_norm_modal="rows")


@pytest.mark.parametrize("over", [{}, {"graph_on_bar_id": True}])
def test_item_tables_are_reused_without_gradients_until_a_weight_changes(
    tiny_data, monkeypatch, over
) -> None:
    """Evaluation and serving compute the graph tables once; an optimizer step, a loaded state dict or training
    mode (gradients on) make them current again, and cached scores equal recomputed ones exactly."""
    model = make(tiny_data, **over).eval()
    batch = Batch(random_items(tiny_data.num_items), torch.full((3,), 8))
    computed = []
    real = model._item_tables
    monkeypatch.setattr(model, "_item_tables", lambda: computed.append(1) or real())

    def fresh() -> torch.Tensor:  # gradients on: no cache
        with torch.enable_grad():
            return model.score_all(batch).detach()

    with torch.no_grad():
        first, second = model.score_all(batch), model.score_all(batch)
    assert len(computed) == 1
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    torch.testing.assert_close(first, fresh(), rtol=0, atol=0)
    assert len(computed) == 2  # the grad-enabled call computed its own

    state = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    F.cross_entropy(model.score_all(batch), torch.ones(3, dtype=torch.long)).backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        stepped = model.score_all(batch)
    assert not torch.allclose(stepped, first)
    torch.testing.assert_close(stepped, fresh(), rtol=0, atol=0)

    model.load_state_dict(state)
    with torch.no_grad():
        restored = model.score_all(batch)
    torch.testing.assert_close(restored, first, rtol=0, atol=0)
