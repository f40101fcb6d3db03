"""The one contract every model implements, and what a model may know about the data.

* ``compute_loss(batch) -> scalar``: the training loss of a training batch (``batch.targets`` set).
* ``score_all(batch) -> [B, N+1]``: scores of every item as the next item after each history; column 0 (padding)
  is -inf so it is never ranked.

The trainer and the evaluator use nothing else. Most sequential models only need ``encode`` (hidden state at every
position, causal) and ``item_table`` (output item embeddings); ``NextItemModel`` turns those into cross-entropy over
all items at every trained position and into full scores at the last position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from mdsrec.data.protocol import Batch
from mdsrec.models.catalogue import Chunking, Factors, Scores, catalogue_cross_entropy


@dataclass
class DataInfo:
    """What a model may know about the data set: catalogue size and the fixed modality feature tables."""

    num_items: int  # N; item ids are 1..N, 0 is padding
    max_len: int
    features: dict[str, np.ndarray] = field(default_factory=dict)  # name -> float32 [N+1, d_m], row 0 zeros
    train_sequences: list[np.ndarray] | None = None  # training parts only (for behaviour graphs, popularity)
    # A checkpoint's state dict when the model is rebuilt to load it: state derived from the data (graphs,
    # k-means centres, interests; ``register_derived``) is taken from it instead of being computed again.
    saved_state: Mapping[str, Tensor] | None = None


class SequentialRecommender(nn.Module):
    """Base class of every model: implement ``compute_loss`` and ``score_all``."""

    name: ClassVar[str]
    # True when the objective is the next item after each trained prefix, so all-prefix batching equals the
    # materialised one (False for cloze / random-masking objectives such as BERT4Rec's).
    prefix_objective: ClassVar[bool] = True
    # False for parameter-free references (popularity, item-to-item): the trainer evaluates them without training.
    trainable: ClassVar[bool] = True
    # When whole-catalogue scores are computed over item chunks (mdsrec.models.catalogue); make_experiment sets it
    # from train.score_chunk_above.
    chunking: Chunking = Chunking()

    @staticmethod
    def needs_materialized(cfg: Any) -> bool:
        """True when this model config's encoder is not causal, so it may only be trained on one target per row,
        the row's last position (data.train_mode: materialized); mdsrec.models.check_experiment refuses all-prefix
        rows for it (e.g. MMMLP's full token mixer)."""
        return False

    @staticmethod
    def needs_materialized_because(cfg: Any) -> str:
        """The setting that makes ``needs_materialized`` true, for the error message."""
        return ""

    def compute_loss(self, batch: Batch) -> Tensor:
        raise NotImplementedError

    def score_all(self, batch: Batch) -> Tensor:
        raise NotImplementedError

    def prefix_scores(self, items: Tensor, lengths: Tensor) -> Tensor:
        """items [B, L], lengths [B] -> [B, L, N+1]: in one pass, the scores after every prefix items[:, : p + 1]
        (column 0 -inf); position p depends only on items[:, : p + 1], and equals ``score_all`` of that prefix.
        Every causal model implements it (the registry-wide causality test checks both properties); a model
        whose encoder sees the whole sequence (BERT4Rec, MMMLP's full mixer) raises NotImplementedError."""
        raise NotImplementedError(f"{self.name} is not causal: it has no scores after every prefix")

    def channel_scores_all(self, batch: Batch) -> dict[str, Tensor]:
        """Scores [B, N+1] of each channel the ranking is made of, by name: 'fused' is ``score_all``'s (what is
        ranked), the others are its parts (MDSRec: 'id' for y_s and one per modality). For diagnostics only; a
        model with one channel returns 'fused' alone."""
        return {"fused": self.score_all(batch)}

    def score_factors(self, batch: Batch, channels: bool = False) -> dict[str, Scores] | None:
        """``channel_scores_all``'s scores as products of queries [B, D] with an item table (``Factors``), so that
        the evaluator can rank a large catalogue chunk by chunk: 'fused' alone, or with ``channels`` every channel.
        None when the model's scores are not such a product (the evaluator then ranks the whole [B, N+1] matrix)."""
        return None

    def register_derived(
        self, info: DataInfo, names: Sequence[str], compute: Callable[[], Sequence[Tensor]]
    ) -> None:
        """Register buffers of state derived from the data (relation graphs, k-means clusters): computed by
        ``compute`` when a run is created, saved with every checkpoint, and taken from ``info.saved_state`` when
        the model is rebuilt to load one, so loading a run (evaluate, recommend, serve) never recomputes them."""
        saved = info.saved_state
        if saved is not None and all(n in saved for n in names):
            values: Sequence[Tensor] = [saved[n].clone() for n in names]
        else:
            values = compute()
        for n, v in zip(names, values, strict=True):
            self.register_buffer(n, v)


def mask_padding_column(scores: Tensor) -> Tensor:
    """Column 0 is the padding item: never rankable."""
    scores[:, 0] = float("-inf")
    return scores


def gather_last(states: Tensor, lengths: Tensor) -> Tensor:
    """states [B, L, D], lengths [B] -> state at the last real position [B, D] (right padding)."""
    idx = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.size(-1))
    return states.gather(1, idx).squeeze(1)


