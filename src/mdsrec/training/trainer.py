"""The one trainer: Adam, full-ranking validation after every epoch, early stopping on ``train.valid_metric``,
atomic best/last checkpoints, exact resume, a progress bar and a per-epoch JSONL log.

Run directory::

    RUN_DIR/config.yaml   the resolved config      RUN_DIR/run.json      data path, fingerprint, versions
    RUN_DIR/last.pt       full state (resume)      RUN_DIR/best.pt       best-validation model
    RUN_DIR/log.jsonl     one line per epoch       RUN_DIR/metrics.json  valid/test metrics of the best epoch

Resume is exact: the epoch's batch order depends only on (seed, epoch), and last.pt holds the model, the optimizer,
the early-stopping state and the torch RNG state (dropout). The operational keys (``config.OPERATIONAL_KEYS``: progress
bar, thread count, eval batch size) may differ on resume and take the given values; another thread count can change
the last bits of floating-point sums.

A non-finite training loss or NaN validation scores stop training: the result is the best epoch so far and
metrics.json says ``diverged_at_epoch``; before the first evaluated epoch it is an error (``TrainingDiverged``).

A new run saves its config with every field of the model's config dataclass (``mdsrec.models.full_config``) in
config.yaml, the checkpoints and metrics.json, so that a later change of a model default cannot make it look like a
run made under the new default. Runs saved before held only the given model keys; they resume as they are, and the
config given to a resume is compared with the saved one in full form (defaults filled in on both sides).

A parameter-free model (``trainable = False``: popularity, item-to-item references) gets no optimizer and no epochs:
its validation and test metrics are computed once and the run directory holds the same files (epoch-0 checkpoints,
an empty log, metrics.json with epochs 0), so ``mdsrec evaluate --run`` treats it like any run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from mdsrec import __version__
from mdsrec.atomic import locked_directory, remove_stale, write_json, write_text
from mdsrec.config import ExperimentConfig, build_config, config_differences
from mdsrec.data.processed import ProcessedDataset, load_processed
from mdsrec.data.protocol import Batch, Split, build_train_rows, eval_batches, train_batches
from mdsrec.distributed import SINGLE, CommTimer, Group, all_sum, barrier, from_env
from mdsrec.errors import ConfigError, MdsrecError, TrainingDiverged
from mdsrec.evaluation.evaluator import diagnose, evaluate, item_train_counts
from mdsrec.models import DataInfo, SequentialRecommender, build_model, check_experiment, full_config
from mdsrec.models.catalogue import Chunking
from mdsrec.rundir import (
    BEST,
    CONFIG,
    LAST,
    LOG,
    METRICS,
    RUN_INFO,
    TRAINER_FILES,
    checkpoint_path,
    run_data_path,
)
from mdsrec.training.checkpoint import (
    check_fingerprint,
    load_model_state,
    load_run_checkpoint,
    save_checkpoint,
)
from mdsrec.training.transfer import load_transferable, transfer_source

log = logging.getLogger(__name__)
STAGES = ("valid", "test")


@dataclass
class Experiment:
    """A model built for a data set under a config, with its split."""

    cfg: ExperimentConfig
    data: ProcessedDataset
    split: Split
    model: SequentialRecommender
    device: torch.device
    group: Group = SINGLE  # the processes of a torchrun launch (SINGLE: one process)


def make_experiment(
    cfg: ExperimentConfig, data: ProcessedDataset, saved_state: dict[str, Any] | None = None
) -> Experiment:
    """Build the model for a new run, or, with ``saved_state`` (a checkpoint's model state), for loading one: then
    the state derived from the data (graphs, clusters) comes from the checkpoint and no transfer is applied."""
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    torch.manual_seed(cfg.train.seed)
    split = Split(data.sequences)
    info = DataInfo(
        num_items=data.num_items,
        max_len=cfg.data.max_len,
        features=data.features,
        train_sequences=[split.train_part(u) for u in range(split.num_users)],
        saved_state=saved_state,
    )
    device = torch.device(cfg.train.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device ({cfg.train.device!r}): CUDA is not available on this machine")
    if device.type == "cuda" and cfg.train.precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("train.precision (bf16): this GPU does not support bfloat16; use fp32")
    check_experiment(cfg)
    model = build_model(cfg.model, info)
    model.chunking = Chunking(above_items=cfg.train.score_chunk_above, num_items=data.num_items)
    source = transfer_source(model)
    if saved_state is None and source is not None:  # a new run starts from another run's parameters
        load_transferable(model, source)
    return Experiment(cfg, data, split, model.to(device), device)


def git_commit() -> str | None:
    """The commit of this source tree (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def train(
    cfg: ExperimentConfig | None, data: ProcessedDataset, run_dir: str | Path, resume: bool = False
) -> dict[str, Any]:
    """Train (or resume) a run and write RUN_DIR/metrics.json; returns the metrics dict.

    With ``resume`` and ``cfg`` None the run's saved config is used; a given ``cfg`` must equal it (full forms
    compared, ``full_config``). A new run saves ``cfg`` in full form.
    """
    run_dir = Path(run_dir)
    device = cfg.train.device if cfg is not None else _saved_device(run_dir / CONFIG)
    group, _ = from_env(torch.device(device))  # torchrun: join the process group (SINGLE otherwise)
    # two commands never train into one run directory; under torchrun process 0 alone writes and locks it
    with locked_directory(run_dir, "training run") if group.main else contextlib.nullcontext():
        if group.main:
            remove_stale(run_dir, TRAINER_FILES)  # a killed trainer's half-written .last.pt.tmp-<pid>, ...
        return _train(cfg, data, run_dir, resume, group)


def _saved_device(config: Path) -> str:
    try:
        return str((yaml.safe_load(config.read_text()) or {}).get("train", {}).get("device", "cpu"))
    except (OSError, yaml.YAMLError, AttributeError):
        return "cpu"


def _train(
    cfg: ExperimentConfig | None, data: ProcessedDataset, run_dir: Path, resume: bool, group: Group
) -> dict[str, Any]:
    last_path = run_dir / LAST
    if resume:
        if (run_dir / CONFIG).is_file() and not last_path.exists():
            raise MdsrecError(
                f"--resume: {run_dir} has a config.yaml but no last.pt: the run stopped before its first epoch "
                "ended, so there is nothing to resume; run the same command without --resume to start it over"
            )
        if not last_path.is_file() or not (run_dir / CONFIG).is_file():
            raise MdsrecError(f"--resume: {last_path} or its config.yaml not found (nothing to resume)")
        saved_cfg = build_config(yaml.safe_load((run_dir / CONFIG).read_text()))
        if cfg is not None:
            diff = config_differences(full_config(saved_cfg).to_dict(), full_config(cfg).to_dict())
            if diff:
                raise MdsrecError(
                    f"--resume: the given config differs from the run's {run_dir / CONFIG} in "
                    f"{', '.join(diff)}; resume with the same --config/--set (a changed run is a new run)"
                )
        if cfg is not None:  # how it is shown and how fast it runs follow the given config
            saved_cfg.train.progress, saved_cfg.train.num_threads = cfg.train.progress, cfg.train.num_threads
            saved_cfg.data.eval_batch_size = cfg.data.eval_batch_size
            saved_cfg.eval.diagnostics = cfg.eval.diagnostics
        cfg = saved_cfg  # as saved: a run from before full model sections keeps its own
    elif cfg is None:
        raise MdsrecError("a new run needs a config")
    elif last_path.exists() or (run_dir / METRICS).exists():
        raise MdsrecError(
            f"{run_dir} already holds a run: pass --resume to continue it or choose another --out"
        )
    else:
        cfg = full_config(cfg)  # every model field saved, defaults included

    metric = cfg.train.valid_metric
    if metric not in _metric_names(cfg):
        raise MdsrecError(f"train.valid_metric ({metric!r}) must be one of {_metric_names(cfg)}")
    ck: dict[str, Any] | None = None
    if resume:
        ck = load_run_checkpoint(run_dir, last_path)
        check_fingerprint(ck, data.fingerprint, data.path or "data", last_path)
    exp = make_experiment(cfg, data, None if ck is None else ck["model_state"])
    if group.active:  # the same model on every process (built alike); CUDA: this process's own device
        exp.group = group
        _, exp.device = from_env(exp.device)
        exp.model.to(exp.device)
    model, device = exp.model, exp.device
    if not model.trainable:
        return _evaluate_reference(run_dir, cfg, data, exp, ck)
    optimizer = make_optimizer(model, cfg.train.lr, cfg.train.weight_decay)
    state: dict[str, Any] = {"epoch": 0, "best_epoch": 0, "best_score": -1.0, "bad_epochs": 0, "history": []}

    if ck is not None:
        load_model_state(model, ck["model_state"], last_path)
        load_optimizer_state(optimizer, ck["optimizer_state"])
        torch.set_rng_state(ck["rng_torch"])
        if device.type == "cuda" and "rng_cuda" in ck:
            torch.cuda.set_rng_state_all(ck["rng_cuda"])
        state = {k: ck[k] for k in state}
        if group.main:
            _repair_best(run_dir, ck)
        log.info("resumed %s at epoch %d", run_dir, state["epoch"])
    elif group.main:
        _start_run(run_dir, cfg, data, group)
    # under torchrun the gradients of the processes' slices are averaged (see mdsrec.distributed)
    ddp = DistributedDataParallel(_Loss(model), find_unused_parameters=True) if group.active else None
    comm = CommTimer()  # seconds of communication per epoch, logged under torchrun
    if ddp is not None:
        comm.install(ddp)

    rows = build_train_rows(exp.split, cfg.data.max_len, cfg.data.train_mode)
    valid_batches = eval_batches(exp.split, "valid", cfg.data)
    counts = item_train_counts(exp.split, data.num_items)  # [N+1] for the popularity buckets

    finished = state["bad_epochs"] >= cfg.train.patience or state["epoch"] >= cfg.train.epochs
    diverged: int | None = None  # the epoch whose training loss or validation scores became non-finite
    while not finished:
        epoch = state["epoch"] + 1
        model.train()
        t0, cpu0 = time.perf_counter(), time.process_time()
        batches = train_batches(rows, cfg.data, epoch_seed=cfg.train.seed * 100_003 + epoch)
        total, count = 0.0, 0
        progress = cfg.train.progress and group.main
        bar = tqdm(batches, desc=f"epoch {epoch}", disable=not progress, leave=False, unit="batch")
        for batch in bar:
            local, weight = local_rows(batch, group)
            loss = training_loss(ddp or model, local, cfg.train.precision, device)
            # the global batch's mean loss, the same number on every process
            if group.active:
                t_sum = time.perf_counter()
                value = all_sum(loss.item() * weight, group) / group.world
                comm.seconds += time.perf_counter() - t_sum
            else:
                value = loss.item()
            if not math.isfinite(value):
                diverged = _diverged(epoch, f"training loss became {value}", state["best_epoch"])
                break
            optimizer_step(model, optimizer, loss * weight if group.active else loss, cfg.train.grad_clip)
            total += value
            count += 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        if diverged:
            break
        train_seconds = time.perf_counter() - t0
        # processor seconds of this process (every thread): not inflated by a pause or by other processes
        train_cpu_seconds = time.process_time() - cpu0
        comm_seconds = comm.take()
        t1 = time.perf_counter()
        diagnosis: dict[str, Any] = {}
        try:
            if cfg.eval.diagnostics:
                d = diagnose(
                    model, exp.split, "valid", cfg.data, cfg.eval, counts, device, valid_batches, group
                )
                valid, diagnosis = d.metrics, {f"valid_{k}": v for k, v in d.to_dict().items()}
            else:
                valid = evaluate(model, exp.split, "valid", cfg.data, cfg.eval, device, valid_batches, group)
        except FloatingPointError as e:  # NaN scores: the last steps left non-finite parameters
            diverged = _diverged(epoch, f"validation failed ({e})", state["best_epoch"])
            break
        eval_seconds = time.perf_counter() - t1
        score = valid[metric]
        improved = score > state["best_score"] + cfg.train.min_delta
        if improved:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        record = {
            "epoch": epoch,
            "train_loss": total / max(count, 1),
            "train_seconds": round(train_seconds, 3),
            "train_cpu_seconds": round(train_cpu_seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            **({"comm_seconds": round(comm_seconds, 3)} if group.active else {}),
            **{f"valid_{k}": v for k, v in valid.items()},
            "best": improved,
            **diagnosis,  # valid_channels, valid_popularity (eval.diagnostics)
        }
        state["history"].append(record)
        state["epoch"] = epoch
        if group.main:
            _save_epoch(run_dir, cfg, data, model, optimizer, state, improved, device)
        log.info(
            "epoch %d loss %.4f valid %s %.4f%s (%.1fs)",
            epoch,
            record["train_loss"],
            metric,
            score,
            " *" if improved else "",
            train_seconds,
        )
        finished = state["bad_epochs"] >= cfg.train.patience or epoch >= cfg.train.epochs

    barrier(group)  # best.pt is written before every process reads it
    return finalize(run_dir, cfg, data, exp, state, diverged)


def _save_epoch(
    run_dir: Path,
    cfg: ExperimentConfig,
    data: ProcessedDataset,
    model: SequentialRecommender,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    improved: bool,
    device: torch.device,
) -> None:
    """last.pt, best.pt when the epoch improved, and the epoch log (process 0 only under torchrun)."""
    epoch = state["epoch"]
    last_path, best_path = run_dir / LAST, run_dir / BEST
    save_checkpoint(
        last_path,
        {
            **_model_state(cfg, data, model, epoch),
            "optimizer_state": optimizer.state_dict(),
            "rng_torch": torch.get_rng_state(),
            **({"rng_cuda": torch.cuda.get_rng_state_all()} if device.type == "cuda" else {}),
            **{k: state[k] for k in ("best_epoch", "best_score", "bad_epochs", "history")},
        },
    )
    if improved:  # after last.pt: a crash in between is repaired on resume (see _repair_best)
        save_checkpoint(best_path, _model_state(cfg, data, model, epoch))
    write_text(run_dir / LOG, "".join(json.dumps(r) + "\n" for r in state["history"]))


def _cpu_seconds_per_epoch(history: list[dict[str, Any]]) -> dict[str, float]:
    """{"cpu_seconds_per_epoch": mean processor seconds of training per epoch} over the epochs that logged them
    (a run resumed from an older version has epochs without); {} when none did."""
    cpu = [float(r["train_cpu_seconds"]) for r in history if "train_cpu_seconds" in r]
    return {"cpu_seconds_per_epoch": round(sum(cpu) / len(cpu), 3)} if cpu else {}


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """The trainer's Adam, torch's default implementation for the device. Not the fused kernel: its in-place update
    does not move the parameters' version counters, which the models' evaluation caches of whole-catalogue tables
    read to see a changed weight (the Sports MDSRec step it would save is 1%: ``benchmarks/speed_mdsrec.py
    --adam``)."""
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a checkpoint's optimizer state, keeping this optimizer's implementation (``fused``, ``foreach``): a
    state saved by another one resumes with this one; the settings that change the update (lr, betas, ...) and the
    moments come from the checkpoint."""
    impl = [{k: g.get(k) for k in ("fused", "foreach")} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, keep in zip(optimizer.param_groups, impl, strict=True):
        group.update(keep)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The context a training forward pass runs in: ``torch.autocast`` to bfloat16 for ``train.precision: bf16``
    (matrix products, and on CPU also softmax/layer norm, in bf16; parameters, gradients and optimizer state stay
    fp32), nothing for ``fp32``."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class _Loss(nn.Module):
    """A model whose forward pass is its training loss: what DistributedDataParallel wraps (it synchronises the
    gradients of the parameters its forward pass used)."""

    def __init__(self, model: SequentialRecommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.model.compute_loss(batch)


def training_loss(
    model: SequentialRecommender | nn.Module, batch: Batch, precision: str, device: torch.device
) -> torch.Tensor:
    """The model's training loss on one batch (moved to ``device`` here, for the trainer and the speed benchmarks
    alike), under ``train.precision``; always an fp32 scalar. ``model`` may be the DDP-wrapped loss module."""
    batch = batch.to(device)
    with autocast(precision, device):
        loss = model.compute_loss(batch) if isinstance(model, SequentialRecommender) else model(batch)
    return loss.float()


def optimizer_step(
    model: SequentialRecommender, optimizer: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float
) -> None:
    """Backward pass, optional gradient-norm clipping (``train.grad_clip`` > 0), one optimizer step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def _diverged(epoch: int, what: str, best_epoch: int) -> int:
    """Training stops at a non-finite loss or validation: with an evaluated epoch behind it, the best one is the
    result (returns ``epoch``); without one there is nothing to report (TrainingDiverged)."""
    if best_epoch == 0:
        raise TrainingDiverged(f"epoch {epoch}: {what} before any epoch was evaluated (try a lower lr)")
    log.warning(
        "epoch %d: %s: training stops, the result is the best epoch so far (%d)", epoch, what, best_epoch
    )
    return epoch


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def provenance(device: torch.device, total_seconds: float, group: Group = SINGLE) -> dict[str, Any]:
    """What a reader needs to trust and repeat a finished run: the command, the code's commit, library versions,
    the hardware and thread count, when it finished and its total training + validation seconds (the
    ``provenance`` field of metrics.json; records made before it existed lack it)."""
    import numpy

    return {
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else None,
        "git_commit": git_commit(),
        "versions": {
            "mdsrec": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": numpy.__version__,
        },
        "cpu": _cpu_model(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "world_size": group.world,  # processes (torchrun); 1: one process
        "backend": group.backend,  # gloo / nccl under torchrun, else None
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "total_seconds": round(total_seconds, 3),
    }


def _start_run(run_dir: Path, cfg: ExperimentConfig, data: ProcessedDataset, group: Group = SINGLE) -> None:
    """A new run directory: the resolved config and where the run comes from."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / CONFIG, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    write_json(
        run_dir / RUN_INFO,
        {
            "data_path": str(Path(data.path).resolve()) if data.path else None,
            "data_name": data.name,
            "data_fingerprint": data.fingerprint,
            "mdsrec_version": __version__,
            "git_commit": git_commit(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "world_size": group.world,
            "backend": group.backend,
        },
    )


def _evaluate_reference(
    run_dir: Path, cfg: ExperimentConfig, data: ProcessedDataset, exp: Experiment, ck: dict[str, Any] | None
) -> dict[str, Any]:
    """A parameter-free model (``trainable = False``): no optimizer and no epochs; the run directory gets the same
    files as a trained run (best.pt and last.pt at epoch 0, an empty log.jsonl, metrics.json with epochs 0)."""
    model = exp.model
    if any(True for _ in model.parameters()):
        raise MdsrecError(f"model {model.name} says trainable = False but has parameters")
    last_path = run_dir / LAST
    if (
        ck is not None
    ):  # resumed: the checkpoints were written, metrics.json maybe not: evaluate again from best.pt
        state = {k: ck[k] for k in ("epoch", "best_epoch", "best_score", "bad_epochs", "history")}
        if exp.group.main:
            _repair_best(run_dir, ck)
    elif not exp.group.main:
        state = {"epoch": 0, "best_epoch": 0, "best_score": -1.0, "bad_epochs": 0, "history": []}
    else:
        _start_run(run_dir, cfg, data, exp.group)
        # best_score is not known before finalize's evaluation; -1.0 as in a run that has not evaluated yet
        state = {"epoch": 0, "best_epoch": 0, "best_score": -1.0, "bad_epochs": 0, "history": []}
        save_checkpoint(
            last_path, {**_model_state(cfg, data, model, 0), "rng_torch": torch.get_rng_state(), **state}
        )
        save_checkpoint(run_dir / BEST, _model_state(cfg, data, model, 0))
        write_text(run_dir / LOG, "")
    log.info("%s has no parameters: evaluated without training", model.name)
    barrier(exp.group)
    return finalize(run_dir, cfg, data, exp, state)


def _repair_best(run_dir: Path, last: dict[str, Any]) -> None:
    """If the run crashed between writing last.pt and best.pt in its best epoch, rebuild best.pt from last.pt."""
    best_path = run_dir / BEST
    if last["best_epoch"] != last["epoch"]:
        return
    if best_path.is_file():
        try:
            if load_run_checkpoint(run_dir, best_path)["epoch"] == last["epoch"]:
                return
        except MdsrecError as e:  # damaged, but last.pt holds the same epoch's model: rebuilt below
            log.warning("%s", e)
    keys = ("config", "data_fingerprint", "data_name", "epoch", "model_state")
    save_checkpoint(best_path, {k: last[k] for k in keys})
    log.info("rebuilt %s from last.pt (epoch %d)", best_path, last["epoch"])


def _metric_names(cfg: ExperimentConfig) -> list[str]:
    return [f"{m}@{k}" for k in cfg.eval.ks for m in ("recall", "ndcg", "mrr")]


def _model_state(
    cfg: ExperimentConfig, data: ProcessedDataset, model: SequentialRecommender, epoch: int
) -> dict[str, Any]:
    return {
        "config": cfg.to_dict(),
        "data_fingerprint": data.fingerprint,
        "data_name": data.name,
        "epoch": epoch,
        "model_state": model.state_dict(),
    }


def finalize(
    run_dir: Path,
    cfg: ExperimentConfig,
    data: ProcessedDataset,
    exp: Experiment,
    state: dict[str, Any],
    diverged: int | None = None,
) -> dict[str, Any]:
    """Evaluate best.pt on valid and test and write metrics.json (``diverged``: the epoch where the training loss
    became non-finite and training stopped, else None)."""
    best = load_run_checkpoint(run_dir, run_dir / BEST)
    load_model_state(exp.model, best["model_state"], run_dir / BEST)
    diagnostics: dict[str, Any] = {}
    if cfg.eval.diagnostics:
        counts = item_train_counts(exp.split, data.num_items)
        dv, dt = (
            diagnose(exp.model, exp.split, st, cfg.data, cfg.eval, counts, exp.device, None, exp.group)
            for st in STAGES
        )
        valid, test = dv.metrics, dt.metrics
        diagnostics = {"diagnostics": {"valid": dv.to_dict(), "test": dt.to_dict()}}
    else:
        valid = evaluate(exp.model, exp.split, "valid", cfg.data, cfg.eval, exp.device, None, exp.group)
        test = evaluate(exp.model, exp.split, "test", cfg.data, cfg.eval, exp.device, None, exp.group)
    hist = state["history"]
    metrics = {
        "valid": valid,
        "test": test,
        "best_epoch": state["best_epoch"],
        "epochs": state["epoch"],
        "diverged_at_epoch": diverged,
        "seconds_per_epoch": round(sum(r["train_seconds"] for r in hist) / max(len(hist), 1), 3),
        "eval_seconds": round(sum(r["eval_seconds"] for r in hist) / max(len(hist), 1), 3),
        **_cpu_seconds_per_epoch(hist),
        "exclude_history": cfg.eval.exclude_history,
        "data": {
            "name": data.name,
            "fingerprint": data.fingerprint,
            "path": str(data.path) if data.path else None,
            # each file's sha256: when a set of the same name is prepared again and its fingerprint differs,
            # `records restore` can name the files that differ
            "files": dict(data.manifest.get("files", {})),
        },
        "config": cfg.to_dict(),
        "provenance": provenance(
            exp.device, sum(r["train_seconds"] + r["eval_seconds"] for r in hist), exp.group
        ),
        **diagnostics,  # per channel and per popularity bucket, valid and test (eval.diagnostics)
    }
    if exp.group.main:
        write_json(run_dir / METRICS, metrics)
    barrier(exp.group)
    return metrics


def open_run(
    run_dir: str | Path, data: str | None = None, which: str = "best", device: str | None = None
) -> Experiment:
    """Load RUN_DIR/{which}.pt with its processed data set: ``data`` if given, else the one recorded in run.json
    (an MdsrecError for a missing run directory or a run restored from records, which has no checkpoints)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise MdsrecError(f"run directory {run} not found")
    return load_run(run, load_processed(run_data_path(run, data)), which=which, device=device)


def load_run(
    run_dir: str | Path, data: ProcessedDataset, which: str = "best", device: str | None = None
) -> Experiment:
    """Rebuild a run's model from RUN_DIR/{which}.pt for ``data`` (fingerprints must match)."""
    path = checkpoint_path(run_dir, which)
    ck = load_run_checkpoint(run_dir, path)
    check_fingerprint(ck, data.fingerprint, data.path or "data", path)
    cfg = build_config(ck["config"])
    if device is not None:
        cfg.train.device = device
    exp = make_experiment(
        cfg, data, ck["model_state"]
    )  # no graph build, no k-means: they come with the state
    load_model_state(exp.model, ck["model_state"], path)
    exp.model.eval()
    return exp


def local_rows(batch: Batch, group: Group) -> tuple[Batch, float]:
    """This process's contiguous slice of a global training batch, cut to its own longest row, and the weight of
    its mean loss: its share of the batch's trained positions times the world size (DDP averages gradients).
    A process left without rows gets one row of the batch with weight 0, so it still joins the gradient sum."""
    if not group.active:
        return batch, 1.0
    assert batch.targets is not None
    parts = torch.tensor_split(torch.arange(batch.items.size(0)), group.world)
    idx = parts[group.rank]
    weight_rows = idx
    if len(idx) == 0:
        idx = torch.arange(1)
    width = int(batch.lengths[idx].max())
    local = Batch(
        batch.items[idx, :width],
        batch.lengths[idx],
        batch.targets[idx, :width],
        None,
        None if batch.users is None else batch.users[idx],
    )
    total = int((batch.targets > 0).sum())
    mine = int((batch.targets[weight_rows] > 0).sum()) if len(weight_rows) else 0
    return local, group.world * mine / max(total, 1)
