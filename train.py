"""Fine-tune one seed per Hydra job: `python train.py -m seed='range(20)' task=mrpc model=roberta-large`."""

import hydra
from omegaconf import DictConfig

from instability import setting  # registers the `setting_dir` resolver that names job folders


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from instability.train import run  # imported here so `--help` and `--cfg` stay fast

    # Referenced here so that launchers which pickle this function (joblib, submitit) import the module, and
    # with it the resolver, in their worker processes before they name the job folder.
    setting.register_resolver()
    return run(cfg)


if __name__ == "__main__":
    main()
