"""Benchmark several models over several training seeds on one processed data set, one run after another.

For every model and seed index s in 0..S-1 (parameter-free models: s = 0 only) the run is trained into
``OUT/runs/<model>/seed<s>`` with the frozen config ``CONFIGS/<dataset>/<model>.yaml`` when there is one (else the
defaults), the ``--set`` overrides on top, and ``train.seed`` = the config's seed + s. A finished run (metrics.json)
is skipped, an interrupted one (last.pt, no metrics.json) resumed; both must have been made with the same config
and on the same data set (``mdsrec.studies.runs``). Then::

    OUT/results.csv   one row per run: test metrics, seconds per epoch, epochs, best epoch, wall seconds
    OUT/results.md    mean ± std over seeds per model, beside the MDSRec paper's Table 2 for its data sets
    OUT/results.png   NDCG@20 and Recall@20 means with std error bars (paper values as markers)

``--search section.key=v1,v2,...`` (e.g. ``train.lr=1e-4,1e-3,1e-2``, the paper's learning-rate search) first trains
seed index 0 of every trainable model once per value into ``OUT/runs/<model>/<key>=<v>/seed0``, keeps the value with
the best validation ``train.valid_metric`` (the first listed on a tie), and trains the other seeds with it into
``OUT/runs/<model>/<key>=<v>/seed<s>``; the results files then report the chosen value per model, and
``OUT/search.csv`` holds every value's validation and test metrics. Test metrics never take part in the choice.

Every run is written atomically by the trainer and every results file by ``mdsrec.atomic``, so an interrupted
benchmark is continued by running the same command again. ``--set MODEL:section.key=value`` applies an override to
one model only (e.g. ``sasrec:model.num_heads=4``); a plain ``section.key=value`` applies to every model.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

from mdsrec.atomic import locked_output, remove_stale, write_bytes, write_json, write_text
from mdsrec.config import OPERATIONAL_KEYS, ExperimentConfig, resolve_config
from mdsrec.data.processed import ProcessedDataset
from mdsrec.distributed import writes
from mdsrec.errors import ConfigError, MdsrecError, TrainingDiverged
from mdsrec.models import REGISTRY, check_experiment, full_config
from mdsrec.rundir import ACTIONS, DIVERGED, DRY_ACTIONS, read_json, read_metrics, run_state
from mdsrec.studies.paper import display_name, load_table2
from mdsrec.studies.results import (
    RunResult,
    SearchPoint,
    results_csv,
    results_markdown,
    results_png,
    search_csv,
)
from mdsrec.studies.runs import check_finished, train_or_reuse
from mdsrec.studies.sweep import sweep_configs, value_label

log = logging.getLogger(__name__)

# The frozen configs of the reported numbers, CONFIGS/<dataset>/<model>.yaml, shipped inside the package (the
# repository's configs/experiments links here), so a benchmark finds them from any working directory.
DEFAULT_CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "experiments"


@dataclass
class BenchmarkOutcome:
    results: list[RunResult]  # every finished run (in a dry run: those finished so far)
    left_out: list[str]  # "Model: why" for each model without a result (every searched value diverged)


def parse_search(text: str) -> tuple[str, list[str]]:
    """``section.key=v1,v2,...`` -> (``section.key``, raw values); ConfigError when malformed."""
    key, sep, rest = text.partition("=")
    values = [v.strip() for v in rest.split(",") if v.strip()]
    if not sep or not key.strip() or len(values) < 2:
        raise ConfigError(f"--search {text!r} must be section.key=v1,v2[,...] with at least two values")
    key = key.strip()
    if key == "train.seed":
        raise ConfigError("--search train.seed: seeds are --seeds, not a search")
    if key == "train.valid_metric" or key.startswith("eval.") or key in OPERATIONAL_KEYS:
        raise ConfigError(
            f"--search {key}: the search compares runs on one validation metric; {key} changes that metric or "
            "nothing that is learned"
        )
    return key, values


def split_overrides(sets: list[str], models: list[str]) -> dict[str, list[str]]:
    """``section.key=value`` for every model, ``MODEL:section.key=value`` for one; order is kept."""
    out: dict[str, list[str]] = {m: [] for m in models}
    for text in sets:
        key = text.split("=", 1)[0]
        if ":" in key:
            model, rest = text.split(":", 1)
            if model not in out:
                raise ConfigError(
                    f"override {text!r} names model {model!r}, which is not in --models {models}"
                )
            out[model].append(rest)
        else:
            for m in models:
                out[m].append(text)
    return out


def run_config(model: str, dataset: str, configs_dir: Path | None, sets: list[str]) -> ExperimentConfig:
    """The frozen config CONFIGS/<dataset>/<model>.yaml if it exists (else the defaults), ``sets`` on top. A name
    that is not a registered model is a named variant: its frozen config must exist and say ``variant: <name>``."""
    if configs_dir is not None and not Path(configs_dir).is_dir():
        raise ConfigError(
            f"frozen configs folder {configs_dir} not found (it should hold <dataset>/<model>.yaml); "
            "pass an existing --configs folder"
        )
    frozen = Path(configs_dir) / dataset / f"{model}.yaml" if configs_dir is not None else None
    if model not in REGISTRY:
        if frozen is None or not frozen.is_file():
            raise ConfigError(
                f"unknown model {model!r}: neither a registered model ({', '.join(sorted(REGISTRY))}) nor a "
                f"variant with a frozen config {frozen if frozen is not None else '<dataset>/' + model + '.yaml'}"
            )
        log.info("%s: frozen config %s (a variant)", model, frozen)
        cfg = resolve_config(frozen, sets)
        if cfg.variant != model:
            raise ConfigError(
                f"{frozen}: a variant's frozen config must say 'variant: {model}' (it says {cfg.variant!r})"
            )
        check_experiment(cfg)
        return cfg
    if frozen is not None and frozen.is_file():
        log.info("%s: frozen config %s", model, frozen)
        cfg = resolve_config(frozen, sets, model=model)
    else:
        if frozen is not None:
            log.warning(
                "%s: no frozen config %s: training with the model's default hyper-parameters", model, frozen
            )
        cfg = resolve_config(None, sets, model=model)
    check_experiment(cfg)  # the model section too, so a bad override fails before anything trains
    return cfg


def plan_runs(
    models: list[str],
    dataset: str,
    configs_dir: Path | None,
    per_model: dict[str, list[str]],
    param: str,
    raw_values: list[str],
) -> dict[str, list[tuple[str, ExperimentConfig]]]:
    """Every model's seed-0 plan: (setting label, config) per searched value, or one ("", config) without a search
    (and for parameter-free models). Every config is resolved here, before anything trains: a bad override or
    value fails at once, not after hours."""

    plans: dict[str, list[tuple[str, ExperimentConfig]]] = {}
    for m in models:
        base = run_config(m, dataset, configs_dir, per_model[m])
        if not param or not REGISTRY[base.model_name][0].trainable:
            plans[m] = [("", base)]
            continue
        if any(o.split("=", 1)[0].strip() == param for o in per_model[m]):
            raise ConfigError(f"{param} is both searched (--search) and set (--set) for {m}")
        frozen = configs_dir / dataset / f"{m}.yaml" if configs_dir is not None else None
        pairs = sweep_configs(  # a variant's frozen config names its model
            base.model_name, param, raw_values, frozen if frozen and frozen.is_file() else None, per_model[m]
        )
        plans[m] = [(f"{param}={value_label(v)}", c) for v, c in pairs]
    return plans


@dataclass
class _Runner:
    """Trains, resumes or reuses the runs of one benchmark in order, numbering them [done/total] in the log."""

    out: Path
    data: ProcessedDataset
    dry_run: bool
    total: int
    done: int = 0
    counts: dict[str, int] = field(
        default_factory=lambda: {"finished": 0, "interrupted": 0, "new": 0, "diverged": 0}
    )

    def run(self, m: str, s: int, setting: str, cfg: ExperimentConfig, searching: bool) -> RunResult | None:
        """One run; in a dry run None unless it is finished (and reusable). In a search a run whose loss became
        non-finite before its first evaluation is marked (DIVERGED) and left out."""
        self.done += 1
        run = self.out / "runs" / m / setting / f"seed{s}" if setting else self.out / "runs" / m / f"seed{s}"
        state = run_state(run)
        if searching and state != "finished" and (run / DIVERGED).is_file():
            return self._diverged_before(m, run, setting, cfg)
        self.counts[state] += 1
        verb = DRY_ACTIONS[state] if self.dry_run else ACTIONS[state]
        log.info("[%d/%d] %s seed %d: %s %s", self.done, self.total, m, cfg.train.seed, verb, run)
        if self.dry_run:
            if state != "finished":
                return None
            metrics = read_metrics(run)
            check_finished(run, metrics, cfg, self.data, "benchmark")
            return RunResult(m, cfg.train.seed, metrics, None, setting)
        try:
            outcome = train_or_reuse(cfg, self.data, run, owner="benchmark")
        except TrainingDiverged as e:
            if not searching:
                raise MdsrecError(
                    f"{run}: {e}. This run cannot be trained with this config; change it (e.g. a lower train.lr) "
                    "or leave the model out"
                ) from e
            log.warning("%s %s diverged (%s): left out of the search", m, setting, e)
            marker = {
                "error": str(e),
                "config": full_config(cfg).to_dict(),
                "data": {"fingerprint": self.data.fingerprint},
            }
            if writes():
                write_json(run / DIVERGED, marker)
            return RunResult(m, cfg.train.seed, {}, None, setting, str(e))
        return RunResult(m, cfg.train.seed, outcome.metrics, outcome.wall_seconds, setting)

    def _diverged_before(self, m: str, run: Path, setting: str, cfg: ExperimentConfig) -> RunResult:
        marker = read_json(run / DIVERGED)
        try:  # the same config and data, else an error
            check_finished(run, marker, cfg, self.data, "benchmark")
        except MdsrecError as e:
            raise MdsrecError(
                f"{run / DIVERGED} marks a run that diverged with another config or data ({e}); delete {run} "
                "to train it with this one"
            ) from e
        self.counts["diverged"] += 1
        log.info(
            "[%d/%d] %s seed %d: diverged before, not retried %s",
            self.done,
            self.total,
            m,
            cfg.train.seed,
            run,
        )
        return RunResult(m, cfg.train.seed, {}, None, setting, str(marker["error"]))


def choose(
    m: str, candidates: list[tuple[RunResult, ExperimentConfig]]
) -> tuple[list[SearchPoint], tuple[RunResult, ExperimentConfig] | None]:
    """A finished search's points and its choice: the best validation value among those that trained, the first
    listed on a tie (None when every value diverged). Test metrics never take part."""
    found = [SearchPoint(m, r.searched, r.metrics, c.train.valid_metric, r.diverged) for r, c in candidates]
    ok = [i for i, p in enumerate(found) if not p.diverged]
    if not ok:
        return found, None
    best = max(ok, key=lambda i: (found[i].metrics["valid"][found[i].valid_metric], -i))
    found[best].chosen = True
    log.info("%s: %s chosen on validation %s", m, found[best].setting, found[best].valid_metric)
    return found, candidates[best]


RESULT_FILES = ("results.csv", "results.md", "results.png", "search.csv")


def benchmark(
    data: ProcessedDataset,
    models: list[str],
    seeds: int,
    out: str | Path,
    configs_dir: str | Path | None = DEFAULT_CONFIGS,
    sets: list[str] | None = None,
    dataset: str | None = None,
    search: str | None = None,
    dry_run: bool = False,
) -> BenchmarkOutcome:
    """``_benchmark`` holding OUT's lock (``locked_output``: a second benchmark, sweep or records restore into OUT
    fails at once), after removing the results files' temporary names a killed benchmark left. A dry run writes
    nothing, takes no lock and can read a benchmark that is running; under torchrun only process 0 locks."""
    args = (data, models, seeds, out, configs_dir, sets, dataset, search)
    if dry_run or not writes():  # under torchrun process 0 alone locks OUT (and writes the results files)
        return _benchmark(*args, dry_run=dry_run)
    with locked_output(out, "benchmark"):
        remove_stale(out, RESULT_FILES)
        return _benchmark(*args)


def _benchmark(
    data: ProcessedDataset,
    models: list[str],
    seeds: int,
    out: str | Path,
    configs_dir: str | Path | None = DEFAULT_CONFIGS,
    sets: list[str] | None = None,
    dataset: str | None = None,
    search: str | None = None,
    dry_run: bool = False,
) -> BenchmarkOutcome:
    """Train (or skip, or resume) every (model, seed) run, then write OUT/results.{csv,md,png} (and
    OUT/search.csv with ``search``, ``section.key=v1,v2,...``).

    ``dry_run``: train nothing and write nothing; log what each run would do (finished runs are checked against
    their config and data as for reuse) and return the finished runs' results (and the models already left out)."""
    out = Path(out)
    if seeds < 1:
        raise ConfigError(f"seeds ({seeds}) must be >= 1")
    if not models or len(set(models)) != len(models):
        raise ConfigError(f"models ({models}) must be a non-empty list without repeats")
    param, raw_values = parse_search(search) if search is not None else ("", [])
    dataset = dataset or data.name
    cdir = Path(configs_dir) if configs_dir is not None else None
    plans = plan_runs(models, dataset, cdir, split_overrides(sets or [], models), param, raw_values)
    trainable = {m: REGISTRY[p[0][1].model_name][0].trainable for m, p in plans.items()}
    total = sum(len(p) + (seeds - 1 if trainable[m] else 0) for m, p in plans.items())
    runner = _Runner(out, data, dry_run, total)

    results: list[RunResult] = []
    points: list[SearchPoint] = []
    left_out: list[str] = []  # models without a result: why
    for m in models:
        searching = len(plans[m]) > 1
        candidates = [(runner.run(m, 0, setting, cfg, searching), cfg) for setting, cfg in plans[m]]
        later = range(1, seeds if trainable[m] else 1)
        first: RunResult | None
        if searching:
            done_search = [(r, c) for r, c in candidates if r is not None]
            if len(done_search) < len(candidates):  # dry run before the search has finished
                runner.done += len(later)
                if later:
                    log.info("%s: seeds %d-%d with the value the search chooses", m, later[0], later[-1])
                continue
            found, chosen = choose(m, done_search)
            points += found
            if chosen is None:
                why = (
                    f"every value of {param} diverged before its first evaluation: search lower values (delete "
                    f"{out / 'runs' / m} to retry these)"
                )
                log.error("%s left out: %s", m, why)
                left_out.append(f"{display_name(m)}: {why}")
                runner.done += len(later)
                continue
            first, cfg = chosen
        else:
            first, cfg = candidates[0]
        if first is not None:
            results.append(first)
        for s in later:
            c = copy.deepcopy(cfg)
            c.train.seed += s  # base seed (config or --set) + s
            r = runner.run(m, s, plans[m][0][0] if first is None else first.searched, c, False)
            if r is not None:
                results.append(r)

    if dry_run:
        counts = runner.counts
        log.info(
            "dry run: %d of %d runs finished (would be reused), %d diverged in a search (not retried), %d would "
            "resume, %d would train, %d wait for a search; nothing trained or written",
            counts["finished"],
            total,
            counts["diverged"],
            counts["interrupted"],
            counts["new"],
            total - sum(counts.values()),
        )
        return BenchmarkOutcome(results, left_out)
    if not results:
        raise MdsrecError("no model has a result: " + "; ".join(left_out))
    if not writes():  # under torchrun, process 0 writes the results files
        return BenchmarkOutcome(results, left_out)
    table2 = load_table2()
    write_text(out / "results.csv", results_csv(results))
    write_text(
        out / "results.md", results_markdown(results, dataset, data, table2, param, raw_values, left_out)
    )
    write_bytes(out / "results.png", results_png(results, dataset, table2))
    if points:
        write_text(out / "search.csv", search_csv(points))
    elif (
        out / "search.csv"
    ).is_file():  # from an earlier call with --search: it would not describe these results
        (out / "search.csv").unlink()
    return BenchmarkOutcome(results, left_out)
