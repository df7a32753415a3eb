"""The experiments' job lists and each job's config, built as Hydra's sweeper and launcher build them
(SPEC section 1)."""

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from helpers.config import FAST, REPO
from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.types import HydraContext
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, read_write

import instability.setting  # noqa: F401  registers the `setting_dir` resolver of the job folders
from instability.sweeper import check_literal

FAILED_LR = {"bert-large": 5e-5, "roberta-large": 3e-5, "roberta-base": 3e-5}  # SPEC section 1
METHODS = {  # SPEC section 1: the parameters of every mitigation method
    "none": {},
    "mixout": {"p": 0.1, "mask": "unit"},
    "llrd": {"eta": 0.95},
    "reinit": {"num_layers": 5},
    "wd_pre": {"coefficient": 0.01},
}
TASKS = ("rte", "mrpc", "cola")
QUICK = [o for o in FAST if not o.startswith("model=")]  # tiny runs; each test names its models


class Job(NamedTuple):
    overrides: list[str]
    config: dict[str, Any]  # resolved, without `hydra`: what the run (and its record) sees
    subdir: str             # the job's folder in the sweep


def conf_dir():
    return initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3")


def make_sweeper(primary: DictConfig) -> Any:
    context = HydraContext(config_loader=GlobalHydra.instance().config_loader(), callbacks=Callbacks())
    return Plugins.instance().instantiate_sweeper(hydra_context=context, task_function=lambda cfg: None,
                                                  config=primary)


def sweeper_jobs(*command_line: str) -> tuple[DictConfig, list[list[str]]]:
    """The primary config of `python train.py <command_line>` and its sweeper's job list, the sweeper made as
    Hydra makes it (instantiated from the primary config, which resolves the sweeper's config, then set up)."""
    primary = compose("train", overrides=list(command_line), return_hydra_config=True)
    sweeper = make_sweeper(primary)
    sweeper.arguments = [o for o in command_line if not o.startswith("hydra")]  # what Hydra's `sweep` receives
    (jobs,) = sweeper.split_arguments(None, None)
    return primary, jobs


def launcher_jobs(primary: DictConfig, jobs: list[list[str]], compose_every_job: bool) -> list[Job]:
    """Every job as Hydra's launcher makes it: its config from the config loader's `load_sweep_config`, then, as
    `run_job` does, its folder, `hydra.runtime.output_dir` and its config without `hydra`, resolved.

    Composing takes about 0.2 s a job on a slow CPU, so unless `compose_every_job` a job that differs from an
    already composed one only in its seed gets that composition with its `seed=k` applied the way Hydra applies a
    value override after composing (`OmegaConf.update`); a slow test checks that this gives every job's config.
    """
    loader = GlobalHydra.instance().config_loader()
    composed: dict[tuple[str, ...], DictConfig] = {}
    previous, current = HydraConfig.instance().cfg, None
    out = []
    try:
        for overrides in jobs:
            setting = tuple(o for o in overrides if not o.startswith("seed="))
            if compose_every_job or setting not in composed:
                cfg = composed[setting] = loader.load_sweep_config(primary, list(overrides))
            else:
                cfg = composed[setting]
                (seed,) = [int(o.split("=")[1]) for o in overrides if o.startswith("seed=")]
                OmegaConf.update(cfg, "seed", seed, merge=True)
            if cfg is not current:
                HydraConfig.instance().set_config(cfg)  # for `${hydra:...}` in the job's config
                current = cfg
            subdir = str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
            runtime = HydraConfig.get().runtime
            with read_write(runtime):
                runtime.output_dir = str(Path(cfg.hydra.sweep.dir, subdir).absolute())
            config = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
                      for key in cfg if key != "hydra"}
            out.append(Job(list(overrides), config, subdir))
    finally:
        HydraConfig.instance().cfg = previous
    return out


@pytest.fixture(scope="module")
def paper_jobs() -> list[Job]:
    with conf_dir():
        return launcher_jobs(*sweeper_jobs("experiment=paper"), compose_every_job=False)


def method_of(config: dict[str, Any]) -> str:
    return get_class(config["imm"]["_target_"]).name


def choice(overrides: list[str], group: str, default: str) -> str:
    return next((o.split("=", 1)[1] for o in overrides if o.startswith(f"{group}=")), default)


