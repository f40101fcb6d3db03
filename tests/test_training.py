import dataclasses
import json

import pytest
import torch
import yaml

import mdsrec.training.trainer as trainer_mod
from mdsrec.cli import main
from mdsrec.config import TrainConfig, resolve_config
from mdsrec.errors import ConfigError, MdsrecError, TrainingDiverged
from mdsrec.evaluation.evaluator import evaluate
from mdsrec.models import REGISTRY, full_config
from mdsrec.training.checkpoint import load_checkpoint, save_checkpoint
from tests.conftest import TINY_MODEL

SETS = ["train.progress=false", "data.batch_size=64", "train.lr=0.01", "train.patience=50"]


def tiny_cfg(epochs: int, model: str = "sasrec"):
    sets = SETS + [f"train.epochs={epochs}"] + [f"model.{k}={v}" for k, v in TINY_MODEL[model].items()]
    return resolve_config(None, sets, model=model)


def test_train_writes_the_run_contract(tiny_data, tmp_path) -> None:
    run = tmp_path / "run"
    metrics = trainer_mod.train(tiny_cfg(3), tiny_data, run)
    on_disk = json.loads((run / "metrics.json").read_text())
    assert on_disk["test"] == metrics["test"]
    for k in ("recall@10", "ndcg@10", "recall@20", "ndcg@20", "mrr@10", "mrr@20"):
        assert 0.0 <= on_disk["test"][k] <= 1.0 and k in on_disk["valid"]
    assert 1 <= on_disk["best_epoch"] <= 3 and on_disk["seconds_per_epoch"] > 0
    assert on_disk["config"]["model"]["name"] == "sasrec"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert all(r["train_cpu_seconds"] > 0 for r in log)  # processor time, beside the wall-clock train_seconds
    mean_cpu = sum(r["train_cpu_seconds"] for r in log) / 3
    assert on_disk["cpu_seconds_per_epoch"] == pytest.approx(mean_cpu, abs=1e-3)
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()
    assert not list(run.glob(".*tmp*"))  # no temporary files left behind
    with pytest.raises(MdsrecError, match="already holds a run"):
        trainer_mod.train(tiny_cfg(3), tiny_data, run)


def test_bf16_training_runs_and_is_part_of_the_run(tiny_data, tmp_path) -> None:
    cfg = tiny_cfg(2)
    cfg.train.precision = "bf16"
    m = trainer_mod.train(cfg, tiny_data, tmp_path / "bf16")
    ref = trainer_mod.train(tiny_cfg(2), tiny_data, tmp_path / "fp32")
    assert m["config"]["train"]["precision"] == "bf16" and ref["config"]["train"]["precision"] == "fp32"
    losses = [json.loads(x)["train_loss"] for x in (tmp_path / "bf16" / "log.jsonl").read_text().splitlines()]
    ref_losses = [
        json.loads(x)["train_loss"] for x in (tmp_path / "fp32" / "log.jsonl").read_text().splitlines()
    ]
    assert losses != ref_losses and all(
        abs(a - b) < 0.05 * b for a, b in zip(losses, ref_losses, strict=True)
    )
    cfg.train.epochs = 3  # a resume with another precision is another run
    cfg.train.precision = "fp32"
    with pytest.raises(MdsrecError, match="train.precision"):
        trainer_mod.train(cfg, tiny_data, tmp_path / "bf16", resume=True)


def test_early_stopping_stops_after_patience(tiny_data, tmp_path) -> None:
    cfg = tiny_cfg(40)
    cfg.train.patience = 2
    cfg.train.lr = 1e-6  # barely moves: validation stops improving quickly
    m = trainer_mod.train(cfg, tiny_data, tmp_path / "run")
    assert m["epochs"] < 40 and m["epochs"] - m["best_epoch"] == 2


