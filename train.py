"""Fine-tune one seed per Hydra job: `python train.py -m seed='range(20)' task=mrpc model=roberta-large`."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from instability.train import run  # imported here so `--help` and `--cfg` stay fast

    return run(cfg)


if __name__ == "__main__":
    main()
