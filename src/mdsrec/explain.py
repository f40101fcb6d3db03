"""Why a run recommends what it does to one user: the case study of the MDSRec paper (arXiv 2412.08103, Figure 5)
as a library function and a text report.

For an MDSRec run the user's history is represented once (evaluation mode: no dropout, no Gumbel noise, so gamma is
the plain softmax of Eq. 19) and ranked by each channel separately:

* the fused scores y = y_s + sum_m rho_m y_m (Eq. 22), what the run is evaluated on (= ``score_all``);
* the ID channel y_s = e_s E_id^T (Eq. 20);
* each modality channel y_m = e-tilde_m E-hat_m^T (Eq. 21).

For every item a modality channel recommends it lists the items of the user's history (most recent first) that
are the item's neighbours in that modality's relation graph (row r of ``graph_idx_{m}``: the items whose ID
embeddings E-hat_m[r] averages, Eq. 5-6) and the interest centre (k-means cluster, ``member_idx_{m}``) it falls
in, with that centre's gamma for this user. Without MRGC there is no graph and without ICA no centres; the report
says so. Other models get the top-N of ``score_all`` only.

The stage picks the history: ``test`` (default) the history before the held-out test item, whose rank in every
channel is shown; ``valid`` the same for the validation item; ``next`` the whole sequence, as serving would use it
(no held-out item). As the evaluator, the model sees the last ``data.max_len`` items (the report's ``history``), and
history items are removed from the ranking only when the run's ``eval.exclude_history`` is true: the items of the
user's whole history before the held-out item, not only of the window (the held-out item always stays rankable).
An item's ``in_history`` flag means that whole history too, so with ``exclude_history`` no ranked item has it but a
repeated held-out item; the relation-graph neighbours and the items per interest centre are those of the window, what the model sees. NaN scores
are refused, as the evaluator refuses them.

The result is a plain JSON-ready dict (``explain``); ``render_text`` prints it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mdsrec.data.protocol import STAGES as _STAGES
from mdsrec.data.protocol import Batch
from mdsrec.data.users import item_ref, resolve_user, user_history
from mdsrec.errors import MdsrecError
from mdsrec.evaluation.ranking import exclusion_mask, masked, pad_histories, target_ranks, top_k
from mdsrec.models.mdsrec import MDSRec
from mdsrec.training.trainer import Experiment

log = logging.getLogger(__name__)

STAGES = _STAGES  # test (default), valid, next
TOP_CENTRES = 3  # interest centres listed per modality in the summary
FLAT_GAMMA = 1e-3  # max - min gamma below this: the report notes that no centre stands out


# ---------------------------------------------------------------------------------------------------------------
# The explanation
# ---------------------------------------------------------------------------------------------------------------


def explain(
    exp: Experiment,
    user: str,
    *,
    by_index: bool = False,
    stage: str = "test",
    top: int = 10,
    run: str | Path | None = None,
) -> dict[str, Any]:
    """Explain the run's recommendations for ``user`` (see the module docstring); a JSON-ready dict.

    Keys: run, model, data, user {index, token, resolved_by}, stage, exclude_history, history (item refs, oldest
    first: what the model sees), history_total, target (item ref or None), top, rankable, channels (list of
    {name, label, rho, items [{rank, score, in_history, ...item ref, and per modality: history_neighbours,
    centre, centre_gamma, centre_rank}], target_rank}), modalities (MDSRec: per modality relation_graph, h,
    interest_centres, k, top_centres, target_neighbours), target_shared_neighbours, notes.

    ``in_history`` (items and target_neighbours): in the user's whole history before the held-out item, the items
    that ``eval.exclude_history`` removes; ``history`` and ``history_neighbours`` are the window the model sees.
    The model is put in evaluation mode (and left in it)."""
    if stage not in STAGES:
        raise MdsrecError(f"stage ({stage!r}) must be one of {', '.join(STAGES)}")
    if top < 1:
        raise MdsrecError(f"--top ({top}) must be >= 1")
    data, model, cfg = exp.data, exp.model, exp.cfg
    index, how = resolve_user(data, user, by_index)
    full_history, target = user_history(data, index, stage)
    window = full_history[-cfg.data.max_len :]
    items = torch.from_numpy(window.astype(np.int64))[None].to(exp.device)  # [1, L]
    lengths = torch.tensor([len(window)], device=exp.device)  # [1]
    model.eval()  # no dropout, no Gumbel noise

    history = pad_histories([full_history]) if cfg.eval.exclude_history else None  # [1, H]
    keep = torch.tensor([0 if target is None else target])  # [1] a repeated held-out item stays rankable
    mask = exclusion_mask(data.num_items, history, keep)[0]  # [N+1] True: not rankable

    def prepared(y: Tensor) -> Tensor:
        # float64 stays float64: cooc's popularity tie-break exists only at that precision (half types widen).
        y = y.detach().reshape(-1).cpu()
        scores = masked(y if y.dtype == torch.float64 else y.float(), mask)  # [N+1]
        # as the evaluator: NaN compares false, so ranks would be wrong
        if torch.isnan(scores).any():
            raise MdsrecError(
                f"model {model.name} produced NaN scores for user {data.user_tokens[index]!r} (index {index}, "
                f"stage {stage}): the run's weights or inputs are broken"
            )
        return scores

    history_set = {int(i) for i in full_history}  # what exclude_history removes, not only the window
    result: dict[str, Any] = {
        "run": None if run is None else str(run),
        "model": model.name,
        "data": data.name,
        "user": {"index": index, "token": data.user_tokens[index], "resolved_by": how},
        "stage": stage,
        "exclude_history": bool(cfg.eval.exclude_history),
        "history": [item_ref(data, int(i)) for i in window],
        "history_total": len(full_history),
        "target": None if target is None else item_ref(data, target),
        "top": top,
        "rankable": int((~mask).sum()),
        "channels": [],
        "modalities": [],
        "target_shared_neighbours": [],
        "notes": [],
    }

    def channel(name: str, label: str, scores: Tensor, rho: float | None = None) -> dict[str, Any]:
        order, rankable = top_k(scores, top)  # [top], []
        ranked = [int(i) for i in order[: min(top, int(rankable))]]
        return {
            "name": name,
            "label": label,
            "rho": rho,
            "items": [
                {"rank": r, **item_ref(data, i), "score": float(scores[i]), "in_history": i in history_set}
                for r, i in enumerate(ranked, 1)
            ],
            "target_rank": None
            if target is None
            else int(target_ranks(scores[None], torch.tensor([target]))[0]),
        }

    if not isinstance(model, MDSRec):
        with torch.no_grad():
            y = model.score_all(Batch(items, lengths))  # [1, N+1]
        result["channels"].append(channel("score_all", f"{model.name}: score_all", prepared(y)))
        result["notes"].append(
            f"the per-modality explanation (channels, relation-graph neighbours, interest centres) is MDSRec-only; "
            f"{model.name} shows the top-{top} of score_all"
        )
        return result

    mcfg = model.cfg
    with torch.no_grad():
        out = model.represent(items, lengths, (lengths - 1)[:, None])  # one prefix: the whole window
        y_s, y_m = model.channel_scores(out)  # [1, 1, N+1], M x [1, 1, N+1]
        y = model.fuse(y_s, y_m)  # [1, 1, N+1] Eq. 22 (= score_all)
    result["channels"].append(channel("fused", "fused y = y_s + sum_m rho_m y_m (Eq. 22)", prepared(y)))
    result["channels"].append(channel("id", "ID channel y_s = e_s E_id^T (Eq. 20)", prepared(y_s)))

    if not mcfg.use_mrgc:
        result["notes"].append(
            "w/o MRGC (model.use_mrgc=false): a modality scores against a learned projection of its raw features; "
            "there is no relation graph, so no graph neighbours are shown"
        )
    elif mcfg.h == 0:
        result["notes"].append(
            "model.h=0: every item's relation graph holds only the item itself, so no item has graph neighbours"
        )
    if not mcfg.use_ica:
        result["notes"].append(
            "w/o ICA (model.use_ica=false): no interest centres (e-tilde_m = e_m), so no centre or gamma is shown"
        )

    target_neighbours: list[set[int]] = []
    for m, name in enumerate(model.modalities):
        rho = float(model.rho[m])
        ch = channel(
            f"modality:{name}",
            f"modality {name!r}: y_m = e-tilde_m E-hat_m^T (Eq. 21)",
            prepared(y_m[m]),
            rho,
        )
        labels = model.centre_labels(m)
        gamma = (
            out.gamma[m].reshape(-1).float().cpu() if labels is not None else None
        )  # [K] noise-free Eq. 19
        centre_rank = (
            {int(c): r for r, c in enumerate(torch.sort(-gamma, stable=True).indices.tolist(), 1)}
            if gamma is not None
            else {}
        )
        for entry in ch["items"]:
            i = entry["id"]
            if mcfg.use_mrgc:
                row = set(model.graph_neighbours(m, i)) - {i}
                recent_first = dict.fromkeys(int(h) for h in window[::-1] if int(h) in row)
                entry["history_neighbours"] = [item_ref(data, h) for h in recent_first]
            else:
                entry["history_neighbours"] = None
            if labels is not None and gamma is not None:
                c = int(labels[i])
                entry["centre"], entry["centre_gamma"] = c, float(gamma[c])
                entry["centre_rank"] = centre_rank[c]
            else:
                entry["centre"] = entry["centre_gamma"] = entry["centre_rank"] = None
        result["channels"].append(ch)

        summary: dict[str, Any] = {
            "name": name,
            "rho": rho,
            "relation_graph": bool(mcfg.use_mrgc),
            "h": mcfg.h if mcfg.use_mrgc else None,
            "include_self": mcfg.include_self if mcfg.use_mrgc else None,
            "interest_centres": bool(mcfg.use_ica),
            "k": mcfg.k if mcfg.use_ica else None,
            "top_centres": [],
            "target_neighbours": None,
        }
        if labels is not None and gamma is not None:
            in_centre = np.bincount(labels[window], minlength=mcfg.k)  # [K] history items per centre
            best = torch.sort(-gamma, stable=True).indices[: min(TOP_CENTRES, mcfg.k)]
            summary["top_centres"] = [
                {"centre": int(c), "gamma": float(gamma[c]), "history_items": int(in_centre[c])} for c in best
            ]
            spread = float(gamma.max() - gamma.min())
            if spread < FLAT_GAMMA:
                result["notes"].append(
                    f"modality {name!r}: the {mcfg.k} centres get (nearly) equal gamma for this user (max - min "
                    f"{spread:.1e}): interest-centralized attention does not single out an interest here"
                )
        if target is not None and mcfg.use_mrgc:
            nb = [j for j in model.graph_neighbours(m, target) if j != target]
            target_neighbours.append(set(nb))
            summary["target_neighbours"] = [{**item_ref(data, j), "in_history": j in history_set} for j in nb]
        result["modalities"].append(summary)

    if len(target_neighbours) > 1:
        shared = sorted(set.intersection(*target_neighbours))
        result["target_shared_neighbours"] = [item_ref(data, j) for j in shared]
    return result


# ---------------------------------------------------------------------------------------------------------------
# Text report
# ---------------------------------------------------------------------------------------------------------------


def _name(ref: dict[str, Any]) -> str:
    return f"{ref['key']} (#{ref['id']})"


def render_text(report: dict[str, Any]) -> str:
    """A readable report of ``explain``'s result."""
    u, target = report["user"], report["target"]
    lines = [
        f"Explanation: model {report['model']}, data {report['data']}"
        + (f", run {report['run']}" if report["run"] else ""),
        f"User {u['token']!r} (index {u['index']}), stage {report['stage']}: "
        + (
            f"history before the held-out {report['stage']} item {_name(target)}"
            if target is not None
            else "the whole sequence (the next item after it, as served)"
        ),
    ]
    hist = report["history"]
    seen = (
        f"all {len(hist)} items"
        if len(hist) == report["history_total"]
        else f"the last {len(hist)} of {report['history_total']} items"
    )
    lines.append(f"History, oldest first ({seen}): " + ", ".join(_name(h) for h in hist))
    lines.append(
        f"Ranking over {report['rankable']} items; history items "
        + ("excluded" if report["exclude_history"] else "not excluded")
        + " (the run's eval.exclude_history)."
    )
    for note in report["notes"]:
        lines.append(f"Note: {note}.")
    if report["target_shared_neighbours"]:
        lines.append(
            "Neighbours of the held-out item shared by every modality's graph: "
            + ", ".join(_name(r) for r in report["target_shared_neighbours"])
        )
    modalities = {m["name"]: m for m in report["modalities"]}
    tops = {c["name"]: {i["id"] for i in c["items"]} for c in report["channels"]}
    for ch in report["channels"]:
        lines.append("")
        head = ch["label"] + (f", rho {ch['rho']:.3g}" if ch["rho"] is not None else "")
        if ch["target_rank"] is not None:
            head += f"; held-out item ranks {ch['target_rank']} of {report['rankable']}"
        lines.append(head)
        modality = (
            modalities.get(ch["name"].removeprefix("modality:"))
            if ch["name"].startswith("modality:")
            else None
        )
        if modality is not None:
            if modality["top_centres"]:
                lines.append(
                    "  user's interest centres (gamma, noise-free): "
                    + ", ".join(
                        f"c{c['centre']} {c['gamma']:.3f} ({c['history_items']} of the history)"
                        for c in modality["top_centres"]
                    )
                )
            if modality["target_neighbours"] is not None and target is not None:
                nb = modality["target_neighbours"]
                lines.append(
                    "  held-out item's graph neighbours: "
                    + (", ".join(_name(r) + (" [history]" if r["in_history"] else "") for r in nb) or "none")
                )
        for item in ch["items"]:
            flags = []
            if item["in_history"]:
                flags.append("in history")
            if target is not None and item["id"] == target["id"]:
                flags.append("HELD-OUT ITEM")
            if ch["name"] == "fused":
                also = [c for c in tops if c != "fused" and item["id"] in tops[c]]
                if also:
                    flags.append("also top in " + ", ".join(a.removeprefix("modality:") for a in also))
            if modality is not None:
                if item.get("centre") is not None:
                    flags.append(
                        f"centre c{item['centre']} (gamma {item['centre_gamma']:.3f}, "
                        f"#{item['centre_rank']} of the user's)"
                    )
                nbs = item.get("history_neighbours")
                if nbs is not None:
                    flags.append(
                        "graph neighbours in history: "
                        + (", ".join(_name(r) for r in nbs) if nbs else "none")
                    )
            lines.append(
                f"  {item['rank']:>3}. {_name(item):<24} {item['score']:>9.4f}"
                + (f"  {'; '.join(flags)}" if flags else "")
            )
    return "\n".join(lines) + "\n"