@pytest.mark.slow
def test_min_delta_counts_only_larger_rises_as_improvements(tiny_data, tmp_path) -> None:
    def logged(run):
        return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]

    metric = tiny_cfg(1).train.valid_metric
    trainer_mod.train(tiny_cfg(8), tiny_data, tmp_path / "plain")
    plain = logged(tmp_path / "plain")
    scores = [r[f"valid_{metric}"] for r in plain]

    def expected(d: float) -> list[bool]:  # the rule applied to the logged scores
        flags, top = [], float("-inf")
        for v in scores:
            flags.append(v > top + d)
            top = v if flags[-1] else top
        return flags

    bests = [v for v, f in zip(scores, expected(0.0), strict=True) if f]
    rises = [b - a for a, b in zip(bests[:-1], bests[1:], strict=True)]
    assert rises, "the tiny run must improve after its first epoch for this test to mean anything"
    delta = min(rises) * 1.01  # the smallest rise no longer counts
    assert expected(delta) != [r["best"] for r in plain] and expected(0.0) == [r["best"] for r in plain]
    cfg = tiny_cfg(8)
    cfg.train.min_delta = delta
    m = trainer_mod.train(cfg, tiny_data, tmp_path / "delta")
    log = logged(tmp_path / "delta")
    # the threshold changes which epoch is kept and when training stops, not the training itself
    assert [r[f"valid_{metric}"] for r in log] == scores
    assert [r["best"] for r in log] == expected(delta)
    kept = max(i for i, f in enumerate(expected(delta)) if f)
    assert m["best_epoch"] == kept + 1 and m["valid"][metric] == pytest.approx(scores[kept])

    # a threshold no rise can clear: only the first epoch is ever best, and patience ends the run after it
    cfg = tiny_cfg(40)
    cfg.train.patience, cfg.train.min_delta = 2, 1.0
    m = trainer_mod.train(cfg, tiny_data, tmp_path / "huge")
    assert (m["best_epoch"], m["epochs"]) == (1, 3)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="train.min_delta"):
            TrainConfig(min_delta=bad)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["sasrec", "gru4rec", "mdsrec"])
