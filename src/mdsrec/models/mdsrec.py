"""MDSRec: "Multimodal Difference Learning for Sequential Recommendation", Li, Guo, Li & Zou, AAAI 2025,
arXiv 2412.08103.

Item relation graphs (Eq. 1-6): a co-occurrence matrix O from the training parts injects behaviour into the ID
embeddings (E-bar_id = mu_id O E_id + E_id) and into each modality's features (E-bar_m); per modality, the top-H
cosine graph over E-bar_m spreads ID embeddings (E-hat_m = A_m E_id). One causal Transformer per channel (ID and
each modality, Eq. 7-9). Interest-centralized attention (ICA, Eq. 10-16): k-means centres of each modality's raw
features attend, layer by layer, over that modality's Transformer states with the same Q/K/V weights. Fusion and
prediction (Eq. 17-24): e_s = e_id + sum_m rho_m e_m scores against E_id, each modality's centre-enriched state
e-tilde_m = e_m + gamma E_c (Gumbel-softmax gamma) scores against E-hat_m; the loss is the cross-entropy of the
fused channel plus rho_m times each modality channel's.

Every prefix is its own user history: the centres of the prefix ending at position p attend to positions <= p only,
so they are per (user, position), [B, P, K, D], and one causal pass equals running every prefix separately.

Deviations (config fields; the reasoning and measurements are in docs/models.md):
- O is symmetrically normalised (``cooc_norm="symmetric"``); the text uses it raw, which mu_id = 16 cannot fit.
- The modal graph holds the item plus its H most similar other items (``include_self``), row-normalised (``graph_norm``).
- ICA scores are scaled by the per-head sqrt(D / heads) (``ica_scale="head"``; "hidden" is Eq. 12's sqrt(D)).
- sigma of Eq. 15 is GELU (``ica_activation``); U, W1, W2 run as one folded D x D map (same function and gradients).
- ICA's keys/values are the modality layer's input states (what that layer's attention sees), not raw E-hat[S] + P.
- No dropout inside ICA; Gumbel noise only in training.
- The layer-0 centres pass through the encoder's input LayerNorm (``ica_center_norm``).
- ICA's U, W1, W2 start at N(0, 1/D) (``ica_init_std``), so their product keeps the input's norm on average.
- Depth 2 and 2 heads (not given); separate encoders per channel (``share_encoders=False``).
- The fused channel's loss uses y_s of Eq. 20 (``fused_loss="s"``); "final" uses Eq. 22's y.
- Cross-entropy at every trained position of a row (all prefixes in one pass), averaged over trained positions.
- ``cooc_norm_modal`` normalises O for the modal part of Eq. 3 on its own ("none": the literal text there).
- Above 200,000 items the top-H neighbours are approximate (faiss HNSW, ``graphs.approximate_cosine_neighbours``).

Extensions (beyond the paper's text; off by default, every field named ``ext_*``):
- ``ext_modal_features``: E-hat_m = A_m E_id + W_m x_m, the item's own projected features in every modal table.
- ``ext_cosine_tau`` > 0: every channel scores by cos(e, E) / tau instead of the dot product of Eq. 20-21.
- ``ext_id_features``: E_id + sum_m W'_m x_m wherever E_id is read (Eq. 3, 6, 20): every item's ID embedding
  carries its own projected features, as SASRecF's inputs and MISSRec's scores do.

Shape legend: B batch, L sequence length, P represented prefixes per row, D hidden, N items, M modalities,
K centres, h heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdsrec.data.graphs import (
    NORMALIZATIONS,
    cooccurrence,
    kmeans,
    membership_matrix,
    neighbour_adjacency,
    normalize_adjacency,
    topk_cosine_neighbours,
)
from mdsrec.data.protocol import Batch
from mdsrec.models.base import (
    DataInfo,
    EvalCache,
    SequentialRecommender,
    check_config,
    init_weights,
)
from mdsrec.models.catalogue import Factors, FactorSum, Scores, catalogue_cross_entropy, weighted_sum
from mdsrec.models.ica import ACTIVATIONS, SCALES, ICALayer, centre_weights, interest_centres
from mdsrec.models.layers import CausalEncoder
from mdsrec.models.modal_features import ModalityProjections
from mdsrec.models.sparse import check_coo, coo_parts, spmm


@dataclass
class MDSRecConfig:
    name: str = "mdsrec"
    hidden_size: int = 64
    num_layers: int = 2  # Transformer layers per channel = ICA layers
    num_heads: int = 2
    inner_size: int = 256
    dropout: float = 0.2
    attn_dropout: float = 0.2
    init_std: float = 0.02
    # Eq. 1-3: co-occurrence relation extraction (CRE)
    mu_id: float = 16.0
    mu_m: float = 0.2
    cooc_norm: str = "symmetric"  # symmetric | row | none
    use_distance: bool = True  # False: "w/o DIS", every co-occurring pair adds 1
    use_cre: bool = True  # False: "w/o CRE", mu_id = mu_m = 0
    # Eq. 4-6: modal-aware relation graphs (MRGC)
    use_mrgc: bool = True  # False: "w/o MRGC", a learned linear projection of the raw features instead
    h: int = 10  # neighbours per item
    include_self: bool = True
    graph_norm: str = "row"  # row | none | symmetric
    graph_on_bar_id: bool = False  # Eq. 6 on E-bar_id instead of the raw E_id
    # Eq. 7-9: encoders
    share_encoders: bool = False  # one encoder for the ID and every modality channel
    # Eq. 10-16: interest-centralized attention (ICA)
    use_ica: bool = True  # False: "w/o ICA", e-tilde = e
    k: int = 32  # centres per modality
    kmeans_seed: int = 0
    kmeans_iters: int = 50
    ica_activation: str = "gelu"  # gelu | sigmoid
    ica_scale: str = "head"  # head: sqrt(D / heads) as the shared attention; hidden: sqrt(D) as Eq. 12
    ica_init_std: float | None = None  # initial std of ICA's U, W1, W2; None: 1/sqrt(D)
    # layer-0 centres through the encoder's input LayerNorm; False: the raw Eq. 11 cluster means
    ica_center_norm: bool = True
    # Eq. 17-24: fusion, scores, loss
    tau: float = 1.0
    # one weight per modality (DataInfo.features order); None: 1/M
    rho: list[float] | None = field(default=None)
    fused_loss: str = "s"  # s: CE of y_s (Eq. 20); final: CE of y (Eq. 22)
    cooc_norm_modal: str | None = None  # O's normalisation in E-bar_m (Eq. 3, modal part); None: cooc_norm
    # Extensions beyond the paper (off by default):
    # E-hat_m = A_m E_id + W_m x_m: the item's own features in the modal tables
    ext_modal_features: bool = False
    # > 0: channels score by cos(e, E) / ext_cosine_tau instead of the dot product
    ext_cosine_tau: float = 0.0
    # E_id + sum_m W'_m x_m wherever E_id is read: the items' own features in the ID embeddings
    ext_id_features: bool = False

    def __post_init__(self) -> None:
        check_config(self, ("hidden_size", "num_layers", "num_heads", "inner_size", "k", "kmeans_iters"))
        check_config(self, (), ("dropout", "attn_dropout"), ("init_std", "tau"))
        for name in ("mu_id", "mu_m"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} ({getattr(self, name)}) must be >= 0")
        if self.ica_init_std is not None and self.ica_init_std <= 0:
            raise ValueError(
                f"ica_init_std ({self.ica_init_std}) must be > 0 (or null for 1/sqrt(hidden_size))"
            )
        if self.ext_cosine_tau < 0:
            raise ValueError(f"ext_cosine_tau ({self.ext_cosine_tau}) must be >= 0 (0: dot-product scores)")
        choices = {
            "cooc_norm": NORMALIZATIONS,
            "graph_norm": NORMALIZATIONS,
            "ica_activation": ACTIVATIONS,
            "ica_scale": SCALES,
            "fused_loss": ("s", "final"),
        }
        if self.cooc_norm_modal is not None:
            choices["cooc_norm_modal"] = NORMALIZATIONS
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} ({getattr(self, name)!r}) must be one of {', '.join(allowed)}")
        if self.h < 0 or (self.h == 0 and not self.include_self):
            raise ValueError(
                f"h ({self.h}) must be >= 0, and >= 1 when include_self is false (else no neighbours)"
            )
        if self.rho is not None:
            if not self.rho or any(r < 0 for r in self.rho) or abs(sum(self.rho) - 1.0) > 1e-6:
                raise ValueError(f"rho ({self.rho}) must be non-negative weights summing to 1")


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------


class ItemTables(NamedTuple):
    """The item tables every prefix is scored against, each [N+1, D]."""

    id: Tensor  # E_id (Eq. 20's table; with ext_id_features plus the items' projected features)
    bar: Tensor | None  # E-bar_id (Eq. 3) when Eq. 6 reads it (graph_on_bar_id), else None
    modal: list[Tensor]  # E-hat_m per modality (Eq. 6)


@dataclass
class MDSRecOutput:
    """Representations of the prefixes ending at the represented positions ([B, P, ...])."""

    e_s: Tensor  # [B, P, D] fused user representation (Eq. 17)
    e_m: list[Tensor]  # M x [B, P, D] modality Transformer outputs
    e_tilde: list[Tensor]  # M x [B, P, D] centre-enriched modality states (Eq. 18)
    gamma: list[Tensor]  # M x [B, P, K] Gumbel-softmax weights (Eq. 19); empty without ICA
    centres: list[Tensor]  # M x [B, P, K, D] last ICA layer's centres E_c; empty without ICA
    id_table: Tensor  # [N+1, D] raw E_id (Eq. 20)
    modal_tables: list[Tensor]  # M x [N+1, D] E-hat_m (Eq. 21)


class MDSRec(SequentialRecommender):
    name = "mdsrec"
    cooc_idx: Tensor  # [2, nnz] buffers of the normalised O (with use_cre)
    cooc_val: Tensor

    def __init__(self, cfg: MDSRecConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        self._tables_cache: EvalCache[ItemTables] = EvalCache()  # item_tables() in evaluation
        n1 = info.num_items + 1
        self.num_items = info.num_items
        self.modalities = list(info.features)
        m_count = len(self.modalities)
        if m_count == 0:
            raise ValueError("MDSRec needs at least one modality feature table; the data set has none")
        for name, table in info.features.items():
            if table.ndim != 2 or table.shape[0] != n1:
                raise ValueError(f"feature table {name!r} has shape {table.shape}, expected ({n1}, d)")
        self.rho = list(cfg.rho) if cfg.rho is not None else [1.0 / m_count] * m_count
        if len(self.rho) != m_count:
            raise ValueError(f"rho has {len(self.rho)} weights but the data set has {m_count} modalities")
        if cfg.use_ica and cfg.k > info.num_items:
            raise ValueError(f"k ({cfg.k}) must not exceed the number of items N ({info.num_items})")
        if cfg.use_mrgc and cfg.h >= info.num_items:
            raise ValueError(f"h ({cfg.h}) must be smaller than the number of items N ({info.num_items})")
        d = cfg.hidden_size
        self.mu_id = cfg.mu_id if cfg.use_cre else 0.0
        mu_m = cfg.mu_m if cfg.use_cre else 0.0

        # Eq. 1-3: O from the training parts only; E-bar_id is recomputed every forward from the learnable E_id.
        # Derived from the data (register_derived): built for a new run, taken from the checkpoint on loading.
        self.item_emb = nn.Embedding(n1, d, padding_idx=0)  # E_id
        o_by_norm: dict[str, sp.csr_matrix] = {}  # normalisation -> O, computed once for Eq. 3's two parts

        def cooc(norm: str) -> sp.csr_matrix:
            if not o_by_norm:
                if info.train_sequences is None:
                    raise ValueError(
                        "MDSRec with use_cre needs DataInfo.train_sequences (the training parts)"
                    )
                o_by_norm["raw"] = cooccurrence(
                    info.train_sequences, info.num_items, distance_weighted=cfg.use_distance
                )
            if norm not in o_by_norm:
                o_by_norm[norm] = normalize_adjacency(o_by_norm["raw"], norm)
            return o_by_norm[norm]

        if cfg.use_cre:
            self.register_derived(info, ("cooc_idx", "cooc_val"), lambda: coo_parts(cooc(cfg.cooc_norm)))
        modal_norm = cfg.cooc_norm_modal if cfg.cooc_norm_modal is not None else cfg.cooc_norm

        # Eq. 4-6 per modality: the top-H graph over E-bar_m (MRGC), or a projection of the raw features (w/o).
        # Eq. 10-11: k-means over the raw features E_m and the normalised membership C_m [K, N+1].
        self.proj = nn.ModuleList()
        for i, name in enumerate(self.modalities):
            feats = np.asarray(info.features[name], dtype=np.float32)  # [N+1, d_m]
            if cfg.use_mrgc:

                def graph(feats: np.ndarray = feats) -> tuple[Tensor, Tensor]:
                    use_o = cfg.use_cre and mu_m != 0
                    bar = (mu_m * (cooc(modal_norm) @ feats) + feats).astype(np.float32) if use_o else feats
                    nb = topk_cosine_neighbours(bar, cfg.h, include_self=cfg.include_self)
                    return coo_parts(
                        neighbour_adjacency(nb, info.num_items, cfg.graph_norm)
                    )  # [2, N H'], [N H']

                self.register_derived(info, (f"graph_idx_{i}", f"graph_val_{i}"), graph)
            else:
                self.register_buffer(f"features_{i}", torch.from_numpy(feats.copy()))  # [N+1, d_m]
                self.proj.append(nn.Linear(feats.shape[1], d))
            if cfg.use_ica:

                def members(feats: np.ndarray = feats) -> tuple[Tensor, Tensor]:
                    labels, _ = kmeans(feats, cfg.k, seed=cfg.kmeans_seed, iters=cfg.kmeans_iters)
                    return coo_parts(membership_matrix(labels, cfg.k))  # [2, N], [N]

                self.register_derived(info, (f"member_idx_{i}", f"member_val_{i}"), members)

        # Extension: the items' own projected features in every modal table (sparse product for multi-hot tables).
        self.ext_features = (
            ModalityProjections(info.features, info.num_items, d, "MDSRec")
            if cfg.ext_modal_features
            else None
        )
        self.ext_id = (
            ModalityProjections(info.features, info.num_items, d, "MDSRec") if cfg.ext_id_features else None
        )
        # Eq. 7-9: encoders[0] is the ID channel, encoders[1 + i] modality i (one shared encoder if asked).
        count = 1 if cfg.share_encoders else 1 + m_count
        self.encoders = nn.ModuleList(
            CausalEncoder(
                d, cfg.num_heads, cfg.inner_size, cfg.num_layers, cfg.dropout, cfg.attn_dropout, info.max_len
            )
            for _ in range(count)
        )
        # Eq. 12-15: ica[i][l] is layer l + 1 of modality i's interest-centralized attention.
        self.ica = nn.ModuleList(
            nn.ModuleList(
                ICALayer(cfg.hidden_size, cfg.ica_activation, cfg.ica_scale) for _ in range(cfg.num_layers)
            )
            for _ in range(m_count if cfg.use_ica else 0)
        )
        self.apply(lambda mod: init_weights(mod, cfg.init_std))
        ica_std = cfg.ica_init_std if cfg.ica_init_std is not None else 1.0 / math.sqrt(d)
        for stack in self.ica:
            stack.apply(lambda mod: init_weights(mod, ica_std))
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        self.check_graph_buffers()
        self.register_load_state_dict_post_hook(lambda module, _keys: module.check_graph_buffers())

    def check_graph_buffers(self) -> None:
        """Every sparse index buffer is in range and coalesced (run after building and after loading a state)."""
        n1 = self.num_items + 1
        for name, buf in self.named_buffers():
            if name.endswith("_idx"):
                rows = self.cfg.k if name.startswith("member_") else n1
                check_coo(name, buf, (rows, n1))

    def graph_neighbours(self, modality: int, item: int) -> list[int]:
        """Item ids of row ``item`` of modality ``modality``'s relation graph (the item itself included when
        ``include_self``); [] without MRGC."""
        if not self.cfg.use_mrgc:
            return []
        idx = getattr(self, f"graph_idx_{modality}").cpu()  # [2, nnz] row-major
        lo = int(torch.searchsorted(idx[0], item, side="left"))
        hi = int(torch.searchsorted(idx[0], item, side="right"))
        return [int(c) for c in idx[1, lo:hi]]

    def centre_labels(self, modality: int) -> np.ndarray | None:
        """The k-means centre of every item, int64 [N+1] (-1 for padding); None without ICA."""
        if not self.cfg.use_ica:
            return None
        idx = getattr(self, f"member_idx_{modality}").cpu().numpy()  # [2, N]: (centre, item)
        labels = np.full(self.num_items + 1, -1, dtype=np.int64)
        labels[idx[1]] = idx[0]
        return labels

    # --- item tables ------------------------------------------------------------------------------------------

    def encoder(self, channel: int) -> CausalEncoder:
        """channel 0: ID, 1 + i: modality i."""
        enc = self.encoders[0 if self.cfg.share_encoders else channel]
        assert isinstance(enc, CausalEncoder)
        return enc

    def ica_layers(self, i: int) -> list[ICALayer]:
        """Modality i's ICA layers, first to last."""
        stack = self.ica[i]
        assert isinstance(stack, nn.ModuleList)
        return [layer for layer in stack if isinstance(layer, ICALayer)]

    def id_table(self) -> Tensor:
        """E_id [N+1, D]: the ID embeddings, with ``ext_id_features`` plus sum_m W'_m x_m (row 0 stays zero)."""
        e = self.item_emb.weight
        if self.ext_id is None:
            return e
        own = torch.stack([self.ext_id.project_table(i) for i in range(len(self.ext_id))]).sum(0)  # [N+1, D]
        return e + _without_padding(own)

    def bar_id(self, select: Tensor | None = None, e: Tensor | None = None) -> Tensor:
        """Eq. 3: E-bar_id = mu_id O E_id + E_id [N+1, D], or only its rows ``select`` [U] -> [U, D]; ``e`` is
        E_id when the caller has it (``id_table()``)."""
        e = self.id_table() if e is None else e
        own = e if select is None else e[select]
        if self.mu_id == 0:
            return own
        return self.mu_id * spmm(self.cooc_idx, self.cooc_val, e.size(0), e, select) + own

    def bar_id_of(self, items: Tensor, e: Tensor | None = None) -> Tensor:
        """E-bar_id[items] for any index tensor, computing only the rows of the distinct items it holds."""
        uniq, inverse = torch.unique(items, return_inverse=True)  # [U], items.shape
        return self.bar_id(uniq, e)[inverse]  # [..., D]

    def modal_tables(self, src: Tensor) -> list[Tensor]:
        """E-hat_m [N+1, D] per modality: A_m src (Eq. 6: ``src`` is E_id, or E-bar_id with graph_on_bar_id), or
        the projected raw features without MRGC."""
        out = []
        for i in range(len(self.modalities)):
            if self.cfg.use_mrgc:
                out.append(
                    spmm(getattr(self, f"graph_idx_{i}"), getattr(self, f"graph_val_{i}"), src.size(0), src)
                )
            else:
                out.append(self.proj[i](getattr(self, f"features_{i}")))
        if self.ext_features is not None:  # + W_m x_m, row 0 (padding) kept at zero
            out = [t + _without_padding(self.ext_features.project_table(i)) for i, t in enumerate(out)]
        return out

    def item_tables(self) -> ItemTables:
        """E_id, E-bar_id (when Eq. 6 reads it, else None) and E-hat_m per modality, each [N+1, D]. The full E-bar_id
        only when Eq. 6 reads it (then the ID channel reads its rows too); otherwise the ID channel computes just
        the batch's rows of it. Without gradients (evaluation, serving) the tables are computed once and reused
        until a parameter or buffer changes (an optimizer step, a loaded state dict, a move to another device):
        the same values as recomputing them, without the graph products on every call (``EvalCache``; any training
        step, which computes them with gradients, drops the cache)."""
        return self._tables_cache.get(self, self._item_tables)

    def _item_tables(self) -> ItemTables:
        e = self.id_table()  # [N+1, D]
        bar = self.bar_id(e=e) if self.cfg.graph_on_bar_id else None  # [N+1, D] or None
        return ItemTables(e, bar, self.modal_tables(bar if bar is not None else e))

    # --- sequence representations ----------------------------------------------------------------------------

    def represent(self, items: Tensor, lengths: Tensor, ends: Tensor) -> MDSRecOutput:
        """items [B, L], lengths [B], ends [B, P] positions (< lengths) whose prefixes items[b, : ends + 1] are
        represented. Each prefix sees only its own positions, so the result does not depend on later items."""
        e, bar, tables = self.item_tables()
        n = items.size(1)
        pos = torch.arange(n, device=items.device)  # [L]
        visible = (pos <= ends[:, :, None]) & (pos < lengths[:, None, None])  # [B, P, L]
        idx = ends[:, :, None].expand(-1, -1, self.cfg.hidden_size)  # [B, P, D]

        bar_items = bar[items] if bar is not None else self.bar_id_of(items, e)  # [B, L, D] E-bar_id[S]
        e_id = self.encoder(0)(bar_items)[-1].gather(1, idx)  # [B, P, D] (Eq. 7-8)
        e_s = e_id
        e_ms, e_tildes, gammas, centres_out = [], [], [], []
        for i, table in enumerate(tables):
            enc = self.encoder(1 + i)
            states = enc(table[items])  # (num_layers + 1) x [B, L, D] (Eq. 9)
            e_m = states[-1].gather(1, idx)  # [B, P, D]
            e_s = e_s + self.rho[i] * e_m  # Eq. 17
            e_tilde = e_m
            if self.cfg.use_ica:
                member = spmm(
                    getattr(self, f"member_idx_{i}"), getattr(self, f"member_val_{i}"), self.cfg.k, table
                )  # [K, D] layer-0 centres E-hat_c (Eq. 11)
                if self.cfg.ica_center_norm:  # on the scale of the Transformer inputs they are compared with
                    member = enc.ln(member)
                c = interest_centres(member, states, enc, self.ica_layers(i), visible)  # [B, P, K, D]
                gamma = centre_weights(e_m, c, self.cfg.tau, gumbel=self.training)  # [B, P, K]
                e_tilde = e_m + torch.einsum("bpk,bpkd->bpd", gamma, c)  # Eq. 18
                gammas.append(gamma)
                centres_out.append(c)
            e_ms.append(e_m)
            e_tildes.append(e_tilde)
        return MDSRecOutput(e_s, e_ms, e_tildes, gammas, centres_out, e, tables)

    def channel_factors(self, out: MDSRecOutput) -> tuple[Factors, list[Factors]]:
        """y_s (Eq. 20) and y_m per modality (Eq. 21) as products of the representations [..., D] with the item
        tables: the dot product, or with ``ext_cosine_tau`` > 0 the cosine over that temperature."""
        return self.factors(out.e_s, out.id_table), [
            self.factors(e, t) for e, t in zip(out.e_tilde, out.modal_tables, strict=True)
        ]

    def factors(self, e: Tensor, table: Tensor) -> Factors:
        tau = self.cfg.ext_cosine_tau
        if tau > 0:
            return Factors(F.normalize(e, dim=-1), F.normalize(table, dim=-1), tau)
        return Factors(e, table)

    def channel_scores(self, out: MDSRecOutput) -> tuple[Tensor, list[Tensor]]:
        """y_s [..., N+1] (Eq. 20) and y_m per modality (Eq. 21); column 0 is not masked here."""
        f_s, f_m = self.channel_factors(out)
        return f_s.scores(), [f.scores() for f in f_m]

    def fused(self, f_s: Factors, f_m: list[Factors]) -> FactorSum:
        """Eq. 22: y = y_s + sum_m rho_m y_m."""
        return FactorSum(f_s, tuple(zip(self.rho, f_m, strict=True)))

    def fuse(self, y_s: Tensor, y_m: list[Tensor]) -> Tensor:
        """Eq. 22 on score matrices (the same sums, in the same order, as ``fused(...).scores()``)."""
        return weighted_sum(y_s, zip(self.rho, y_m, strict=True))

    # --- the contract ----------------------------------------------------------------------------------------

    def prefix_scores(self, items: Tensor, lengths: Tensor) -> Tensor:
        """items [B, L] -> [B, L, N+1]: scores after every prefix items[:, : p + 1]; column 0 is -inf."""
        ends = torch.arange(items.size(1), device=items.device).expand(items.size(0), -1)  # [B, L]
        y = self.fuse(*self.channel_scores(self.represent(items, lengths, ends)))
        y[..., 0] = float("-inf")
        return y

    def compute_loss(self, batch: Batch) -> Tensor:
        """Eq. 23-24 at every trained position (batch.targets > 0), each position its own prefix."""
        assert batch.targets is not None, "training batch needs targets"
        trained = batch.targets > 0  # [B, L]
        counts = trained.sum(dim=1)  # [B]
        # The trained positions of each row first, in order; P = most trained positions of any row.
        order = torch.sort((~trained).to(torch.uint8), dim=1, stable=True).indices  # [B, L]
        ends = order[:, : int(counts.max())]  # [B, P]
        valid = torch.arange(ends.size(1), device=ends.device) < counts[:, None]  # [B, P]
        target = batch.targets.gather(1, ends)[valid]  # [T]
        out = self.represent(batch.items, batch.lengths, ends)
        # Only the T trained prefixes are scored ([T, N+1]); the grid's empty slots never reach the item tables.
        packed = MDSRecOutput(
            out.e_s[valid],
            [e[valid] for e in out.e_m],
            [e[valid] for e in out.e_tilde],
            [],
            [],
            out.id_table,
            out.modal_tables,
        )
        f_s, f_m = self.channel_factors(packed)  # [T, D] queries against [N+1, D] tables

        def ce(y: Scores) -> Tensor:
            return catalogue_cross_entropy(y, target, self.chunking)

        loss = ce(self.fused(f_s, f_m) if self.cfg.fused_loss == "final" else f_s)
        for r, f in zip(self.rho, f_m, strict=True):
            loss = loss + r * ce(f)
        return loss

    def score_all(self, batch: Batch) -> Tensor:
        return self.channel_scores_all(batch)["fused"]

    def score_factors(self, batch: Batch, channels: bool = False) -> dict[str, Scores] | None:
        ends = (batch.lengths - 1).clamp(min=0)[:, None]  # [B, 1] only the full history is represented
        f_s, f_m = self.channel_factors(self.represent(batch.items, batch.lengths, ends))
        f_s, f_m = _first(f_s), [_first(f) for f in f_m]  # [B, D] queries
        out: dict[str, Scores] = {"fused": self.fused(f_s, f_m)}
        if channels:
            out["id"] = f_s
            for name, f in zip(self.modalities, f_m, strict=True):
                out[name if name not in out else f"modality {name}"] = f
        return out

    def channel_scores_all(self, batch: Batch) -> dict[str, Tensor]:
        """'fused' (Eq. 22, what is ranked), 'id' (y_s, Eq. 20) and each modality's y_m (Eq. 21), each [B, N+1]
        with column 0 -inf, from one pass over the full histories."""
        ends = (batch.lengths - 1).clamp(min=0)[:, None]  # [B, 1] only the full history is represented
        y_s, y_m = self.channel_scores(self.represent(batch.items, batch.lengths, ends))  # [B, 1, N+1] each
        out = {"fused": self.fuse(y_s, y_m)[:, 0], "id": y_s[:, 0]}
        for name, y in zip(self.modalities, y_m, strict=True):
            out[name if name not in out else f"modality {name}"] = y[:, 0]
        for y in out.values():
            y[:, 0] = float("-inf")
        return out


def _without_padding(t: Tensor) -> Tensor:
    """t [N+1, D] with row 0 (the padding item) zero."""
    keep = torch.ones(t.size(0), 1, dtype=t.dtype, device=t.device)
    keep[0] = 0.0
    return keep * t


def _first(f: Factors) -> Factors:
    """The factors of the one represented prefix per row: queries [B, 1, D] -> [B, D]."""
    return f._replace(query=f.query[:, 0])
