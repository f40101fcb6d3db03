"""Item graphs for MDSRec (arXiv 2412.08103): co-occurrence (Eq. 1-2), modal top-H neighbours (Eq. 4-6), k-means
centres and the cluster membership matrix (Eq. 10-11).

Everything here is built once, before training, from fixed inputs:

* ``cooccurrence``: O (Eq. 1-2) from the TRAINING parts of the sequences only (no leakage: a pair that co-occurs only
  through a validation or test target adds nothing). Every pair of positions p < q adds 1/(q - p) (or 1, the
  "w/o DIS" variant) to O[i, j] and O[j, i], i != j. Built from per-length buckets of COO triplets, never densely.
* ``normalize_adjacency``: symmetric D^-1/2 A D^-1/2, row D^-1 A, or none (D = row sums, zero rows stay zero).
* ``topk_cosine_neighbours``: the item itself plus its H most similar other items by cosine similarity (Eq. 4-5),
  block by block; ties go to the lower item id. Exact top-H costs O(N^2 d): above ``EXACT_NEIGHBOURS_UP_TO`` items
  it is approximate (``approximate_cosine_neighbours``, an HNSW index of faiss, the ``ann`` extra).
* ``neighbour_adjacency``: the binary graph of Eq. 5 as a sparse matrix, normalised (Eq. 6).
* ``kmeans`` / ``membership_matrix``: seeded k-means++ / Lloyd over the raw features (Eq. 10) and C (k x N+1) with
  C[c, i] = 1/|cluster c| so that C @ E is each cluster's mean (Eq. 11).

Item ids are 1..N; id 0 is padding: row and column 0 of every graph are empty, row 0 of every feature table is
ignored. Shape legend: N items, d feature dim, H neighbours, k centres.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

log = logging.getLogger(__name__)

NORMALIZATIONS = ("symmetric", "row", "none")
# Triplets (pairs of positions) generated at once while building O; bounds the builder's working memory.
_PAIRS_PER_CHUNK = 1 << 22
# Most entries of one cosine-score block: rows per block are capped at this // N (512 MiB of float32 scores).
_MAX_BLOCK_ELEMENTS = 1 << 27
# Catalogues with more items get approximate top-H neighbours (exact: 200k items take about 4 minutes on 2 cores
# and the time grows with N^2).
EXACT_NEIGHBOURS_UP_TO = 200_000


# ---------------------------------------------------------------------------------------------------------------
# Eq. 1-2: co-occurrence
# ---------------------------------------------------------------------------------------------------------------


def cooccurrence(
    train_sequences: list[np.ndarray], num_items: int, distance_weighted: bool = True
) -> sp.csr_matrix:
    """Co-occurrence matrix O, float32 [N+1, N+1], symmetric, zero diagonal, row/column 0 empty.

    ``train_sequences`` must be the training parts (``Split.train_part``), item ids in 1..N. Every pair of positions
    p < q of one sequence holding items i != j adds 1/(q - p) (1 when not ``distance_weighted``) to O[i, j] and
    O[j, i]. Sums are accumulated in float64 and rounded to float32 once. Cost O(sum of squared lengths).
    """
    n1 = num_items + 1
    index_dtype = np.int32 if n1 < np.iinfo(np.int32).max else np.int64
    by_length: dict[int, list[np.ndarray]] = defaultdict(list)
    for u, s in enumerate(train_sequences):
        s = np.asarray(s)
        if s.ndim != 1:
            raise ValueError(f"training sequence of user index {u} has shape {s.shape}, expected 1-D")
        if len(s) < 2:
            continue
        if s.min() < 1 or s.max() > num_items:
            raise ValueError(
                f"training sequence of user index {u} has item ids {s.min()}..{s.max()}, expected 1..{num_items}"
            )
        by_length[len(s)].append(s)

    total = sp.csr_matrix((n1, n1), dtype=np.float64)
    pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    pending_size = 0
    num_pairs = 0

    def flush() -> None:
        nonlocal total, pending, pending_size
        if not pending:
            return
        rows = np.concatenate([r for r, _, _ in pending])
        cols = np.concatenate([c for _, c, _ in pending])
        vals = np.concatenate([v for _, _, v in pending])
        # COO -> CSR sums duplicate (row, col) entries.
        total = total + sp.coo_matrix((vals, (rows, cols)), shape=(n1, n1)).tocsr()
        pending, pending_size = [], 0

    for length in sorted(by_length):
        seqs = np.stack(by_length[length]).astype(index_dtype, copy=False)  # [U_L, L]
        p, q = np.triu_indices(length, k=1)  # [P] each, p < q
        w = 1.0 / (q - p) if distance_weighted else np.ones(len(p))  # [P] float64
        users_per_chunk = max(1, _PAIRS_PER_CHUNK // len(p))
        for start in range(0, len(seqs), users_per_chunk):
            chunk = seqs[start : start + users_per_chunk]  # [u, L]
            i = chunk[:, p].ravel()  # [u * P]
            j = chunk[:, q].ravel()
            wv = np.broadcast_to(w, (len(chunk), len(p))).ravel()
            keep = i != j  # a repeated item does not relate to itself
            i, j, wv = i[keep], j[keep], wv[keep]
            num_pairs += len(i)
            pending.append((np.concatenate([i, j]), np.concatenate([j, i]), np.concatenate([wv, wv])))
            pending_size += 2 * len(i)
            if pending_size >= 4 * _PAIRS_PER_CHUNK:
                flush()
    flush()
    out = sp.csr_matrix(total, dtype=np.float32)
    out.sort_indices()
    log.info("co-occurrence: %d position pairs, %d nonzeros over %d items", num_pairs, out.nnz, num_items)
    return out


def normalize_adjacency(O: sp.spmatrix | sp.sparray, mode: str) -> sp.csr_matrix:  # noqa: E741 (Eq. 3's O)
    """Normalise a sparse [N+1, N+1] graph: "symmetric" D^-1/2 O D^-1/2, "row" D^-1 O, or "none" (a float32 copy).

    D is the diagonal of row sums; rows whose sum is not positive (e.g. padding, items never seen in training)
    stay zero instead of dividing by zero. For a non-symmetric graph "symmetric" still uses row sums on both sides.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalisation mode must be one of {NORMALIZATIONS}, got {mode!r}")
    a = sp.csr_matrix(O, dtype=np.float64)
    if mode == "none":
        return sp.csr_matrix(a, dtype=np.float32)
    d = np.asarray(a.sum(axis=1)).ravel()  # [N+1]
    pos = d > 0
    inv = np.zeros_like(d)
    if mode == "row":
        inv[pos] = 1.0 / d[pos]
        out = sp.diags(inv) @ a
    else:
        inv[pos] = 1.0 / np.sqrt(d[pos])
        out = sp.diags(inv) @ a @ sp.diags(inv)
    out = sp.csr_matrix(out, dtype=np.float32)
    out.sort_indices()
    return out