def test_resume_after_interruption_gives_the_same_result(
    tiny_data, tmp_path, monkeypatch, model: str
) -> None:
    straight = trainer_mod.train(tiny_cfg(4, model), tiny_data, tmp_path / "a")

    real_save = trainer_mod.save_checkpoint
    calls = {"last": 0}

    def crash_after_two_epochs(path, state):
        real_save(path, state)
        if str(path).endswith("last.pt"):
            calls["last"] += 1
            if calls["last"] == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "save_checkpoint", crash_after_two_epochs)
    with pytest.raises(KeyboardInterrupt):
        trainer_mod.train(tiny_cfg(4, model), tiny_data, tmp_path / "b")
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real_save)
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 2
    resumed = trainer_mod.train(tiny_cfg(4, model), tiny_data, tmp_path / "b", resume=True)
    assert resumed["test"] == straight["test"] and resumed["valid"] == straight["valid"]
    a = load_checkpoint(tmp_path / "a" / "last.pt")["model_state"]
    b = load_checkpoint(tmp_path / "b" / "last.pt")["model_state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_cut_in_its_first_epoch_says_to_start_over_and_can(tiny_data, tmp_path, monkeypatch) -> None:
    def cut(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "save_checkpoint", cut)  # interrupted before the first last.pt
    with pytest.raises(KeyboardInterrupt):
        trainer_mod.train(tiny_cfg(2), tiny_data, tmp_path / "r")
    monkeypatch.undo()
    assert (tmp_path / "r" / "config.yaml").is_file() and not (tmp_path / "r" / "last.pt").exists()
    with pytest.raises(MdsrecError, match="without --resume to start it over"):
        trainer_mod.train(tiny_cfg(2), tiny_data, tmp_path / "r", resume=True)
    m = trainer_mod.train(tiny_cfg(2), tiny_data, tmp_path / "r")  # the plain command starts it over
    assert m["epochs"] == 2 and (tmp_path / "r" / "last.pt").is_file()


def test_cli_train_and_evaluate_agree(tiny_dir, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    sets = SETS + ["train.epochs=2"] + [f"model.{k}={v}" for k, v in TINY_MODEL["gru4rec"].items()]
    assert (
        main(["train", "--data", str(tiny_dir), "--model", "gru4rec", "--out", str(run), "--set", *sets]) == 0
    )
    assert main(["evaluate", "--run", str(run)]) == 0
    assert "test metrics match" in capsys.readouterr().out


def test_checkpoint_loading_is_weights_only(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"checkpoint_version": 1, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(MdsrecError, match="weights_only"):
        load_checkpoint(tmp_path / "evil.pt")


def test_strict_load_lists_keys(tiny_data, tmp_path) -> None:
    exp = trainer_mod.make_experiment(tiny_cfg(1), tiny_data)
    state = exp.model.state_dict()
    state.pop("pos_emb.weight")
    state["bogus"] = torch.zeros(1)
    with pytest.raises(MdsrecError, match=r"missing keys \['pos_emb.weight'\].*unexpected keys \['bogus'\]"):
        trainer_mod.load_model_state(exp.model, state, tmp_path / "x.pt")


def test_resume_refuses_a_changed_config_and_uses_the_saved_one(tiny_data, tmp_path) -> None:
    run = tmp_path / "run"
    trainer_mod.train(tiny_cfg(1), tiny_data, run)
    changed = tiny_cfg(1)
    changed.train.lr = 0.5
    with pytest.raises(MdsrecError, match=r"train.lr \(0.01 in the run, 0.5 given\)"):
        trainer_mod.train(changed, tiny_data, run, resume=True)
    again = trainer_mod.train(None, tiny_data, run, resume=True)  # finished run: recomputes the same metrics
    assert again["test"] == json.loads((run / "metrics.json").read_text())["test"]
    shown = tiny_cfg(1)  # operational keys may differ: accepted, and the given ones are used
    shown.train.progress, shown.data.eval_batch_size = not shown.train.progress, 3
    again = trainer_mod.train(shown, tiny_data, run, resume=True)
    assert again["test"] == json.loads((run / "metrics.json").read_text())["test"]
    assert again["config"]["data"]["eval_batch_size"] == 3 and again["config"]["train"]["lr"] == 0.01


@pytest.mark.parametrize("model", ["sasrec", "mdsrec"])
def test_a_run_saves_every_model_field(tiny_data, tmp_path, model: str) -> None:
    """config.yaml, both checkpoints and metrics.json hold the whole model section, defaults included, so a later
    change of a default (e.g. MDSRec's ica_center_norm) cannot make an old run look like a new one."""
    cfg = tiny_cfg(1, model)
    run = tmp_path / "run"
    trainer_mod.train(cfg, tiny_data, run)
    fields = {f.name for f in dataclasses.fields(REGISTRY[model][1])}
    assert set(cfg.model) < fields  # only the given keys were given
    saved = [
        yaml.safe_load((run / "config.yaml").read_text()),
        load_checkpoint(run / "last.pt")["config"],
        load_checkpoint(run / "best.pt")["config"],
        json.loads((run / "metrics.json").read_text())["config"],
    ]
    for section in saved:
        assert set(section["model"]) == fields
        assert section == full_config(cfg).to_dict()
    assert {k: saved[0]["model"][k] for k in cfg.model} == cfg.model


def test_resume_of_a_run_saved_with_only_the_given_keys(tiny_data, tmp_path, monkeypatch) -> None:
    """Runs saved before full model sections hold only the given keys: they resume with the given config (compared
    in full form), with the full form of it, or with none, and keep their saved config as it was."""
    run = tmp_path / "run"
    real_save = trainer_mod.save_checkpoint

    def crash_after_one_epoch(path, state):
        real_save(path, state)
        if str(path).endswith("last.pt"):
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "save_checkpoint", crash_after_one_epoch)
    with pytest.raises(KeyboardInterrupt):
        trainer_mod.train(tiny_cfg(3), tiny_data, run)
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real_save)
    old = tiny_cfg(3).to_dict()  # what an older version saved: the given model keys only
    assert set(old["model"]) < set(load_checkpoint(run / "last.pt")["config"]["model"])
    (run / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    assert not (run / "best.pt").exists()  # written after last.pt: rebuilt from it on resume
    save_checkpoint(run / "last.pt", {**load_checkpoint(run / "last.pt"), "config": old})

    changed = tiny_cfg(3)
    changed.model["num_layers"] = 1
    with pytest.raises(MdsrecError, match=r"model.num_layers \(2 in the run, 1 given\)"):
        trainer_mod.train(changed, tiny_data, run, resume=True)
    full = full_config(tiny_cfg(3))
    with pytest.raises(MdsrecError, match=r"train.lr \(0.01 in the run, 0.5 given\)"):
        trainer_mod.train(
            dataclasses.replace(full, train=dataclasses.replace(full.train, lr=0.5)), tiny_data, run, True
        )
    metrics = trainer_mod.train(tiny_cfg(3), tiny_data, run, resume=True)
    assert metrics["epochs"] == 3 and metrics["config"] == old
    assert load_checkpoint(run / "last.pt")["config"] == load_checkpoint(run / "best.pt")["config"] == old
    assert yaml.safe_load((run / "config.yaml").read_text()) == old
    assert trainer_mod.train(full, tiny_data, run, resume=True)["test"] == metrics["test"]
    assert trainer_mod.train(None, tiny_data, run, resume=True)["test"] == metrics["test"]


def test_crash_between_last_and_best_is_repaired(tiny_data, tmp_path, monkeypatch) -> None:
    run = tmp_path / "run"
    real_save = trainer_mod.save_checkpoint

    def crash_before_best(path, state):
        if str(path).endswith("best.pt") and state["epoch"] == 1:  # epoch 1 always improves
            raise KeyboardInterrupt
        real_save(path, state)

    monkeypatch.setattr(trainer_mod, "save_checkpoint", crash_before_best)
    with pytest.raises(KeyboardInterrupt):
        trainer_mod.train(tiny_cfg(3), tiny_data, run)
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real_save)
    assert load_checkpoint(run / "last.pt")["best_epoch"] == 1 and not (run / "best.pt").exists()
    trainer_mod.train(None, tiny_data, run, resume=True)
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == json.loads((run / "metrics.json").read_text())["best_epoch"]


def test_quickstart_refuses_a_foreign_data_directory(tmp_path, capsys) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "precious.txt").write_text("keep me")
    assert main(["quickstart", "--out", str(tmp_path)]) == 2
    assert (tmp_path / "data" / "precious.txt").read_text() == "keep me"
    assert "not a quickstart data set" in capsys.readouterr().err


