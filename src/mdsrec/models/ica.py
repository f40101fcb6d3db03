"""Interest-centralized attention (ICA) of MDSRec (arXiv 2412.08103, Eq. 10-19): k-means centres of a modality's
items attend, layer by layer, over that modality's Transformer states with the same Q/K/V weights as the layer, and
a Gumbel-softmax over the last layer's centres weights them for each user state.

Every prefix is its own user history: the centres of the prefix ending at position p attend to positions <= p only,
so from layer 1 on they are per (user, position), [B, P, K, D].

Shape legend: B batch, L sequence length, P represented prefixes per row, D hidden, K centres, h heads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mdsrec.models.layers import CausalEncoder, MultiHeadSelfAttention, TransformerLayer

ACTIVATIONS = ("gelu", "sigmoid")
SCALES = ("head", "hidden")


class ICALayer(nn.Module):
    """Centres attend over one user's prefix of the modality Transformer's layer-(l-1) states, with that Transformer
    layer's own Q/K/V projections (Eq. 12-13); heads concatenated, then U (Eq. 14) and sigma((g W1 + b1) W2 + b2)
    (Eq. 15). U, W1, W2 are this layer's own weights. ``scale``: "head" divides the scores by sqrt(D / heads), as
    the Transformer does; "hidden" by Eq. 12's sqrt(D)."""

    def __init__(self, hidden: int, activation: str = "gelu", scale: str = "head") -> None:
        super().__init__()
        if activation not in ACTIVATIONS or scale not in SCALES:
            raise ValueError(
                f"activation in {ACTIVATIONS} and scale in {SCALES}, got {activation!r}, {scale!r}"
            )
        self.u = nn.Linear(hidden, hidden, bias=False)  # Eq. 14
        self.w1 = nn.Linear(hidden, hidden)  # Eq. 15
        self.w2 = nn.Linear(hidden, hidden)
        self.act = F.gelu if activation == "gelu" else torch.sigmoid
        self.scale_by_hidden = scale == "hidden"

    def forward(
        self, centres: Tensor, states: Tensor, attn: MultiHeadSelfAttention, visible: Tensor
    ) -> Tensor:
        """centres [B or 1, P or 1, K, D] (layer l-1), states [B, L, D], visible [B, P, L] (True: position j is in
        the prefix ending at the p-th represented position) -> centres of layer l [B, P, K, D].

        The D x D maps are applied per token, never per (prefix, centre): the output map (U, W1, W2 folded into
        one W, no activation between them) goes into the values, v_h W_h^T [B, h, L, D], and for per-prefix
        centres the query projection goes into the keys, k_h Wq_h [B, h, L, D]. Both are exact re-associations
        of Eq. 12-15. Cost O(B P K h L D + B L D^2) instead of O(B P K D^2); memory: scores [B, h, P, K, L]."""
        b, n, d = states.shape
        heads, dh = attn.heads, d // attn.heads
        scale = math.sqrt(d if self.scale_by_hidden else dh)
        k = attn.split_heads(attn.k(states))  # [B, h, L, D/h]
        v = attn.split_heads(attn.v(states))  # [B, h, L, D/h]
        # U, W1, W2 without an activation between them: one folded map x (W2 W1 U)^T + (W2 b1 + b2), exact.
        w = self.w2.weight @ self.w1.weight @ self.u.weight  # [D, D]
        bias = self.w2.weight @ self.w1.bias + self.w2.bias  # [D]
        # [B, h, L, D]: head h's values through W[:, h]^T (einsum, not a broadcast matmul: the weight's gradient
        # is then one [h, D/h, D] product, never a [B, h, D/h, D] tensor summed over B)
        v_out = torch.einsum("bhle,dhe->bhld", v, w.view(d, heads, dh))
        # layer-0 centres shared by every prefix: project once
        if centres.size(0) == 1 and centres.size(1) == 1:
            q = attn.q(centres[0, 0]).view(-1, heads, dh).transpose(0, 1)  # [h, K, D/h]
            scores = torch.einsum("hkd,bhld->bhkl", q, k)[:, :, None]  # [B, h, 1, K, L]
        else:  # per-prefix centres: q_h . k = c . (k_h Wq_h) + bq_h . k_h
            k_in = torch.einsum("bhle,hed->bhld", k, attn.q.weight.view(heads, dh, d))  # [B, h, L, D]
            k_bias = (k * attn.q.bias.view(1, heads, 1, dh)).sum(-1)  # [B, h, L]
            scores = torch.einsum("bpkd,bhld->bhpkl", centres, k_in) + k_bias[:, :, None, None, :]
        scores = torch.where(visible[:, None, :, None, :], scores / scale, float("-inf"))  # [B, h, P, K, L]
        out = torch.einsum("bhpkl,bhld->bpkd", scores.softmax(dim=-1), v_out)  # [B, P, K, D] heads summed
        return self.act(out + bias)  # [B, P, K, D]


def interest_centres(
    centres: Tensor,
    states: Sequence[Tensor],
    encoder: CausalEncoder,
    layers: Sequence[ICALayer],
    visible: Tensor,
) -> Tensor:
    """Eq. 12-16: layer-0 centres [K, D] (Eq. 11) through one ICA layer per Transformer layer of ``encoder``, each
    attending with that layer's attention weights over that layer's input states (``states[j]`` [B, L, D], the
    encoder's outputs, inputs first) -> the last layer's centres E_c [B, P, K, D]."""
    c = centres[None, None]  # [1, 1, K, D]: shared by all prefixes until the first layer
    for j, (layer, ica) in enumerate(zip(encoder.layers, layers, strict=True)):
        assert isinstance(layer, TransformerLayer)
        c = ica(c, states[j], layer.attn, visible)  # [B, P, K, D]
    return c


def centre_weights(e_m: Tensor, centres: Tensor, tau: float, gumbel: bool) -> Tensor:
    """Eq. 19: gamma = softmax((e_m E_c^T + g) / tau) [B, P, K] for states e_m [B, P, D] and centres E_c
    [B, P, K, D], with Gumbel noise g = log(delta) - log(1 - delta), delta ~ U(0, 1), when ``gumbel`` (training)."""
    logits = torch.einsum("bpd,bpkd->bpk", e_m, centres).float()  # [B, P, K] (fp32 for the noise)
    if gumbel:
        eps = torch.finfo(logits.dtype).eps
        delta = torch.rand_like(logits).clamp(eps, 1.0 - eps)
        logits = logits + torch.log(delta) - torch.log1p(-delta)
    return (logits / tau).softmax(dim=-1)