# ---------------------------------------------------------------------------------------------------------------
# Eq. 4-6: top-H cosine neighbours and the neighbour graph
# ---------------------------------------------------------------------------------------------------------------


def _item_rows(features: np.ndarray | Tensor, what: str) -> Tensor:
    """features [N+1, d] (row 0 padding) -> float32 tensor [N, d] of the item rows, on the input's device."""
    x = features if isinstance(features, Tensor) else torch.from_numpy(np.asarray(features))
    if x.dim() != 2 or x.size(0) < 2:
        raise ValueError(f"{what}: features must be [N+1, d], N >= 1, row 0 padding; got {tuple(x.shape)}")
    x = x[1:].detach().to(torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{what}: features contain non-finite values")
    return x


def _sort_desc_lower_id_first(values: Tensor, ids: Tensor) -> Tensor:
    """Reorder ids [R, K] by value descending, equal values by ascending id (a stable sort on id-sorted input)."""
    ids, order = ids.sort(dim=1)
    values = values.gather(1, order)
    _, order = values.sort(dim=1, descending=True, stable=True)
    return ids.gather(1, order)


def topk_cosine_neighbours(
    features: np.ndarray | Tensor,
    h: int,
    include_self: bool = True,
    block_size: int = 4096,
    exact_up_to: int = EXACT_NEIGHBOURS_UP_TO,
) -> np.ndarray:
    """Top-H cosine neighbours of every item: int64 [N+1, H'] item ids, row 0 (padding) all 0.

    features: [N+1, d], row 0 padding (ignored). With ``include_self`` (the default) row i is the item itself
    followed by its H most similar OTHER items (H' = H + 1); otherwise just the H others (H' = H). Neighbours are
    ordered by similarity, descending.

    Ties are broken by the lower item id, independently of torch.topk (which does not specify which of several
    equal values it returns): per block, ``topk(H + 1)`` gives the H-th and (H+1)-th largest values; a row where
    they differ has a unique top-H set, only reordered (value descending, id ascending); a row where they are equal
    (duplicate feature rows, items without features) takes every value above the H-th and then the lowest ids among
    those equal to it. Determinism across block sizes assumes the matmul gives bitwise equal scores for equal rows.

    Rows with zero features (items without a feature) normalise to zero: cosine 0 with every item, no NaN; their
    neighbours are the lowest ids among the best-scoring items. Computed on the input's device (a CUDA tensor runs
    on the GPU), ``block_size`` query rows at a time (fewer when N is large: a score block holds at most 2^27
    entries), so memory is O(block_size * N + N * H), never N x N.

    Above ``exact_up_to`` items the neighbours are approximate (``approximate_cosine_neighbours``): the same layout,
    most but not all of the exact neighbours, ties in the index's order.
    """
    x = _item_rows(features, "topk_cosine_neighbours")  # [N, d]
    n = x.size(0)
    if h < 0 or h >= n:
        raise ValueError(f"h ({h}) must be at least 0 and smaller than the number of items N ({n})")
    if block_size < 1:
        raise ValueError(f"block_size ({block_size}) must be positive")
    if n > exact_up_to and h > 0:
        return approximate_cosine_neighbours(features, h, include_self)
    width = h + 1 if include_self else h
    out = np.zeros((n + 1, width), dtype=np.int64)
    if include_self:
        out[1:, 0] = np.arange(1, n + 1)
    if h == 0:
        return out
    xn = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)  # [N, d]; zero rows stay zero
    rows_per_block = max(1, min(block_size, _MAX_BLOCK_ELEMENTS // n))
    kk = h + 1  # <= N: one more than needed, to see whether the H-th value is tied at the boundary
    num_tied_rows = 0
    for start in range(0, n, rows_per_block):
        stop = min(start + rows_per_block, n)
        scores = xn[start:stop] @ xn.t()  # [B, N]
        r = torch.arange(stop - start, device=scores.device)
        scores[r, r + start] = float("-inf")  # never its own neighbour here; prepended above when included
        vals, idx = scores.topk(kk, dim=1)  # [B, H+1]
        ids = idx[:, :h]  # [B, H]
        tied = vals[:, h] == vals[:, h - 1]  # [B] boundary tie: which of the equal items to take is open
        if bool(tied.any()):
            ids = ids.clone()
            all_tied = tied.nonzero().squeeze(1)  # [T]
            num_tied_rows += len(all_tied)
            for t_rows in all_tied.split(max(1, rows_per_block // 4)):  # bounds the [T, N] temporaries
                s = scores[t_rows]  # [T, N]
                kth = vals[t_rows, h - 1].unsqueeze(1)  # [T, 1]
                above = s > kth  # [T, N]
                need = h - above.sum(dim=1, keepdim=True)  # [T, 1], >= 1
                equal = s == kth
                rank = equal.cumsum(dim=1, dtype=torch.int32)  # [T, N] 1-based rank among the tied, by id
                take = above | (equal & (rank <= need))  # exactly H per row, the lowest ids among the tied
                ids[t_rows] = take.nonzero()[:, 1].view(-1, h)  # [T, H] ascending ids per row
        ordered = _sort_desc_lower_id_first(scores.gather(1, ids), ids)  # [B, H]
        out[start + 1 : stop + 1, width - h :] = ordered.cpu().numpy() + 1  # column index -> item id
        del scores  # before the next block's scores are allocated
    if num_tied_rows:
        log.info(
            "top-%d neighbours: %d of %d items tied at the boundary (lower id taken)", h, num_tied_rows, n
        )
    return out


def approximate_cosine_neighbours(
    features: np.ndarray | Tensor,
    h: int,
    include_self: bool = True,
    m: int = 16,
    ef_construction: int = 40,
    ef_search: int = 64,
) -> np.ndarray:
    """``topk_cosine_neighbours``' output (int64 [N+1, H'], the item itself first with ``include_self``, neighbours
    by similarity descending), from an approximate nearest-neighbour index: faiss's HNSW graph (``m`` links per
    item, ``ef_construction`` / ``ef_search`` candidates) over the unit-normalised features, inner product.

    Time O(N log N) instead of O(N^2): 1M items of 384 dimensions in minutes on 2 cores, where exact top-H would
    take hours. The recall against the exact neighbours depends on the data; benchmarks/big_catalogue.py measures
    it. The index is built on one thread, so the graph (and the result) is the same on every run and every
    process of a torchrun launch; the queries run on all threads (each query's answer does not depend on that).
    An item the index returns fewer than H neighbours for (not seen on real data) gets its exact ones.
    """
    try:
        import faiss
    except ImportError as e:
        raise ImportError(
            f"top-{h} neighbours of more than {EXACT_NEIGHBOURS_UP_TO:,} items use an approximate index that needs "
            "faiss: pip install 'mdsrec[ann]' (faiss-cpu)"
        ) from e
    x = _item_rows(features, "approximate_cosine_neighbours").detach().cpu().float()  # [N, d]
    n, d = x.shape
    if h < 1 or h >= n:
        raise ValueError(f"h ({h}) must be at least 1 and smaller than the number of items N ({n})")
    xn = np.ascontiguousarray((x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)).numpy())  # [N, d]
    start = time.perf_counter()
    index = faiss.IndexHNSWFlat(d, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # a parallel build inserts in a racy order: one thread keeps it reproducible
    try:
        index.add(xn)
    finally:
        faiss.omp_set_num_threads(threads)
    built = time.perf_counter() - start
    index.hnsw.efSearch = max(ef_search, h + 1)
    found = np.empty((n, h + 1), dtype=np.int64)  # [N, H+1] row indices, best first; -1 where none
    for lo in range(0, n, 1 << 16):
        found[lo : lo + (1 << 16)] = index.search(xn[lo : lo + (1 << 16)], h + 1)[1]
    rows = np.arange(n)[:, None]
    is_self = found == rows  # [N, H+1]
    # drop the item itself where found, else the last (the H best others remain, in order)
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), h)  # [N]
    keep = np.ones_like(found, dtype=bool)
    keep[np.arange(n), drop] = False
    others = found[keep].reshape(n, h)  # [N, H]
    short = np.nonzero((others < 0).any(axis=1))[0]
    if len(short):  # exact neighbours for the few rows the index could not fill
        scores = torch.from_numpy(xn[short]) @ torch.from_numpy(xn).t()  # [S, N]
        scores[torch.arange(len(short)), torch.from_numpy(short)] = float("-inf")
        others[short] = scores.topk(h, dim=1).indices.numpy()
    width = h + 1 if include_self else h
    out = np.zeros((n + 1, width), dtype=np.int64)
    if include_self:
        out[1:, 0] = np.arange(1, n + 1)
    out[1:, width - h :] = others + 1  # row index -> item id
    log.info(
        "top-%d neighbours of %d items: approximate (faiss HNSW, m=%d, efSearch=%d): index %.1f s, queries %.1f s, "
        "%d rows completed exactly",
        h,
        n,
        m,
        index.hnsw.efSearch,
        built,
        time.perf_counter() - start - built,
        len(short),
    )
    return out


def neighbour_adjacency(neighbours: np.ndarray, num_items: int, norm: str = "row") -> sp.csr_matrix:
    """Binary graph A[i, j] = 1 for j in neighbours[i] (Eq. 5), float32 [N+1, N+1], normalised by ``norm``.

    neighbours: int64 [N+1, H'] from ``topk_cosine_neighbours`` (row 0 padding, ignored). "row" makes A @ E the mean
    of each item's neighbours' rows (Eq. 6 default); "symmetric" and "none" as in ``normalize_adjacency``.
    """
    nb = np.asarray(neighbours)
    if nb.ndim != 2 or nb.shape[0] != num_items + 1:
        raise ValueError(f"neighbours has shape {nb.shape}, expected ({num_items + 1}, H)")
    if norm not in NORMALIZATIONS:
        raise ValueError(f"normalisation mode must be one of {NORMALIZATIONS}, got {norm!r}")
    body = nb[1:]  # [N, H']
    if body.size and (body.min() < 1 or body.max() > num_items):
        raise ValueError(f"neighbour ids must lie in 1..{num_items}, found {body.min()}..{body.max()}")
    rows = np.repeat(np.arange(1, num_items + 1), body.shape[1])
    a = sp.coo_matrix(
        (np.ones(body.size, dtype=np.float32), (rows, body.ravel())), shape=(num_items + 1, num_items + 1)
    ).tocsr()
    a.data[:] = 1.0  # binary even if a row lists an id twice
    return normalize_adjacency(a, norm)


# ---------------------------------------------------------------------------------------------------------------
# Eq. 10-11: k-means centres and the membership matrix
# ---------------------------------------------------------------------------------------------------------------


def _sq_dists(x: Tensor, x2: Tensor, c: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    """Nearest centre and its squared distance for every row of x [N, d] given centres c [k, d]: ([N], [N])."""
    c2 = (c * c).sum(dim=1)  # [k]
    labels = torch.empty(x.size(0), dtype=torch.int64)
    best = torch.empty(x.size(0), dtype=torch.float32)
    for s in range(0, x.size(0), block_size):
        xb = x[s : s + block_size]  # [B, d]
        d = (x2[s : s + block_size, None] - 2.0 * (xb @ c.t()) + c2).clamp_min(0.0)  # [B, k]
        best[s : s + block_size], labels[s : s + block_size] = d.min(dim=1)  # first minimum on ties
    return labels, best


def _kmeans_pp(x: Tensor, x2: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """k-means++ seeding (D^2 sampling) with ``gen``; centres [k, d]."""
    n = x.size(0)
    chosen = [int(torch.randint(n, (1,), generator=gen))]
    closest = (x2 - 2.0 * (x @ x[chosen[0]]) + x2[chosen[0]]).clamp_min(0.0)  # [N]
    for _ in range(1, k):
        total = float(closest.sum(dtype=torch.float64))
        if total > 0:
            nxt = int(torch.multinomial(closest.double(), 1, generator=gen))
        else:  # fewer distinct points than centres: any point not chosen yet
            free = torch.ones(n, dtype=torch.bool)
            free[chosen] = False
            cand = free.nonzero().squeeze(1)
            nxt = int(cand[torch.randint(len(cand), (1,), generator=gen)])
        chosen.append(nxt)
        closest = torch.minimum(closest, (x2 - 2.0 * (x @ x[nxt]) + x2[nxt]).clamp_min(0.0))
    return x[chosen].clone()


def _means(x: Tensor, labels: Tensor, k: int, block_size: int) -> Tensor:
    """Per-cluster means [k, d]; empty clusters give zeros.

    Sums in float64 through a sparse one-hot matrix, block by block: sequential, so deterministic, and unlike
    torch's float64 index_add_ on CPU fast (and without an [N, d] float64 copy).
    """
    lab = labels.numpy()
    sums = np.zeros((k, x.size(1)), dtype=np.float64)
    for s in range(0, len(lab), block_size):
        part = lab[s : s + block_size]
        onehot = sp.csr_matrix((np.ones(len(part)), (part, np.arange(len(part)))), shape=(k, len(part)))
        sums += onehot @ x[s : s + block_size].numpy().astype(np.float64)
    counts = np.maximum(np.bincount(lab, minlength=k), 1)
    return torch.from_numpy((sums / counts[:, None]).astype(np.float32))


def _fill_empty(labels: Tensor, dist: Tensor, k: int) -> int:
    """Re-seed each empty cluster with the point farthest from its centre (lower index on ties), in place.

    Only points whose cluster keeps another member may move, so no cluster empties in turn. Returns how many moved.
    """
    counts = torch.bincount(labels, minlength=k)
    empty = (counts == 0).nonzero().squeeze(1).tolist()
    if not empty:
        return 0
    dist = dist.clone()
    for c in empty:
        movable = counts[labels] >= 2  # [N]; exists while an empty cluster does, since N >= k
        cand = torch.where(movable, dist, torch.full_like(dist, -1.0))
        i = int(cand.argmax())  # first maximum on ties
        counts[labels[i]] -= 1
        labels[i] = c
        counts[c] = 1
        dist[i] = -1.0
    return len(empty)


def kmeans(
    features: np.ndarray | Tensor, k: int, seed: int, iters: int = 50, block_size: int = 8192
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded k-means over the item rows 1..N of features [N+1, d] (row 0 padding is left out).

    k-means++ seeding drawn from ``torch.Generator().manual_seed(seed)``, then at most ``iters`` Lloyd steps
    (assignment in blocks of ``block_size`` rows, first centre on distance ties; stop when no label changes). After
    every assignment an empty cluster is re-seeded with the point farthest from its centre. Runs on the CPU
    (float32 distances, float64 sums), so it is deterministic for a given seed.

    Returns (labels int64 [N+1], -1 for padding, every cluster 0..k-1 non-empty; centres float32 [k, d], the mean
    of each cluster's items).
    """
    x = _item_rows(features, "kmeans").cpu().contiguous()  # [N, d]
    n = x.size(0)
    if k < 1 or k > n:
        raise ValueError(f"k ({k}) must be between 1 and the number of items N ({n})")
    if iters < 1 or block_size < 1:
        raise ValueError(f"iters ({iters}) and block_size ({block_size}) must be positive")
    gen = torch.Generator().manual_seed(seed)
    x2 = (x * x).sum(dim=1)  # [N]
    centres = _kmeans_pp(x, x2, k, gen)  # [k, d]
    prev: Tensor | None = None
    reseeded = 0
    steps = 0
    for _ in range(iters):
        steps += 1
        labels, dist = _sq_dists(x, x2, centres, block_size)
        reseeded += _fill_empty(labels, dist, k)
        centres = _means(x, labels, k, block_size)
        if prev is not None and torch.equal(labels, prev):
            break
        prev = labels
    log.info(
        "k-means: k=%d over %d items, %d Lloyd steps, %d empty clusters re-seeded", k, n, steps, reseeded
    )
    out = np.full(n + 1, -1, dtype=np.int64)
    out[1:] = labels.numpy()
    return out, centres.numpy().astype(np.float32, copy=False)


def membership_matrix(labels: np.ndarray, k: int) -> Tensor:
    """Normalised membership C, a sparse COO float32 tensor [k, N+1]: C[c, i] = 1/|cluster c| for items i in c.

    labels: int64 [N+1] from ``kmeans`` (entry 0, padding, is ignored: column 0 stays zero). ``torch.sparse.mm(C, E)``
    is the mean of E [N+1, d] over each cluster's items (Eq. 11); an empty cluster's row is zero.
    """
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) < 2:
        raise ValueError(f"labels must be 1-D [N+1] with N >= 1, got shape {lab.shape}")
    body = lab[1:]
    if body.min() < 0 or body.max() >= k:
        raise ValueError(f"labels of items 1..N must lie in 0..{k - 1}, found {body.min()}..{body.max()}")
    counts = np.bincount(body, minlength=k)  # [k]
    rows = body.astype(np.int64)
    cols = np.arange(1, len(lab), dtype=np.int64)
    vals = (1.0 / counts[rows]).astype(np.float32)
    idx = torch.from_numpy(np.stack([rows, cols]))
    return torch.sparse_coo_tensor(
        idx, torch.from_numpy(vals), (k, len(lab)), check_invariants=True
    ).coalesce()
