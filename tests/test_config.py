import pytest

from mdsrec.config import config_differences, resolve_config
from mdsrec.errors import ConfigError
from mdsrec.models import model_config


def test_overrides_are_typed() -> None:
    cfg = resolve_config(None, ["train.lr=1e-3", "train.progress=False", "data.max_len=20"], model="sasrec")
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)
    assert cfg.train.progress is False  # "False" is false, never a truthy string
    assert cfg.data.max_len == 20


def test_unknown_keys_and_bad_types_are_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="unknown key.*lrr"):
        resolve_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="unknown config section"):
        resolve_config(None, ["optim.lr=1"])
    with pytest.raises(ConfigError, match="train.progress: expected true or false"):
        resolve_config(None, ["train.progress=maybe"])
    with pytest.raises(ConfigError, match="data.max_len: expected an integer"):
        resolve_config(None, ["data.max_len=2.5"])
    with pytest.raises(ConfigError, match=r"data.batch_unit \('rows'\) must be one of"):
        resolve_config(None, ["data.batch_unit=rows"])
    with pytest.raises(ConfigError, match=r"train.precision \('fp16'\) must be one of fp32, bf16"):
        resolve_config(None, ["train.precision=fp16"])
    with pytest.raises(ConfigError, match="unknown key.*hiden_size"):
        model_config({"name": "sasrec", "hiden_size": 3})
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        model_config({"name": "nope"})


def test_config_file_and_model_flag(tmp_path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("model: {name: gru4rec, hidden_size: 32}\ntrain: {lr: 1e-2}\n")
    cfg = resolve_config(f, ["model.dropout=0.1"])
    assert cfg.model == {"name": "gru4rec", "hidden_size": 32, "dropout": 0.1} and cfg.train.lr == 0.01
    with pytest.raises(ConfigError, match="conflicts"):
        resolve_config(f, [], model="sasrec")


def test_config_differences_skip_operational_keys() -> None:
    a = {"train": {"lr": 0.1, "progress": True, "num_threads": 0}, "data": {"eval_batch_size": 8}}
    b = {"train": {"lr": 0.2, "progress": False, "num_threads": 2}, "data": {"eval_batch_size": 9}}
    assert config_differences(a, b) == ["train.lr (0.1 in the run, 0.2 given)"]
    assert len(config_differences(a, b, ignore=frozenset())) == 4


def test_a_config_file_that_is_not_utf8_or_yaml_is_one_error_line(tmp_path) -> None:
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"train: {lr: 0.001}  # caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin.yaml is not UTF-8 \(byte 26\)"):
        resolve_config(latin, [])
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: {lr: [0.001}\n")
    with pytest.raises(ConfigError) as info:
        resolve_config(broken, [])
    assert str(info.value).splitlines() == [str(info.value)] and "line 1, column" in str(info.value)


def test_variant_is_a_checked_top_level_name() -> None:
    cfg = resolve_config(None, ["variant=mdsrec_plus"], model="mdsrec")
    assert cfg.variant == "mdsrec_plus" and cfg.model_name == "mdsrec"
    assert resolve_config(None, [], model="mdsrec").variant is None
    for bad in ("plus", "mdsrec_", "mdsrec_Plus", "sasrec_plus"):
        with pytest.raises(ConfigError, match="variant"):
            resolve_config(None, [f"variant={bad}"], model="mdsrec")
