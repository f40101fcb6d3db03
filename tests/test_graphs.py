"""Item graphs: co-occurrence (hand-computed, brute force, no leakage), top-H cosine neighbours (dense reference,
deterministic ties), normalisations, k-means and the membership matrix."""

import numpy as np
import pytest
import torch

from mdsrec.data.graphs import (
    cooccurrence,
    kmeans,
    membership_matrix,
    neighbour_adjacency,
    normalize_adjacency,
    topk_cosine_neighbours,
)
from mdsrec.data.protocol import Split


def seqs(*rows: list[int]) -> list[np.ndarray]:
    return [np.array(r, dtype=np.int64) for r in rows]


def dense_cooccurrence(sequences: list[np.ndarray], n: int, weighted: bool) -> np.ndarray:
    """Brute-force reference: every pair of positions p < q, float64 sums, float32 at the end."""
    o = np.zeros((n + 1, n + 1))
    for s in sequences:
        for p in range(len(s)):
            for q in range(p + 1, len(s)):
                i, j = int(s[p]), int(s[q])
                if i != j:
                    w = 1.0 / (q - p) if weighted else 1.0
                    o[i, j] += w
                    o[j, i] += w
    return o.astype(np.float32)


def dense_topk(features: np.ndarray, h: int) -> np.ndarray:
    """Reference neighbours [N+1, H+1]: self, then others by cosine descending, equal cosines by lower id."""
    x = features[1:].astype(np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    xn = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    s = xn @ xn.T
    n = len(x)
    out = np.zeros((n + 1, h + 1), dtype=np.int64)
    for i in range(n):
        others = np.array([j for j in range(n) if j != i])
        order = np.lexsort((others, -s[i, others]))  # primary: value descending; then id ascending
        out[i + 1, 0] = i + 1
        out[i + 1, 1:] = others[order[:h]] + 1
    return out


# --- co-occurrence -----------------------------------------------------------------------------------------------


def test_cooccurrence_hand_computed() -> None:
    # user 0: positions 0..3 hold 1, 2, 1, 3 (item 1 repeated); user 1: 2, 3
    o = cooccurrence(seqs([1, 2, 1, 3], [2, 3]), num_items=4)
    d = o.toarray()
    assert o.shape == (5, 5) and o.dtype == np.float32
    # (1,2) at distances 1 (p0,p1) and 1 (p1,p2); (1,3) at 3 (p0,p3) and 1 (p2,p3); (2,3) at 2 (p1,p3) and 1 (user 1)
    assert d[1, 2] == pytest.approx(2.0)
    assert d[1, 3] == pytest.approx(1 / 3 + 1)
    assert d[2, 3] == pytest.approx(1 / 2 + 1)
    assert np.all(np.diag(d) == 0)  # the (1,1) pair at distance 2 is skipped
    assert np.array_equal(d, d.T)
    assert not d[0].any() and not d[:, 0].any()
    assert not d[4].any()  # item 4 never occurs

    counts = cooccurrence(seqs([1, 2, 1, 3], [2, 3]), num_items=4, distance_weighted=False).toarray()
    assert (counts[1, 2], counts[1, 3], counts[2, 3]) == (2.0, 2.0, 2.0)
    assert np.all(np.diag(counts) == 0) and np.array_equal(counts, counts.T)


@pytest.mark.parametrize("weighted", [True, False])
def test_cooccurrence_equals_brute_force(weighted: bool) -> None:
    rng = np.random.default_rng(0)
    n = 15
    # 40 users, lengths 1..13, items repeat within a sequence
    sequences = [rng.integers(1, n + 1, size=int(rng.integers(1, 14))) for _ in range(40)]
    got = cooccurrence(sequences, n, distance_weighted=weighted).toarray()
    assert np.array_equal(got, dense_cooccurrence(sequences, n, weighted))


def test_cooccurrence_chunks_long_sequences(monkeypatch: pytest.MonkeyPatch) -> None:
    import mdsrec.data.graphs as graphs

    monkeypatch.setattr(graphs, "_PAIRS_PER_CHUNK", 7)  # forces many chunks and flushes
    rng = np.random.default_rng(1)
    sequences = [rng.integers(1, 21, size=int(m)) for m in (2, 5, 9, 30, 30, 4)]
    assert np.array_equal(cooccurrence(sequences, 20).toarray(), dense_cooccurrence(sequences, 20, True))


def test_cooccurrence_refuses_out_of_range_ids() -> None:
    with pytest.raises(ValueError, match=r"1\.\.4"):
        cooccurrence(seqs([1, 0, 2]), num_items=4)  # 0 is padding, not an item
    with pytest.raises(ValueError, match=r"1\.\.4"):
        cooccurrence(seqs([1, 5]), num_items=4)


def test_no_leakage_from_validation_and_test_targets() -> None:
    # user 0: training 1, 2, 3; validation target 4; test target 5. user 1: training 2, 6, 4; targets 7, 8.
    split = Split(seqs([1, 2, 3, 4, 5], [2, 6, 4, 7, 8]))
    o = cooccurrence([split.train_part(u) for u in range(split.num_users)], num_items=8).toarray()
    full = cooccurrence(split.sequences, num_items=8).toarray()
    for i, j in [(1, 4), (3, 4), (4, 5), (1, 5), (6, 7), (7, 8), (4, 8)]:  # only through a target
        assert o[i, j] == 0 and o[j, i] == 0, (i, j)
        assert full[i, j] > 0, (i, j)  # ...which the full sequences would have added
    assert o[2, 4] == pytest.approx(1 / 2)  # item 4 is in user 1's training part, with 2 at distance 2
    assert o[1, 2] == pytest.approx(1.0) and o[1, 3] == pytest.approx(1 / 2)


# --- normalisation -----------------------------------------------------------------------------------------------


def test_symmetric_and_row_normalisation() -> None:
    a = np.array(
        [
            [0, 0, 0, 0],
            [0, 0, 2, 1],
            [0, 2, 0, 3],
            [0, 1, 3, 0],
        ],
        dtype=np.float32,
    )
    import scipy.sparse as sp

    d = a.sum(axis=1)  # [0, 3, 5, 4]
    sym = normalize_adjacency(sp.csr_matrix(a), "symmetric").toarray()
    for i in range(1, 4):
        for j in range(1, 4):
            assert sym[i, j] == pytest.approx(a[i, j] / np.sqrt(d[i] * d[j]), rel=1e-6)
    assert not sym[0].any() and not sym[:, 0].any()  # zero row stays zero, no NaN
    assert np.isfinite(sym).all()

    row = normalize_adjacency(sp.csr_matrix(a), "row").toarray()
    assert row.sum(axis=1) == pytest.approx([0, 1, 1, 1])
    assert row[2, 3] == pytest.approx(3 / 5)
    assert np.array_equal(normalize_adjacency(sp.csr_matrix(a), "none").toarray(), a)
    with pytest.raises(ValueError, match="'mean'"):
        normalize_adjacency(sp.csr_matrix(a), "mean")


def test_neighbour_adjacency_row_is_mean_of_neighbours() -> None:
    nb = np.array([[0, 0, 0], [1, 2, 3], [2, 1, 4], [3, 4, 1], [4, 3, 2]])
    a = neighbour_adjacency(nb, num_items=4, norm="row")
    assert a.shape == (5, 5)
    assert np.asarray(a.sum(axis=1)).ravel() == pytest.approx([0, 1, 1, 1, 1])
    e = np.random.default_rng(0).standard_normal((5, 3))
    assert a @ e == pytest.approx(np.stack([np.zeros(3)] + [e[r].mean(axis=0) for r in nb[1:]]), rel=1e-6)
    binary = neighbour_adjacency(nb, num_items=4, norm="none").toarray()
    assert set(np.unique(binary)) == {0.0, 1.0} and binary.sum() == 12
    with pytest.raises(ValueError, match=r"expected \(5, H\)"):
        neighbour_adjacency(nb[:4], num_items=4)


# --- top-H cosine neighbours -------------------------------------------------------------------------------------


def test_topk_equals_dense_reference_in_blocks() -> None:
    rng = np.random.default_rng(0)
    f = rng.standard_normal((41, 6)).astype(np.float32)  # N = 40, no ties
    f[0] = 0
    ref = dense_topk(f, 5)
    for block in (1, 7, 40, 4096):
        got = topk_cosine_neighbours(f, 5, block_size=block)
        assert got.shape == (41, 6) and got.dtype == np.int64
        assert not got[0].any()
        for i in range(1, 41):
            assert got[i, 0] == i
            assert set(got[i, 1:]) == set(ref[i, 1:]), i


def test_topk_ties_go_to_the_lower_id_whatever_the_block_size() -> None:
    rng = np.random.default_rng(2)
    f = rng.standard_normal((31, 5)).astype(np.float32)  # N = 30
    f[0] = 0
    for dup in (7, 9, 12, 20):
        f[dup] = f[3]  # items 3, 7, 9, 12, 20 are identical
    f[[5, 25]] = 0  # two items without features
    ref = dense_topk(f, 2)
    results = [topk_cosine_neighbours(f, 2, block_size=b) for b in (1, 4, 11, 30)]
    results.append(topk_cosine_neighbours(torch.from_numpy(f), 2))
    for got in results:
        assert np.array_equal(got, ref)
    got = results[0]
    assert got[3].tolist() == [3, 7, 9]  # four others at cosine 1: the two lowest ids
    assert got[20].tolist() == [20, 3, 7]
    assert got[5].tolist() == [5, 1, 2]  # no feature: cosine 0 with everything, lowest ids
    assert got[25].tolist() == [25, 1, 2]


def test_topk_include_self_and_zero_rows_and_bad_h() -> None:
    rng = np.random.default_rng(3)
    f = rng.standard_normal((11, 4)).astype(np.float32)  # N = 10
    f[[0, 4, 8]] = 0
    with_self = topk_cosine_neighbours(f, 3)
    others = topk_cosine_neighbours(f, 3, include_self=False)
    assert with_self.shape == (11, 4) and others.shape == (11, 3)
    assert np.array_equal(with_self[:, 1:], others)
    assert np.array_equal(with_self[1:, 0], np.arange(1, 11))
    for i in range(1, 11):
        assert i not in others[i]  # the item itself is never one of its H others
        assert len(set(others[i])) == 3 and others[i].min() >= 1 and others[i].max() <= 10
    assert others[4].tolist() == [1, 2, 3] and others[8].tolist() == [1, 2, 3]
    assert topk_cosine_neighbours(f, 9, include_self=False).shape == (11, 9)  # every other item
    with pytest.raises(ValueError, match=r"h \(10\).*N \(10\)"):
        topk_cosine_neighbours(f, 10)
    with pytest.raises(ValueError, match=r"h \(12\).*N \(10\)"):
        topk_cosine_neighbours(f, 12, include_self=False)


# --- k-means and membership --------------------------------------------------------------------------------------


def test_kmeans_is_seeded() -> None:
    x = np.random.default_rng(0).uniform(size=(201, 3)).astype(np.float32)
    a_labels, a_centres = kmeans(x, 8, seed=1)
    b_labels, b_centres = kmeans(torch.from_numpy(x), 8, seed=1, block_size=17)
    assert np.array_equal(a_labels, b_labels) and np.array_equal(a_centres, b_centres)
    assert a_labels.dtype == np.int64 and a_labels[0] == -1 and a_centres.shape == (8, 3)
    assert a_centres.dtype == np.float32
    others = {kmeans(x, 8, seed=s)[0].tobytes() for s in range(2, 6)}
    assert len(others | {a_labels.tobytes()}) > 1  # the seed drives the initialisation


def test_kmeans_recovers_two_blobs() -> None:
    rng = np.random.default_rng(4)
    blob = np.repeat([0, 1], 30)
    x = np.zeros((61, 2), dtype=np.float32)
    x[1:] = rng.normal(size=(60, 2)) + 100.0 * blob[:, None]
    labels, centres = kmeans(x, 2, seed=0)
    assert labels[0] == -1
    assert len(set(labels[1:31])) == 1 and len(set(labels[31:])) == 1 and labels[1] != labels[31]
    assert centres[labels[1]] == pytest.approx(x[1:31].mean(axis=0), abs=1e-4)
    assert centres[labels[31]] == pytest.approx(x[31:].mean(axis=0), abs=1e-4)


def test_kmeans_returns_no_empty_cluster() -> None:
    # 12 items on 3 distinct points with k = 5: duplicates go to the first nearest centre and leave clusters
    # empty, which must be re-seeded.
    x = np.zeros((13, 2), dtype=np.float32)
    x[1:] = np.repeat(np.array([[0, 0], [5, 5], [9, 0]], dtype=np.float32), 4, axis=0)
    for seed in range(5):
        labels, centres = kmeans(x, 5, seed=seed)
        assert np.all(np.bincount(labels[1:], minlength=5) >= 1), seed
        assert np.isfinite(centres).all()
    with pytest.raises(ValueError, match=r"k \(13\).*N \(12\)"):
        kmeans(x, 13, seed=0)


def test_membership_matrix_means() -> None:
    rng = np.random.default_rng(5)
    e = rng.standard_normal((21, 4)).astype(np.float32)
    labels, _ = kmeans(rng.standard_normal((21, 3)).astype(np.float32), 4, seed=0)
    c = membership_matrix(labels, 4)
    assert c.shape == (4, 21) and c.dtype == torch.float32
    dense = c.to_dense()
    assert dense.sum(dim=1) == pytest.approx(torch.ones(4))
    assert not dense[:, 0].any()  # padding column
    means = torch.sparse.mm(c, torch.from_numpy(e))  # [k, d]
    for k in range(4):
        assert means[k].numpy() == pytest.approx(e[1:][labels[1:] == k].mean(axis=0), rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        membership_matrix(np.array([-1, 0, 4]), 4)


def clustered_features(n: int, dim: int = 16, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, dim)).astype(np.float32)
    f = np.zeros((n + 1, dim), dtype=np.float32)
    f[1:] = centres[rng.integers(0, 12, n)] + 0.4 * rng.standard_normal((n, dim)).astype(np.float32)
    return f


def test_approximate_neighbours_above_the_threshold_have_the_exact_layout_and_high_recall() -> None:
    f = clustered_features(1500)
    exact = topk_cosine_neighbours(f, 10)
    approx = topk_cosine_neighbours(f, 10, exact_up_to=1000)  # 1500 items > 1000: the HNSW index
    assert approx.shape == exact.shape == (1501, 11) and approx.dtype == np.int64
    assert not approx[0].any()
    assert np.array_equal(approx[1:, 0], np.arange(1, 1501))  # the item itself first
    found = [len(set(approx[i, 1:]) & set(exact[i, 1:])) for i in range(1, 1501)]
    assert np.mean(found) / 10 >= 0.95  # a small index is close to exact
    for i in range(1, 1501):
        assert i not in approx[i, 1:] and len(set(approx[i, 1:])) == 10
    f_t = torch.from_numpy(f)
    sims = [
        (f_t[i] @ f_t[approx[i, 1:]].t()) / (f_t[i].norm() * f_t[approx[i, 1:]].norm(dim=1)) for i in (1, 700)
    ]
    for s in sims:  # by similarity, descending
        assert bool((s[:-1] >= s[1:] - 1e-6).all())
    again = topk_cosine_neighbours(f, 10, include_self=False, exact_up_to=1000)
    assert np.array_equal(again, approx[:, 1:])  # reproducible (one-thread build), with and without self


def test_approximate_neighbours_need_faiss_and_say_how_to_install_it(monkeypatch) -> None:
    import builtins

    real = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("No module named 'faiss'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    with pytest.raises(ImportError, match=r"mdsrec\[ann\]"):
        topk_cosine_neighbours(clustered_features(30), 3, exact_up_to=10)
