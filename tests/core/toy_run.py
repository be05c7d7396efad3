"""Run the toy COLT loop in a process of its own (the kill-and-resume test kills it).

Under torchrun (`python -m torch.distributed.run --nproc_per_node=K tests/core/toy_run.py ...`) it runs the
loop over K ranks; `--fail-rank/--fail-round/--fail-mode` make one rank fail in one round's training, for the
tests of how a failing rank stops the job.
"""

import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import click
from toy import ToyTask, run_toy

from colt_core.config import to_dict
from colt_core.distributed import distributed_session, run_on_main
from colt_core.rundir import prepare_run_dir
from colt_core.settings import EarlyBirdConfig, PruneConfig, SplitConfig
from colt_core.train.task import TrainJob


class FailingToyTask(ToyTask):
    """The toy task, except that one rank fails in the first training of one round."""

    def __init__(self, *, fail_rank: int, fail_round: int, fail_mode: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fail_rank, self.fail_round, self.fail_mode = fail_rank, fail_round, fail_mode

    def datasets(self, class_ids: list[int] | None, job: TrainJob | None = None):
        rank = job.dist.rank if job is not None and job.dist is not None else 0
        if job is not None and rank == self.fail_rank and job.round == self.fail_round:
            if self.fail_mode == "exit":
                os._exit(3)  # a crash: no exception, no clean-up
            if self.fail_mode == "hang":
                time.sleep(3600)
            raise RuntimeError(f"injected failure in round {job.round}, partition {job.partition}")
        return super().datasets(class_ids, job)


@click.command()
@click.option("--out", required=True, type=click.Path())
@click.option("--resume", is_flag=True)
@click.option("--sleep", default=0.0)
@click.option("--method", type=click.Choice(["colt", "lth"]), default="colt")
@click.option("--partitions", default=2)
@click.option("--fail-rank", type=int, default=None, help="the rank that fails (default: none)")
@click.option("--fail-round", type=int, default=1)
@click.option("--fail-mode", type=click.Choice(["raise", "exit", "hang"]), default="raise")
@click.option("--controls", default="", help="comma-separated prune.controls")
@click.option("--rewind", default=0, help="prune.rewind_iteration")
@click.option("--epochs", default=3, help="epochs per training")
@click.option("--rates", default="0.2,0.3", help="prune.rates: conv,fc")
@click.option("--target", default=0.75, help="prune.target_sparsity")
@click.option("--max-rounds", default=4, help="prune.max_rounds")
@click.option("--evaluate", default="all", help="prune.evaluate")
@click.option("--early-bird", default=None, help="prune.early_bird as distance,window,check")
@click.option("--granularity", default="weight", help="prune.granularity")
def main(out: str, resume: bool, sleep: float, method: str, partitions: int, fail_rank: int | None,
         fail_round: int, fail_mode: str, controls: str, rewind: int, epochs: int, rates: str, target: float,
         max_rounds: int, evaluate: str, early_bird: str | None, granularity: str) -> None:
    with distributed_session() as dist:
        rank = f"[rank {dist.rank}] " if dist is not None else ""
        logging.basicConfig(level=logging.INFO, format=f"{rank}%(message)s")
        conv, fc = (float(r) for r in rates.split(","))
        bird = None
        if early_bird is not None:
            distance, window, check = early_bird.split(",")
            bird = EarlyBirdConfig(distance=float(distance), window=int(window),
                                   check=check if check == "epoch" else int(check))
        prune = PruneConfig(method=method, partitions=partitions, rates={"conv": conv, "fc": fc},
                            target_sparsity=target, max_rounds=max_rounds, evaluate=evaluate,
                            controls=[c for c in controls.split(",") if c], rewind_iteration=rewind, early_bird=bird,
                            granularity=granularity)
        split = SplitConfig()
        config = {"seed": 3, "prune": to_dict(prune), "split": to_dict(split)}
        run_dir = run_on_main(dist, prepare_run_dir, out, config, resume=resume, overwrite=False)
        if fail_rank is None:
            task = ToyTask(sleep=sleep)
        else:
            task = FailingToyTask(sleep=sleep, fail_rank=fail_rank, fail_round=fail_round, fail_mode=fail_mode)
        result = run_toy(run_dir, prune, split, seed=3, task=task, dist=dist, epochs=epochs)
        # One write per line: the ranks share the launcher's stdout, and print's separate writes interleave.
        sys.stdout.write(f"rounds {len(result.rounds)}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