class NextItemModel(SequentialRecommender):
    """A causal encoder plus dot-product scoring against an item table, trained with full cross-entropy."""

    def encode(self, items: Tensor, lengths: Tensor) -> Tensor:
        """items [B, L] -> hidden states [B, L, D]; position j depends only on items[:, : j + 1] (unless the
        config ``needs_materialized``: then only the last real position is read, in training too)."""
        raise NotImplementedError

    def item_table(self) -> Tensor:
        """Output item embeddings [N+1, D] (row 0 padding)."""
        raise NotImplementedError

    def encode_last(self, items: Tensor, lengths: Tensor) -> Tensor:
        """items [B, L] -> the hidden state at each row's last real position [B, D], what scoring reads: by default
        ``encode`` read there; a model may compute only that position in its last layer (SASRec)."""
        return gather_last(self.encode(items, lengths), lengths)

    def prefix_scores(self, items: Tensor, lengths: Tensor) -> Tensor:
        if self.needs_materialized(getattr(self, "cfg", None)):
            return super().prefix_scores(items, lengths)
        y = self.encode(items, lengths) @ self.item_table().t()  # [B, L, N+1]
        y[..., 0] = float("-inf")
        return y

    def compute_loss(self, batch: Batch) -> Tensor:
        assert batch.targets is not None, "training batch needs targets"
        states = self.encode(batch.items, batch.lengths)  # [B, L, D]
        mask = batch.targets > 0  # [B, L]
        h = states[mask]  # [P, D] trained positions only
        return catalogue_cross_entropy(Factors(h, self.item_table()), batch.targets[mask], self.chunking)

    def score_all(self, batch: Batch) -> Tensor:
        h = self.encode_last(batch.items, batch.lengths)  # [B, D]
        return mask_padding_column(h @ self.item_table().t())  # [B, N+1]

    def score_factors(self, batch: Batch, channels: bool = False) -> dict[str, Scores] | None:
        return {"fused": Factors(self.encode_last(batch.items, batch.lengths), self.item_table())}


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Normal(0, std) for linear and embedding weights, zero biases, unit LayerNorm (BERT/RecBole style)."""
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


T = TypeVar("T")


class EvalCache(Generic[T]):
    """Keeps one value computed from a module's weights (e.g. its whole-catalogue item table) while the module is in
    eval mode and grad is off, so evaluation does not rebuild it for every batch.

    The key is the version counter, storage, device, dtype and shape of every parameter and buffer of the module:
    any in-place edit (an optimiser step, ``load_state_dict``, a test changing a weight) or a move invalidates it.
    In training mode or with grad enabled the value is always recomputed (it may be random or need a graph) and
    the cache is dropped. The module holds the cache as a plain attribute: it is not part of the state dict.
    """

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._value: T | None = None

    def clear(self) -> None:
        self._key, self._value = None, None

    def get(self, module: nn.Module, compute: Callable[[], T]) -> T:
        if module.training or torch.is_grad_enabled():
            self.clear()
            return compute()
        key = tuple(
            (id(t), t._version, t.data_ptr(), t.device, t.dtype, t.shape)
            for t in (*module.parameters(), *module.buffers())
        ) + (
            torch.is_autocast_enabled("cpu"),
            torch.is_autocast_enabled("cuda"),
            torch.is_inference_mode_enabled(),  # tables made in inference mode are not for use outside it
        )
        if key != self._key or self._value is None:
            self._value, self._key = compute(), key
        return self._value


def check_divisible(hidden: int, heads: int) -> None:
    if heads <= 0 or hidden % heads:
        raise ValueError(f"hidden_size ({hidden}) must be divisible by num_heads ({heads})")


TRANSFORMER_SIZES = ("hidden_size", "inner_size", "num_layers", "num_heads")
DROPOUTS = ("dropout", "attn_dropout")


def check_config(
    cfg: Any,
    at_least_one: Iterable[str] = (),
    unit_interval: Iterable[str] = (),
    positive: Iterable[str] = (),
) -> None:
    """The checks model configs share, for their ``__post_init__``; each error names the field and its value.

    ``at_least_one``: integer fields >= 1 (sizes, counts); ``unit_interval``: fields in [0, 1) (dropouts);
    ``positive``: fields > 0 (init_std, temperatures). When the config has them, also: hidden_size divisible by
    num_heads, and activation 'gelu' or 'relu'.
    """
    for name in at_least_one:
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} ({getattr(cfg, name)}) must be >= 1")
    if hasattr(cfg, "num_heads") and hasattr(cfg, "hidden_size"):
        check_divisible(cfg.hidden_size, cfg.num_heads)
    for name in unit_interval:
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise ValueError(f"{name} ({getattr(cfg, name)}) must lie in [0, 1)")
    if hasattr(cfg, "activation") and cfg.activation not in ("gelu", "relu"):
        raise ValueError(f"activation ({cfg.activation!r}) must be 'gelu' or 'relu'")
    for name in positive:
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} ({getattr(cfg, name)}) must be > 0")


@dataclass
class TransformerConfig:
    """The fields every Transformer model's config starts with (SASRec's layout); a model's config subclasses it,
    overriding ``name`` and any default that differs, so two models can never drift apart silently."""

    name: str = ""
    hidden_size: int = 64
    inner_size: int = 256
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.5
    attn_dropout: float = 0.5
    activation: str = "gelu"
    init_std: float = 0.02

    def __post_init__(self) -> None:
        check_config(self, TRANSFORMER_SIZES, DROPOUTS, ("init_std",))


@dataclass
class GRUConfig:
    """The fields of the GRU models' configs (GRU4Rec's layout)."""

    name: str = ""
    embedding_size: int = 64
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.3

    def __post_init__(self) -> None:
        check_config(self, ("embedding_size", "hidden_size", "num_layers"), ("dropout",))


__all__ = [
    "DataInfo",
    "SequentialRecommender",
    "NextItemModel",
    "gather_last",
    "mask_padding_column",
    "init_weights",
    "check_divisible",
    "check_config",
    "EvalCache",
    "DROPOUTS",
    "TRANSFORMER_SIZES",
    "TransformerConfig",
    "GRUConfig",
]
