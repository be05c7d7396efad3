"""Run the toy COLT loop in a process of its own (the kill-and-resume test kills it)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import click
from toy import ToyTrainer

from colt_core.config import to_dict
from colt_core.rounds import RoundLoop, prepare_run_dir
from colt_core.settings import PruneConfig, SplitConfig


@click.command()
@click.option("--out", required=True, type=click.Path())
@click.option("--resume", is_flag=True)
@click.option("--sleep", default=0.0)
def main(out: str, resume: bool, sleep: float) -> None:
    prune = PruneConfig(method="colt", partitions=2, rates={"conv": 0.2, "fc": 0.3}, target_sparsity=0.6,
                        max_rounds=4, evaluate="all")
    split = SplitConfig()
    config = {"seed": 3, "prune": to_dict(prune), "split": to_dict(split)}
    run_dir = prepare_run_dir(out, config, resume=resume, overwrite=False)
    result = RoundLoop(ToyTrainer(sleep=sleep), prune, split, seed=3, run_dir=run_dir, config_dict=config).run()
    print("rounds", len(result.rounds))


if __name__ == "__main__":
    main()