def test_paper_grid_has_480_jobs_in_their_own_folders(paper_jobs):
    assert len(paper_jobs) == 480 and len({tuple(j.overrides) for j in paper_jobs}) == 480
    assert len({j.subdir for j in paper_jobs}) == 480, "two jobs would share a folder"
    assert len({j.subdir.rsplit("/", 1)[0] for j in paper_jobs}) == 2 * 3 * 6  # settings: model x task x 6


def test_every_paper_job_has_its_setting_and_seeds(paper_jobs):
    seeds = defaultdict(set)
    for j in paper_jobs:
        c, regime, method = j.config, choice(j.overrides, "regime", "standard"), choice(j.overrides, "imm", "none")
        model, task = c["model"]["name"], c["task"]["name"]
        failed = regime == "failed"
        assert c["module"]["lr"] == pytest.approx(FAILED_LR[model] if failed else 2e-5), j.overrides
        assert c["measure_checkpoint"] == ("final" if failed else "best"), j.overrides
        assert method_of(c) == method and {k: c["imm"].get(k) for k in METHODS[method]} == METHODS[method], j.overrides
        assert not (failed and method != "none")
        assert c["trainer"]["accelerator"] == "gpu" and c["trainer"]["precision"] == "32-true", "fp32 on a GPU"
        assert (c["data"]["batch_size"], c["data"]["max_length"], c["trainer"]["max_epochs"]) == (16, 128, 5)
        assert c["seed"] == int(choice(j.overrides, "seed", "")) and j.subdir.endswith(f"/seed{c['seed']}")
        seeds[model, task, "failed" if failed else method].add(c["seed"])
    settings = ["failed", *METHODS]
    assert seeds == {(model, task, setting): set(range(20 if setting in ("none", "failed") else 10))
                     for model in ("bert-large", "roberta-large") for task in TASKS for setting in settings}


@pytest.mark.slow
def test_composing_every_paper_job_gives_the_same_configs(paper_jobs):
    """The fast path of `launcher_jobs` (a seed applied to its setting's composition) against composing all 480."""
    with conf_dir():
        every = launcher_jobs(*sweeper_jobs("experiment=paper"), compose_every_job=True)
    assert every == paper_jobs


def test_a_failed_run_interpolation_in_a_sweeper_is_refused():
    """Hydra resolves the sweeper's config once, against the primary config: a per-model value there would be
    the default model's for every job (issue #12), so the sweeper refuses it and points to a config group."""
    with conf_dir():
        primary = compose("train", overrides=["experiment=paper"], return_hydra_config=True)
        primary.hydra.sweeper.grids[2] = {"module.lr": "\\${model.failed_lr}", "seed": "range(20)"}
        with pytest.raises(ValueError, match=r"module\.lr=.*model\.failed_lr.*config group"):
            make_sweeper(primary)
    check_literal({"params": {"model": "a,b"}, "grids": [{"regime": "failed", "module.lr": 1e-3}]})
    with pytest.raises(ValueError):
        check_literal({"params": {"module.lr": "${model.failed_lr}"}})


def test_failed_runs_experiment_uses_each_family_lr_and_the_final_checkpoint():
    with conf_dir():
        for model in ("roberta-base", "bert-large"):
            cfg = compose("train", overrides=["experiment=failed_runs", f"model={model}"], return_hydra_config=True)
            assert cfg.module.lr == pytest.approx(FAILED_LR[model]) and cfg.measure_checkpoint == "final"
    assert cfg.hydra.sweeper.params.seed == "range(20)" and cfg.hydra.sweep.dir == "multirun/failed_runs"


def test_cpu_study_grids():
    with conf_dir():
        jobs = launcher_jobs(*sweeper_jobs("experiment=cpu_study", "seed=0"), compose_every_job=True)
    settings = sorted((method_of(j.config), j.config["module"]["lr"], j.config["measure_checkpoint"],
                       j.config["imm"].get("num_layers")) for j in jobs)
    assert settings == [("llrd", 1e-4, "best", None), ("mixout", 1e-4, "best", None), ("none", 1e-4, "best", None),
                        ("none", 1e-3, "final", None), ("reinit", 1e-4, "best", 2), ("wd_pre", 1e-4, "best", None)]
    assert {(j.config["model"]["name"], j.config["task"]["name"], j.config["data"]["train_size"],
             j.config["trainer"]["max_epochs"]) for j in jobs} == {("minilm", "sst2", 500, 2)}
    assert len({j.subdir for j in jobs}) == 6