def test_repeated_set_flags_all_apply() -> None:
    """`--set a=1 --set b=2` keeps both overrides (argparse's plain nargs would keep only the last flag)."""
    from mdsrec.cli import build_parser

    args = build_parser().parse_args(
        [
            "train",
            "--data",
            "d",
            "--model",
            "sasrec",
            "--out",
            "o",
            "--set",
            "train.epochs=2",
            "--set",
            "train.lr=0.01",
        ]
    )
    cfg = resolve_config(None, args.set, model=args.model)
    assert (cfg.train.epochs, cfg.train.lr) == (2, 0.01)


def _poison_after(monkeypatch: pytest.MonkeyPatch, evaluations: int) -> None:
    """SASRec's training loss becomes NaN once the trainer has run ``evaluations`` validation passes."""
    seen = {"n": 0}
    real_eval, real_loss = trainer_mod.evaluate, REGISTRY["sasrec"][0].compute_loss
    real_diagnose = trainer_mod.diagnose

    def counting_eval(*a, **k):
        seen["n"] += 1
        return real_eval(*a, **k)

    def counting_diagnose(*a, **k):
        seen["n"] += 1
        return real_diagnose(*a, **k)

    def loss(self, batch):
        out = real_loss(self, batch)
        return out * float("nan") if seen["n"] >= evaluations else out

    monkeypatch.setattr(trainer_mod, "evaluate", counting_eval)
    monkeypatch.setattr(trainer_mod, "diagnose", counting_diagnose)
    monkeypatch.setattr(REGISTRY["sasrec"][0], "compute_loss", loss)


def test_a_non_finite_loss_stops_training_at_the_best_epoch_so_far(tiny_data, tmp_path, monkeypatch) -> None:
    _poison_after(monkeypatch, 2)  # epochs 1 and 2 train; the loss is NaN in epoch 3
    run = tmp_path / "run"
    m = trainer_mod.train(tiny_cfg(6), tiny_data, run)
    assert m["diverged_at_epoch"] == 3 and m["epochs"] == 2 and 1 <= m["best_epoch"] <= 2
    assert json.loads((run / "metrics.json").read_text())["diverged_at_epoch"] == 3
    assert [json.loads(x)["epoch"] for x in (run / "log.jsonl").read_text().splitlines()] == [1, 2]
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == m["best_epoch"]
    assert all(torch.isfinite(v).all() for v in best["model_state"].values() if v.is_floating_point())


