"""MISSRec: "MISSRec: Pre-training and Transferring Multi-modal Interest-aware Sequence Representation for
Recommendation", Wang, Zeng, Wang, Wang, Lu, Li, Yuan, Zhang, Zheng & Xia, ACM MM 2023, arXiv 2308.11175.

Every item has one token per modality (a learned linear adaptor of its fixed feature vector). Multimodal interests
are clusters of these tokens; the interest tokens of a history (its items' clusters, each cluster once) are
contextualised by a Transformer encoder. An interest-aware Transformer decoder runs over the history's item tokens
(the modality tokens summed, plus position and item-ID embeddings), with self-attention over the items and
cross-attention to the encoded interests; its last state, L2-normalised, is the sequence representation. An item is
scored by the cosine with each of its modality tokens, fused with weights softmax(phi * cosine) over the modalities
(phi a learned scalar, "dynamic_shared"), averaged with the cosine to its ID embedding as (s_id + M s_fused) / (M + 1)
and divided by a temperature; cross-entropy over all items, plus gamma times a diversity regulariser (the squared
norm of the pooled interest states, divided by D).

Causal version used here (the training batches hold every prefix of a sequence in one pass, so a prefix must never
see later items): the interest tokens of the prefix ending at position j are the clusters of the items at positions
<= j (the first occurrence of each cluster stands for it). The encoder is block-causal: an interest token attends to
the kept interest tokens of positions up to its own. The decoder's self-attention is causal and position j
cross-attends to the kept interest tokens of positions <= j.

Deviations:
- No pre-training: trained from scratch on the target data set (the original pre-trains the adaptors and the
  Transformer on several source domains with sequence-item and sequence-sequence contrastive losses, then fine-tunes;
  the contrastive losses and the transfer are not implemented).
- Interests: k-means (seeded, ``k`` clusters per modality, or ``ceil(interest_ratio * N)`` with ``interest_ratio``
  set, mdsrec.data.graphs.kmeans) over each modality's RAW feature table, computed once, when a run is created (a model
  loaded from a checkpoint takes the clusters from it and never runs k-means).
  The original re-clusters the ADAPTED tokens of all modalities together before every epoch, with
  ceil(interest_ratio * M * N) clusters, interest_ratio 0.5 (one cluster per two tokens); the frozen configs take
  interest_ratio 0.5 per modality, the same number of clusters, each modality's capped at its number of distinct
  feature vectors (Sports' multi-hot attributes have 6,047 distinct rows for 18,357 items). The interest embeddings
  are still the centroids of the adapted tokens of each (fixed) cluster: the adaptor is affine, so the centroid of
  adapted tokens is the adaptor applied to the raw centroid. They are detached (``detach_interests``) like the
  original's buffer.
- Per-prefix interests as above: the original encodes the interest set of the whole (materialised) history with a
  bidirectional encoder; here an interest token is contextualised only by interests that appeared no later than it,
  and the decoder's self-attention is causal (the original's is unmasked over the history, which in its
  one-row-per-prefix training holds no later items).
- The diversity regulariser keeps the original's scale: per sequence the original pools its interest states as
  (n/N) times their sum over the N padded interest slots of the batch (n of them real) and adds ||pooled||^2 / D,
  summed over the batch. Here each trained prefix pools (n/N) times the sum of its n visible interest states (N: the
  most any trained prefix of the batch sees), and ||pooled||^2 / D is summed over the batch's trained prefixes (a
  batch of 512 prefixes stands for the original's 512 materialised sequences). Padding slots, whose encoder outputs
  the original also sums, are left out.
- Modalities: every feature table of the data set (Scientific: title and category+brand sentence embeddings;
  Sports: keyword text and multi-hot attributes); the original reads 512-d text and 512-d image features. The
  adaptors start from the same normal(0, init_std) init as every other layer (the original's keep PyTorch's default).
- Any number of modalities, ID weight generalised as (s_id + M s_fused) / (M + 1) (the original's text + image case
  is (s_id + 2 s_fused) / 3); with one modality s_fused is that modality's cosine (the original then scores against
  the normalised sum of the text and ID embeddings instead).
- One encoder and one decoder layer by default (the original splits n_layers = 2 the same way); post-LN layers with
  dropout inside the feed-forward block and a final LayerNorm after each stack, as torch.nn.Transformer.

Shape legend: B batch, L sequence length, D hidden, N items, M modalities, K interest clusters (all modalities),
T = L M interest tokens of a window, h heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdsrec.data.graphs import kmeans
from mdsrec.data.protocol import Batch
from mdsrec.models.base import (
    DROPOUTS,
    DataInfo,
    EvalCache,
    SequentialRecommender,
    check_config,
    gather_last,
    init_weights,
    mask_padding_column,
)
from mdsrec.models.layers import MultiHeadSelfAttention
from mdsrec.models.modal_features import ModalityProjections


@dataclass
class MISSRecConfig:
    name: str = "missrec"
    hidden_size: int = 64
    inner_size: int = 256
    enc_layers: int = 1  # interest encoder layers
    dec_layers: int = 1  # interest-aware decoder layers
    num_heads: int = 2
    dropout: float = 0.5
    attn_dropout: float = 0.5
    activation: str = "gelu"
    init_std: float = 0.02
    temperature: float = 0.07
    use_id: bool = (
        True  # item-ID embeddings in the tokens and the scores (the original's transductive setting)
    )
    dynamic_fusion: bool = (
        True  # softmax(phi * cosine) modality weights ("dynamic_shared"); False: plain mean
    )
    k: int = 64  # interest clusters per modality (unless interest_ratio is set)
    # > 0: k = ceil(interest_ratio * N) clusters per modality, the original's parameter (its interest_ratio 0.5
    # gives one interest per two tokens); 0: the fixed k above
    interest_ratio: float = 0.0
    kmeans_seed: int = 0
    kmeans_iters: int = 50
    detach_interests: bool = (
        True  # interest embeddings carry no gradient (the original keeps them in a buffer)
    )
    gamma: float = 1e-4  # weight of the diversity regulariser

    def __post_init__(self) -> None:
        sizes = ("hidden_size", "inner_size", "enc_layers", "dec_layers", "num_heads", "k", "kmeans_iters")
        check_config(self, sizes, DROPOUTS, ("init_std", "temperature"))
        if self.gamma < 0:
            raise ValueError(f"gamma ({self.gamma}) must be >= 0")
        if not 0.0 <= self.interest_ratio <= 1.0:
            raise ValueError(f"interest_ratio ({self.interest_ratio}) must lie in [0, 1] (0: use k)")


class MISSRecFeedForward(nn.Module):
    def __init__(self, cfg: MISSRecConfig) -> None:
        super().__init__()
        self.ff1 = nn.Linear(cfg.hidden_size, cfg.inner_size)
        self.ff2 = nn.Linear(cfg.inner_size, cfg.hidden_size)
        self.drop = nn.Dropout(cfg.dropout)
        self.act = F.gelu if cfg.activation == "gelu" else F.relu

    def forward(self, x: Tensor) -> Tensor:
        return self.ff2(self.drop(self.act(self.ff1(x))))


class MISSRecEncoderLayer(nn.Module):
    """Post-LN: x = LN(x + Drop(SelfAttn(x, mask))); x = LN(x + Drop(FFN(x)))."""

    def __init__(self, cfg: MISSRecConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.attn = MultiHeadSelfAttention(d, cfg.num_heads, cfg.attn_dropout)
        self.ff = MISSRecFeedForward(cfg)
        self.ln1 = nn.LayerNorm(d, eps=1e-12)
        self.ln2 = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.ln1(x + self.drop(self.attn.attend(x, x, mask)))
        return self.ln2(x + self.drop(self.ff(x)))


class MISSRecDecoderLayer(nn.Module):
    """Post-LN: causal self-attention, cross-attention to the interest memory, feed-forward."""

    def __init__(self, cfg: MISSRecConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.self_attn = MultiHeadSelfAttention(d, cfg.num_heads, cfg.attn_dropout)
        self.cross_attn = MultiHeadSelfAttention(d, cfg.num_heads, cfg.attn_dropout)
        self.ff = MISSRecFeedForward(cfg)
        self.ln1 = nn.LayerNorm(d, eps=1e-12)
        self.ln2 = nn.LayerNorm(d, eps=1e-12)
        self.ln3 = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, causal: Tensor, memory: Tensor, cross: Tensor) -> Tensor:
        x = self.ln1(x + self.drop(self.self_attn.attend(x, x, causal)))
        x = self.ln2(x + self.drop(self.cross_attn.attend(x, memory, cross)))
        return self.ln3(x + self.drop(self.ff(x)))


class MISSRec(SequentialRecommender):
    name = "missrec"
    # [N+1, M] global interest cluster of every item per modality (row 0: 0, never used)
    interest_ids: Tensor

    def __init__(self, cfg: MISSRecConfig, info: DataInfo) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden_size
        n1 = info.num_items + 1
        # One token per modality: the raw table (buffer) through its adaptor nn.Linear(d_m, D).
        self.tokens = ModalityProjections(info.features, info.num_items, d, "MISSRec")
        # clusters per modality: k, or ceil(interest_ratio * N) capped at the modality's distinct feature rows
        want = math.ceil(cfg.interest_ratio * info.num_items) if cfg.interest_ratio > 0 else cfg.k
        if want > info.num_items:
            raise ValueError(f"k ({want}) must not exceed the number of items N ({info.num_items})")
        self.max_len = info.max_len
        tables = [np.asarray(t, dtype=np.float32) for t in info.features.values()]

        def interests() -> list[Tensor]:
            """k-means per modality (seeded, fp32): the raw centroids [k, d_m] and every item's global cluster."""
            ids = np.zeros((n1, len(tables)), dtype=np.int64)  # [N+1, M]
            centres = []
            offset = 0  # cluster ids are global across modalities
            for i, feats in enumerate(tables):
                k = want
                distinct, inverse = (
                    np.unique(feats[1:], axis=0, return_inverse=True)
                    if cfg.interest_ratio > 0
                    else (None, None)
                )
                if distinct is not None and k >= distinct.shape[0]:
                    # more clusters than distinct vectors would split identical items: one cluster per distinct
                    # vector instead, the exact k-means optimum (no Lloyd steps needed)
                    k = distinct.shape[0]
                    ids[1:, i] = np.asarray(inverse).reshape(-1) + offset
                    c = distinct
                else:
                    labels, c = kmeans(feats, k, seed=cfg.kmeans_seed, iters=cfg.kmeans_iters)
                    ids[1:, i] = labels[1:] + offset
                centres.append(torch.from_numpy(np.asarray(c, dtype=np.float32).copy()))  # [k, d_m]
                offset += k
            return [*centres, torch.from_numpy(ids)]

        # derived from the data: clustered for a new run, taken from the checkpoint when a run is loaded
        names = [*(f"centres_{i}" for i in range(len(tables))), "interest_ids"]
        self.register_derived(info, names, interests)
        self.clusters = [
            int(getattr(self, f"centres_{i}").shape[0]) for i in range(len(tables))
        ]  # k per modality
        self.item_emb = nn.Embedding(n1, d, padding_idx=0) if cfg.use_id else None
        self.pos_emb = nn.Embedding(info.max_len, d)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(MISSRecEncoderLayer(cfg) for _ in range(cfg.enc_layers))
        self.enc_norm = nn.LayerNorm(d, eps=1e-12)
        self.decoder = nn.ModuleList(MISSRecDecoderLayer(cfg) for _ in range(cfg.dec_layers))
        self.dec_norm = nn.LayerNorm(d, eps=1e-12)
        self.fusion_factor = nn.Parameter(torch.zeros(())) if cfg.dynamic_fusion else None  # phi
        self.apply(lambda m: init_weights(m, cfg.init_std))
        if self.item_emb is not None:
            with torch.no_grad():
                self.item_emb.weight[0].zero_()
        self._table_cache: EvalCache[list[Tensor]] = EvalCache()  # item_tables() in evaluation

    # --- item side -------------------------------------------------------------------------------------------

    def interest_table(self) -> Tensor:
        """[K, D]: per modality, the adaptor of the raw centroids = centroid of the cluster's adapted tokens."""
        rows = [ad(getattr(self, f"centres_{i}")) for i, ad in enumerate(self.tokens.proj)]  # M x [k, D]
        table = torch.cat(rows, dim=0)
        return table.detach() if self.cfg.detach_interests else table

    def item_tables(self) -> list[Tensor]:
        """The L2-normalised modality tokens of every item, M x [N+1, D], then (``use_id``) the L2-normalised ID
        embeddings [N+1, D]. Kept between calls in evaluation (eval mode, no grad) until a weight changes."""
        return self._table_cache.get(self, self.compute_item_tables)

    def compute_item_tables(self) -> list[Tensor]:
        tables = [F.normalize(self.tokens.project_table(i), dim=-1) for i in range(len(self.tokens))]
        if self.item_emb is not None:
            tables.append(F.normalize(self.item_emb.weight, dim=-1))
        return tables  # (M or M + 1) x [N+1, D]

    def scores(self, h: Tensor) -> Tensor:
        """h [P, D] L2-normalised sequence states -> logits [P, N+1] (column 0 not masked)."""
        tables = self.item_tables()
        m = len(self.tokens)
        # modalities first: a softmax over a last dimension of size M (2 here) runs ~3x slower on the CPU than the
        # same softmax over a leading one, and this is the largest elementwise work of a training step
        cos = torch.stack([h @ t.t() for t in tables[:m]], dim=0)  # [M, P, N+1]
        if self.fusion_factor is not None:
            fused = (cos * (cos * self.fusion_factor).softmax(dim=0)).sum(dim=0)  # [P, N+1]
        else:
            fused = cos.mean(dim=0)
        if self.item_emb is not None:
            id_cos = h @ tables[m].t()  # [P, N+1]
            fused = (id_cos + m * fused) / (m + 1)
        return fused / self.cfg.temperature

    # --- sequence side ---------------------------------------------------------------------------------------

    def represent(self, items: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """items [B, L] -> (L2-normalised states [B, L, D], ||sum of the interest states visible to the prefix||^2 / D
        [B, L], how many there are [B, L]); position j depends only on items[:, : j + 1]."""
        b, n = items.shape
        if n > self.max_len:
            raise ValueError(f"sequence length {n} exceeds max_len {self.max_len}")
        dev = items.device
        m = len(self.tokens)
        pos = torch.arange(n, device=dev)  # [L]
        real = pos[None] < lengths[:, None]  # [B, L]

        # Interest tokens: M per position; a cluster already seen earlier in the prefix is not kept again.
        ids = self.interest_ids[items]  # [B, L, M]
        earlier = pos[None, :] < pos[:, None]  # [L, L] (i, i'): i' < i
        seen = ((ids[:, :, None, :] == ids[:, None, :, :]) & earlier[None, :, :, None]).any(
            dim=2
        )  # [B, L, M]
        keep = (~seen & real[:, :, None]).reshape(b, n * m)  # [B, T] token (i, m) at flat index i M + m
        tok_pos = pos.repeat_interleave(m)  # [T]
        eye = torch.eye(n * m, dtype=torch.bool, device=dev)
        enc_mask = ((tok_pos[None, :] <= tok_pos[:, None])[None] & keep[:, None, :]) | eye  # [B, T, T]
        memory = self.interest_table()[ids.reshape(b, n * m)]  # [B, T, D]
        for enc in self.encoder:
            memory = enc(memory, enc_mask)
        memory = self.enc_norm(memory)  # [B, T, D]

        cross = (tok_pos[None, :] <= pos[:, None])[None] & keep[:, None, :]  # [B, L, T]
        cross = cross | ~cross.any(dim=-1, keepdim=True)  # only a zero-length row could be empty: avoid NaN
        x = self.pos_emb(pos)[None]  # [1, L, D]
        for token in self.tokens(items):  # the modality tokens are summed ("add" fusion)
            x = x + token  # [B, L, D]
        if self.item_emb is not None:
            x = x + self.item_emb(items)
        x = self.drop(self.ln(x))  # [B, L, D]
        causal = torch.ones(n, n, dtype=torch.bool, device=dev).tril()[None]  # [1, L, L]
        for dec in self.decoder:
            x = dec(x, causal, memory, cross)
        h = F.normalize(self.dec_norm(x), dim=-1)  # [B, L, D]

        w = cross.float()  # [B, L, T]
        total = w @ memory  # [B, L, D] sum of the interest states visible to each prefix
        return h, total.pow(2).sum(dim=-1) / total.size(-1), w.sum(dim=-1)

    # --- the contract ----------------------------------------------------------------------------------------

    def compute_loss(self, batch: Batch) -> Tensor:
        assert batch.targets is not None, "training batch needs targets"
        h, sq, n = self.represent(batch.items, batch.lengths)  # [B, L, D], [B, L], [B, L]
        mask = batch.targets > 0  # [B, L]
        logits = self.scores(h[mask])  # [P, N+1]
        logits[:, 0] = float("-inf")
        return F.cross_entropy(logits, batch.targets[mask]) + self.cfg.gamma * self.diversity(
            sq[mask], n[mask]
        )

    @staticmethod
    def diversity(sq: Tensor, n: Tensor) -> Tensor:
        """The regulariser over P trained prefixes: sum_j (n_j / N)^2 sq_j with sq_j = ||sum of its interest
        states||^2 / D and N = max_j n_j, i.e. ||(n_j / N) sum||^2 / D summed (the original's scale)."""
        return ((n / n.max()).pow(2) * sq).sum()

    def prefix_scores(self, items: Tensor, lengths: Tensor) -> Tensor:
        h, _, _ = self.represent(items, lengths)  # [B, L, D]
        y = self.scores(h.reshape(-1, h.size(-1))).view(h.size(0), h.size(1), -1)  # [B, L, N+1]
        y[..., 0] = float("-inf")
        return y

    def score_all(self, batch: Batch) -> Tensor:
        h, _, _ = self.represent(batch.items, batch.lengths)  # [B, L, D]
        return mask_padding_column(self.scores(gather_last(h, batch.lengths)))  # [B, N+1]

    def channel_scores_all(self, batch: Batch) -> dict[str, Tensor]:
        """'fused' (what is ranked), each modality's cosine alone (by feature name) and, with ``use_id``, the ID
        cosine ('id'), all divided by the temperature; [B, N+1] each, column 0 -inf."""
        h, _, _ = self.represent(batch.items, batch.lengths)  # [B, L, D]
        last = gather_last(h, batch.lengths)  # [B, D]
        tables = self.item_tables()
        out = {"fused": mask_padding_column(self.scores(last))}
        for name, table in zip(self.tokens.names, tables[: len(self.tokens)], strict=True):
            out[name if name not in out else f"modality {name}"] = mask_padding_column(
                last @ table.t() / self.cfg.temperature
            )
        if self.item_emb is not None:
            out["id"] = mask_padding_column(last @ tables[-1].t() / self.cfg.temperature)
        return out