def test_quickstart_is_three_seeds_of_two_settings_then_the_analysis():
    with conf_dir():
        primary, overrides = sweeper_jobs("experiment=quickstart")
        jobs = launcher_jobs(primary, overrides, compose_every_job=True)
    runs = sorted((method_of(j.config), j.config["imm"].get("num_layers"), j.config["seed"]) for j in jobs)
    assert runs == [("none", None, seed) for seed in range(3)] + [("reinit", 2, seed) for seed in range(3)]
    assert {(j.config["task"]["name"], j.config["data"]["train_size"], j.config["trainer"]["max_epochs"],
             j.config["module"]["lr"], j.config["measure_checkpoint"]) for j in jobs} == {("sst2", 256, 2, 2e-4, "best")}
    assert len({j.subdir for j in jobs}) == 6 and "analyze_sweep" in primary.hydra.callbacks


def test_gpu_study_is_the_paper_protocol_with_minilm_on_one_gpu():
    """240 jobs: per task 20 standard seeds, 10 per method (Re-init of the top 2 of MiniLM's 6 layers) and 20
    failed-run seeds at the BERT family's failed-run lr, final checkpoint; full training sets, 5 epochs, fp32."""
    with conf_dir():
        primary, overrides = sweeper_jobs("experiment=gpu_study")
        jobs = launcher_jobs(primary, overrides, compose_every_job=False)
        _, one_task = sweeper_jobs("experiment=gpu_study", "task=rte")  # a session per task, into the same sweep
    assert len(one_task) == 80 and all("task=rte" in job for job in one_task)
    assert len(jobs) == 240 and len({j.subdir for j in jobs}) == 240, "two jobs would share a folder"
    assert primary.hydra.launcher.n_jobs == 16 and "joblib" in primary.hydra.launcher._target_.lower()
    methods = METHODS | {"reinit": {"num_layers": 2}}
    seeds = defaultdict(set)
    for j in jobs:
        c, method = j.config, method_of(j.config)
        failed = choice(j.overrides, "regime", "standard") == "failed"
        assert c["module"]["lr"] == pytest.approx(5e-5 if failed else 2e-5), j.overrides
        assert c["measure_checkpoint"] == ("final" if failed else "best"), j.overrides
        assert {k: c["imm"].get(k) for k in methods[method]} == methods[method], j.overrides
        assert c["model"]["name"] == "minilm" and c["data"]["train_size"] is None
        assert c["trainer"]["accelerator"] == "gpu" and c["trainer"]["precision"] == "32-true", "fp32 on a GPU"
        assert (c["data"]["batch_size"], c["data"]["max_length"], c["trainer"]["max_epochs"]) == (16, 128, 5)
        seeds[c["task"]["name"], "failed" if failed else method].add(c["seed"])
    assert seeds == {(task, setting): set(range(20 if setting in ("none", "failed") else 10))
                     for task in TASKS for setting in ["failed", *METHODS]}


def configs_written(root: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text())["config"] for path in sorted(root.glob("**/record/record.json"))]


def test_a_failed_run_trains_at_its_model_family_lr(tmp_path):
    command = [sys.executable, "train.py", *QUICK, "model=tiny-roberta", "regime=failed", f"hydra.run.dir={tmp_path}"]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    (config,) = configs_written(tmp_path)
    assert config["module"]["lr"] == pytest.approx(3e-5) and config["measure_checkpoint"] == "final"


def test_grid_union_sweep_gives_each_job_its_own_model_lr(tmp_path):
    command = [sys.executable, "train.py", "-m", *QUICK, "hydra/sweeper=grid_union", "model=tiny-bert,tiny-roberta",
               "hydra.sweeper.grids=[{regime:standard},{regime:failed}]", f"hydra.sweep.dir={tmp_path}"]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    runs = sorted((c["model"]["name"], c["measure_checkpoint"], c["module"]["lr"]) for c in configs_written(tmp_path))
    assert runs == [("tiny-bert", "best", 2e-5), ("tiny-bert", "final", 5e-5),
                    ("tiny-roberta", "best", 2e-5), ("tiny-roberta", "final", 3e-5)]