def test_a_non_finite_loss_before_any_evaluation_is_an_error(tiny_data, tmp_path, monkeypatch) -> None:
    _poison_after(monkeypatch, 0)
    with pytest.raises(
        TrainingDiverged, match="epoch 1: training loss became nan before any epoch was evaluated"
    ):
        trainer_mod.train(tiny_cfg(3), tiny_data, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_nan_validation_scores_stop_training_like_a_non_finite_loss(tiny_data, tmp_path, monkeypatch) -> None:
    calls = {"n": 0}

    def failing_third(real):
        def wrapped(*a, **k):
            calls["n"] += 1
            if calls["n"] == 3:  # the third validation pass: epoch 3
                raise FloatingPointError("model produced NaN scores")
            return real(*a, **k)

        return wrapped

    monkeypatch.setattr(trainer_mod, "evaluate", failing_third(trainer_mod.evaluate))
    monkeypatch.setattr(trainer_mod, "diagnose", failing_third(trainer_mod.diagnose))
    m = trainer_mod.train(tiny_cfg(6), tiny_data, tmp_path / "run")
    assert m["diverged_at_epoch"] == 3 and m["epochs"] == 2


def test_a_second_process_cannot_train_into_a_run_directory_in_use(tiny_data, tmp_path) -> None:
    import subprocess
    import sys
    import textwrap

    run = tmp_path / "run"
    holder = textwrap.dedent(
        f"""
        import sys, time
        from mdsrec.atomic import locked_directory
        with locked_directory({str(run)!r}):
            print("held", flush=True)
            sys.stdin.readline()
        """
    )
    p = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        with pytest.raises(MdsrecError, match=rf"in use by another mdsrec process \(pid {p.pid}\)"):
            trainer_mod.train(tiny_cfg(1), tiny_data, run)
        assert not (run / "config.yaml").exists()  # nothing written by the refused run
    finally:
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(timeout=30)
    trainer_mod.train(tiny_cfg(1), tiny_data, run)  # the lock ended with its process
    assert (run / "metrics.json").is_file()


@pytest.mark.parametrize(
    ("command", "says"),
    [("train", "--resume"), ("prepare", "--out was not written"), ("sweep", "run the same command again")],
)
def test_ctrl_c_says_what_each_command_can_do_next(monkeypatch, capsys, command, says) -> None:
    import mdsrec.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    argv = {
        "train": ["train", "--data", "d", "--model", "sasrec", "--out", "o"],
        "prepare": ["prepare", "sports", "--out", "o"],
        "sweep": [
            "sweep",
            "--data",
            "d",
            "--model",
            "sasrec",
            "--param",
            "model.h",
            "--values",
            "1",
            "--out",
            "o",
        ],
    }[command]
    monkeypatch.setattr(cli, f"cmd_{command}", interrupted)
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert says in err and ("--resume" not in err or command == "train")


def test_the_trainers_adam_step_moves_every_parameters_version() -> None:
    """The evaluation caches of whole-catalogue tables see a changed weight by its version counter; torch's fused
    Adam updates in place without moving it, so the trainer's Adam must not be fused."""
    model = torch.nn.Sequential(torch.nn.Embedding(50, 8), torch.nn.Linear(8, 3))
    opt = trainer_mod.make_optimizer(model, 1e-2, 1e-4)
    assert not opt.param_groups[0].get("fused")
    before = [p._version for p in model.parameters()]
    model(torch.randint(0, 50, (16,))).square().sum().backward()
    opt.step()
    assert all(p._version > v for p, v in zip(model.parameters(), before, strict=True))


def test_an_optimizer_state_resumes_with_the_trainers_implementation_and_its_own_settings() -> None:
    """A checkpoint written by another Adam implementation (the fused one) loads into the trainer's optimizer: the
    moments and the learning rate come from the checkpoint, the implementation stays the trainer's."""
    model = torch.nn.Linear(4, 2)
    old = torch.optim.Adam(model.parameters(), lr=3e-4, fused=True)
    model(torch.ones(1, 4)).sum().backward()
    old.step()
    opt = trainer_mod.make_optimizer(model, 1e-3)
    trainer_mod.load_optimizer_state(opt, old.state_dict())
    group = opt.param_groups[0]
    assert not group.get("fused") and group["lr"] == 3e-4
    torch.testing.assert_close(opt.state[model.weight]["exp_avg"], old.state[model.weight]["exp_avg"])


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("mdsrec", []),
        ("mdsrec", ["model.ext_id_features=true"]),
        ("missrec", []),
        ("unisrec", []),
        ("sasrec", []),
    ],
)
def test_each_epochs_validation_is_that_epochs_model(
    tiny_data, tmp_path, model: str, extra: list[str]
) -> None:
    """The validation logged after every epoch is the metric of that epoch's weights: the final evaluation of
    best.pt equals the logged line of the best epoch, and the last epoch's line that of last.pt. Guards the
    models' evaluation caches of whole-catalogue tables against an optimizer step they do not see."""
    cfg = resolve_config(
        None,
        [
            *SETS,
            "train.epochs=3",
            "train.patience=50",
            *(f"model.{k}={v}" for k, v in TINY_MODEL[model].items()),
            *extra,
        ],
        model=model,
    )
    metrics = trainer_mod.train(cfg, tiny_data, tmp_path / "run")
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len({round(r["valid_ndcg@20"], 12) for r in log}) > 1  # the weights did change between epochs
    best = log[metrics["best_epoch"] - 1]
    for k in ("ndcg@20", "recall@20", "ndcg@10"):
        assert metrics["valid"][k] == pytest.approx(best[f"valid_{k}"], abs=1e-9)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    exp = trainer_mod.make_experiment(full_config(cfg), tiny_data, ck["model_state"])
    exp.model.load_state_dict(ck["model_state"])
    last = evaluate(exp.model, exp.split, "valid", cfg.data, cfg.eval)
    for k in ("ndcg@20", "recall@20", "ndcg@10"):
        assert last[k] == pytest.approx(log[-1][f"valid_{k}"], abs=1e-9)
