"""The round loop shared by COLT-N and LTH, with its run directory and resume.

A front end supplies a `Trainer`; the loop decides what is trained under which mask, prunes,
intersects, rewinds, evaluates tickets and writes every result atomically, skipping work
already on disk so a killed run continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from colt_core.config import ConfigError
from colt_core.distributed import (
    DistContext,
    check_same_across_ranks,
    gather_to_main,
    partition_contexts,
    run_on_main,
)
from colt_core.io import atomic_save, atomic_write_json, atomic_write_text, load_checkpoint, read_json
from colt_core.masks import Mask, intersect_masks, ones_mask
from colt_core.partition import split_classes, validate_groups
from colt_core.pruning import PruneGroup, magnitude_prune, resolve_prune_groups
from colt_core.runtime import derive_seed, seed_everything
from colt_core.settings import PruneConfig, SplitConfig
from colt_core.sparsity import overall_sparsity, sparsity_report
from colt_core.ticket import Ticket, save_ticket
from colt_core.weights import rewind, snapshot

log = logging.getLogger(__name__)


class RunDirError(RuntimeError):
    """The output directory cannot be used as asked (exists, differs, or is not a run)."""


@dataclass
class TrainJob:
    """One training the loop asks of a front end."""

    round: int
    partition: int | None  # None: the full-data ticket evaluation
    class_ids: list[int] | None  # None: every class, labels as in the dataset
    model: nn.Module  # built, rewound to θ0 (or late-rewind weights) and masked
    mask: Mask
    seed: int
    workdir: Path  # for the front end's in-flight checkpoints and logs
    rewind_iteration: int = 0  # >0: return the weights after this many iterations too
    non_iid_max_drop: float = 0.0  # >0: drop a seeded random share of each class's samples
    data_seed: int = 0
    dist: DistContext | None = None  # the ranks that train this job together; None: this process alone

    @property
    def tag(self) -> str:
        part = "full" if self.partition is None else f"p{self.partition}"
        return f"round_{self.round:02d}/{part}"


@dataclass
class TrainOutput:
    """The selected (lowest validation loss) weights and training metrics."""

    state_dict: dict[str, torch.Tensor]
    metrics: dict[str, Any] = field(default_factory=dict)
    rewind_state: dict[str, torch.Tensor] | None = None


class Trainer(Protocol):
    """What a front end gives the round loop."""

    class_names: Sequence[str]
    output_layers: Sequence[str]
    default_prune_groups: Mapping[str, Mapping[str, Sequence[str]]]

    def build_model(self, num_outputs: int) -> nn.Module:
        """A freshly initialised model with `num_outputs` classes (seeded by the caller)."""

    def architecture(self) -> dict[str, Any]:
        """A JSON-able description of the architecture, stored in tickets."""

    def train(self, job: TrainJob) -> TrainOutput:
        """Train `job.model` on the job's classes under `job.mask`; return the selected weights.

        When `job.dist` holds several ranks they all call this: train data-parallel (see
        `colt_core.distributed.wrap_ddp` and `distributed_sampler`), give `fit` the context, and write working
        files only on `job.dist.is_group_main`.
        """

    def evaluate(self, model: nn.Module, job: TrainJob) -> dict[str, Any]:
        """Test-set metrics of a full-data model: at least {"metric": name, "value": float}."""


def round_dir(run_dir: Path, r: int) -> Path:
    return run_dir / f"round_{r:02d}"


def prepare_run_dir(path: str | Path, config: Mapping[str, Any], *, resume: bool, overwrite: bool,
                    ignore_on_resume: Sequence[str] = ("output_dir",)) -> Path:
    """Create the run directory, or reopen it for `--resume`; never overwrite without `--overwrite`."""
    path = Path(path)
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite exclude each other")
    exists = path.exists() and any(path.iterdir())
    if exists and resume:
        stored_path = path / "config.yaml"
        if not stored_path.is_file():
            raise RunDirError(f"{path}: not a COLT run directory (no config.yaml); cannot resume it")
        import yaml

        stored = yaml.safe_load(stored_path.read_text())
        diff = _config_diff(stored, dict(config), ignore_on_resume)
        if diff:
            raise RunDirError(f"{path}: the config differs from the stored run's at {', '.join(diff[:5])}; "
                              "resume with the same config, or start a new run with --out DIR / --overwrite")
        return path
    if exists and not overwrite:
        raise RunDirError(f"{path} already holds a run; pass --resume to continue it or --overwrite to replace it "
                          "(or choose another directory with --out)")
    if exists:
        if not (path / "config.yaml").is_file():
            raise RunDirError(f"{path} is not empty and not a COLT run directory; refusing to delete it")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _config_diff(a: Any, b: Any, ignore: Sequence[str], prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            key = f"{prefix}.{k}" if prefix else k
            if key in ignore:
                continue
            out += _config_diff(a.get(k), b.get(k), ignore, key)
        return out
    return [] if a == b else [prefix or "<root>"]


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    ticket: Ticket
    rounds: list[dict[str, Any]]


class RoundLoop:
    """COLT-N (and LTH as N = 1 on the full data) over a run directory."""

    def __init__(self, trainer: Trainer, prune: PruneConfig, split: SplitConfig, *, seed: int,
                 run_dir: str | Path, config_dict: Mapping[str, Any],
                 on_update: Callable[[dict[str, Any]], None] | None = None, dist: DistContext | None = None) -> None:
        self.trainer, self.prune, self.split, self.seed = trainer, prune, split, seed
        self.dist = dist
        self.is_main = dist is None or dist.is_main
        self._partition_ctx: list[DistContext | None] = []
        self.run_dir = Path(run_dir)
        self.config_dict = dict(config_dict)
        self.on_update = on_update
        self.output_layers = list(prune.output_layers or trainer.output_layers)
        self.num_classes = len(trainer.class_names)
        self._tb = None
        self._late: dict[int, dict[str, torch.Tensor]] = {}  # late-rewinding weights per partition

    # ----- setup -------------------------------------------------------------------------------
    def _class_groups(self) -> list[list[int]]:
        path = self.run_dir / "split.json"
        if path.is_file():
            return [list(g) for g in read_json(path)["groups"]]
        n = self.prune.n_partitions
        if self.prune.method == "lth":
            groups = [list(range(self.num_classes))]
        elif self.split.groups is not None:
            if len(self.split.groups) != n:
                raise ConfigError(f"split.groups: {len(self.split.groups)} groups given but prune.partitions is {n}")
            groups = validate_groups(self.split.groups, self.num_classes, self.trainer.class_names)
        else:
            if n > self.num_classes:
                raise ConfigError(f"prune.partitions: must be <= the number of classes ({self.num_classes}), got {n}")
            split_seed = self.seed if self.split.seed is None else self.split.seed
            groups = split_classes(self.num_classes, n, split_seed)
        atomic_write_json({"groups": groups, "class_names": list(self.trainer.class_names)}, path)
        return groups

    def _init_weights(self) -> dict[str, torch.Tensor]:
        path = self.run_dir / "init.pt"
        if path.is_file():
            return load_checkpoint(path)
        seed_everything(derive_seed(self.seed, "init"))
        init = snapshot(self.trainer.build_model(self.num_classes))
        atomic_save(init, path)
        return init

    def _groups(self) -> tuple[list[PruneGroup], int]:
        seed_everything(0)
        model = self.trainer.build_model(self.num_classes)
        specs = {k: _spec_dict(v) for k, v in (self.prune.groups or self.trainer.default_prune_groups).items()}
        groups = resolve_prune_groups(model, specs, self.prune.rates, self.output_layers)
        total = sum(p.numel() for p in model.parameters())
        return groups, total

    def _writer(self):
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run_dir / "tb"))
            except ImportError:  # tensorboard is a declared dependency; degrade rather than fail a run
                self._tb = False
        return self._tb or None

    # ----- one step each -----------------------------------------------------------------------
    def _build(self, num_outputs: int, head_key: Any, init: Mapping[str, torch.Tensor], mask: Mask,
               keep_output: bool) -> nn.Module:
        seed_everything(derive_seed(self.seed, "head", head_key))
        model = self.trainer.build_model(num_outputs)
        rewind(model, init, mask, self.output_layers, keep_output=keep_output)
        return model

    def _stored_mask(self, r: int, mask: Mask) -> Mask | None:
        """The mask stored for round `r` (a resumed run), or None after storing `mask` as that mask."""
        mask_path = round_dir(self.run_dir, r) / "mask.pt"
        if mask_path.is_file():
            return load_checkpoint(mask_path)
        atomic_save(mask, mask_path)
        return None

    def _finished_partitions(self, r: int, n: int) -> list[int]:
        """Partitions of round `r` whose selected model and metrics are on disk already."""
        pdirs = [round_dir(self.run_dir, r) / f"partition_{i}" for i in range(n)]
        return [i for i, pdir in enumerate(pdirs)
                if (pdir / "model.pt").is_file() and (pdir / "metrics.json").is_file()]

    def _load_partition(self, r: int, i: int) -> tuple[dict[str, torch.Tensor], dict]:
        pdir = round_dir(self.run_dir, r) / f"partition_{i}"
        return load_checkpoint(pdir / "model.pt"), read_json(pdir / "metrics.json")

    def _save_partition(self, r: int, i: int, state: dict[str, torch.Tensor], metrics: dict,
                        rewind_state: dict[str, torch.Tensor] | None) -> None:
        pdir = round_dir(self.run_dir, r) / f"partition_{i}"
        if rewind_state is not None:
            atomic_save(rewind_state, pdir / "rewind.pt")
        atomic_save(state, pdir / "model.pt")
        atomic_write_json(metrics, pdir / "metrics.json")

    def _train_partition(self, r: int, i: int, class_ids: list[int], init: dict, mask: Mask,
                         ctx: DistContext | None) -> tuple[dict[str, torch.Tensor], dict, dict | None]:
        """Train partition `i` of round `r` on this rank (with the other ranks of `ctx`); writes nothing but
        the trainer's working files."""
        pdir = round_dir(self.run_dir, r) / f"partition_{i}"
        if ctx is None or ctx.is_group_main:
            pdir.mkdir(parents=True, exist_ok=True)
        lth = self.prune.method == "lth"
        late = self._late
        start = late.get(i, init)
        model = self._build(len(class_ids), ("partition", i), start, mask, keep_output=not lth and i not in late)
        job = TrainJob(round=r, partition=i, class_ids=None if lth else list(class_ids), model=model, mask=mask,
                       seed=derive_seed(self.seed, "train", r, i), workdir=pdir,
                       rewind_iteration=self.prune.rewind_iteration if (r == 0 and self.prune.rewind_iteration) else 0,
                       non_iid_max_drop=self.split.non_iid_max_drop if self.split.non_iid else 0.0,
                       data_seed=derive_seed(self.seed, "data"), dist=ctx)
        t0 = time.perf_counter()
        out = self.trainer.train(job)
        metrics = {**out.metrics, "wall_time_s": time.perf_counter() - t0, "classes": list(class_ids)}
        return out.state_dict, metrics, out.rewind_state

    def _train_round(self, r: int, class_groups: list[list[int]], init: dict, mask: Mask
                     ) -> tuple[list[dict[str, torch.Tensor]] | None, list[dict]]:
        """Train (or read back) every partition of round `r`: the selected weights (on rank 0; None on the
        other ranks) and the metrics (on every rank).

        Each rank trains the partitions `partition_ranks` gives it; the first rank of each partition's
        group hands the result to rank 0, which writes it. Rank 0 writes its own results as soon as they
        exist, so a run stopped by another rank's failure keeps them.
        """
        n = len(class_groups)
        done = set(self._on_main(self._finished_partitions, r, n))
        results: dict[int, tuple[dict, dict]] = {}
        outgoing: dict[int, tuple[dict, dict, dict | None]] = {}
        for i, class_ids in enumerate(class_groups):
            ctx = self._partition_ctx[i]
            if i in done or (self.dist is not None and ctx is None):
                continue
            state, metrics, rewind_state = self._train_partition(r, i, class_ids, init, mask, ctx)
            if ctx is not None and not ctx.is_group_main:
                continue
            if self.is_main:
                self._save_partition(r, i, state, metrics, rewind_state)
                results[i] = (state, metrics)
            else:
                outgoing[i] = (state, metrics, rewind_state)
        handed = gather_to_main(self.dist, outgoing, f"waiting for the partition trainings of round {r}")
        trained = None
        if self.is_main:
            for part in handed or []:
                for i, (state, metrics, rewind_state) in part.items():
                    self._save_partition(r, i, state, metrics, rewind_state)
                    results[i] = (state, metrics)
            for i in done:
                results[i] = self._load_partition(r, i)
            trained = [results[i][0] for i in range(n)]
        def partition_metrics() -> list[dict]:
            return [results[i][1] for i in range(n)]

        return trained, self._on_main(partition_metrics)

    def _late_rewind_states(self, n: int) -> dict[int, dict[str, torch.Tensor]]:
        """The late-rewinding weights stored by the partitions of round 0."""
        paths = {i: round_dir(self.run_dir, 0) / f"partition_{i}" / "rewind.pt" for i in range(n)}
        return {i: load_checkpoint(path) for i, path in paths.items() if path.is_file()}

    def _evaluate(self, r: int, init: dict, mask: Mask, lth_state: dict | None, *, reuse: bool = False) -> dict:
        """Train the ticket of round `r` on the full data (every rank, data-parallel) and evaluate it on rank 0.

        With `reuse` (LTH), the round's own full-data model (`lth_state`, on rank 0) is the evaluated one.
        """
        edir = round_dir(self.run_dir, r) / "eval"
        metrics_path = edir / "metrics.json"

        def stored_metrics() -> dict | None:
            if metrics_path.is_file():
                return read_json(metrics_path)
            edir.mkdir(parents=True, exist_ok=True)
            return None

        stored = self._on_main(stored_metrics)
        if stored is not None:
            return stored
        lth = self.prune.method == "lth"
        start = self._late.get(0, init) if lth else init
        model = self._build(self.num_classes, "ticket", start, mask, keep_output=not lth)
        job = TrainJob(round=r, partition=None, class_ids=None, model=model, mask=mask,
                       seed=derive_seed(self.seed, "ticket", r), workdir=edir,
                       data_seed=derive_seed(self.seed, "data"), dist=self.dist)
        t0 = time.perf_counter()
        if reuse:
            # LTH trains the full data under this mask anyway: that model is the ticket's evaluation.
            if self.is_main:
                model.load_state_dict(lth_state)
            train_metrics: dict[str, Any] = {"reused": f"round_{r:02d}/partition_0"}
        else:
            out = self.trainer.train(job)
            model.load_state_dict(out.state_dict)
            if self.is_main:
                atomic_save(out.state_dict, edir / "model.pt")
            train_metrics = out.metrics

        def evaluate() -> dict:
            metrics = dict(self.trainer.evaluate(model, job))
            metrics.update(train=train_metrics, wall_time_s=time.perf_counter() - t0)
            atomic_write_json(metrics, metrics_path)
            return metrics

        return self._on_main(evaluate)

    def _intersection(self, trained: list[dict[str, torch.Tensor]], mask: Mask, groups: list[PruneGroup]) -> Mask:
        masks = [magnitude_prune(state, mask, groups, on_layer_collapse=self.prune.on_layer_collapse)
                 for state in trained]
        return intersect_masks(masks)

    def _wants_eval(self, r: int, final: bool) -> bool:
        mode = self.prune.evaluate
        return mode == "all" or (mode in ("final", "first_last") and final) or (mode == "first_last" and r == 0)

    def _on_main(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the rank that owns the run directory; every rank gets the result."""
        return run_on_main(self.dist, fn, *args)

    # ----- the loop ----------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Run (or continue) rounds until the target sparsity or the round limit; write the ticket.

        Under torchrun every rank calls this; the partitions of a round are spread over the ranks, the
        full-data trainings use every rank, and rank 0 alone writes the run directory.
        """
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg_path = self.run_dir / "config.yaml"
            if not cfg_path.is_file():
                import yaml

                atomic_write_text(yaml.safe_dump(self.config_dict, sort_keys=False), cfg_path)
        class_groups = self._on_main(self._class_groups)
        init = self._on_main(self._init_weights)
        groups, total_params = self._groups()
        prunable = [n for g in groups for n in g.params]
        seed_everything(0)
        mask = ones_mask(self.trainer.build_model(self.num_classes), prunable)
        n = len(class_groups)
        self._partition_ctx = partition_contexts(self.dist, n) if self.dist is not None else [None] * n
        if self.dist is not None:
            mine = [i for i, ctx in enumerate(self._partition_ctx) if ctx is not None]
            log.info("rank %d of %d trains partition(s) %s of each round", self.dist.rank, self.dist.world_size,
                     mine)  # K < N: in turn; K > N: data-parallel with the other ranks of each partition
        rounds: list[dict[str, Any]] = []
        r = 0
        while True:
            rdir = round_dir(self.run_dir, r)
            stored = self._on_main(self._stored_mask, r, mask)
            if stored is not None:
                mask = stored
            check_same_across_ranks(self.dist, mask, f"the mask of round {r}")
            report = sparsity_report(mask, groups, total_params)
            if self.is_main and not (rdir / "sparsity.json").is_file():
                atomic_write_json(report, rdir / "sparsity.json")
                self._log_sparsity(r, report)
            sparsity = overall_sparsity(mask)
            final = sparsity >= self.prune.target_sparsity or r >= self.prune.max_rounds
            record: dict[str, Any] = {"round": r, "sparsity": sparsity, "prune_rate": report["prune_rate"]["rate"],
                                      "groups": {k: v["sparsity"] for k, v in report["groups"].items()}}
            if final:
                if self._wants_eval(r, True):
                    record["eval"] = self._evaluate(r, init, mask, None)
                record["wall_time_s"] = _stored_time(record)
                rounds.append(record)
                self._update(rounds)
                break
            if self.is_main:
                log.info("round %d: sparsity %.2f%%, training %d partition(s)", r, 100 * sparsity, n)
            trained, record["partitions"] = self._train_round(r, class_groups, init, mask)
            if r == 0 and self.prune.rewind_iteration:
                self._late.update(self._on_main(self._late_rewind_states, n))
            if self._wants_eval(r, False):
                lth = self.prune.method == "lth"
                record["eval"] = self._evaluate(r, init, mask, trained[0] if lth and trained else None, reuse=lth)
            mask = self._on_main(self._intersection, trained, mask, groups)
            record["wall_time_s"] = _stored_time(record)
            rounds.append(record)
            self._update(rounds)
            r += 1
        def rounds_of_rank_0() -> list[dict[str, Any]]:
            return rounds

        rounds = self._on_main(rounds_of_rank_0)
        ticket = Ticket(mask=mask, init=init, architecture=self.trainer.architecture(),
                        sparsity=sparsity_report(mask, groups, total_params),
                        meta={"method": self.prune.method, "partitions": self.prune.n_partitions, "rounds": r,
                              "seed": self.seed, "class_groups": class_groups,
                              "output_layers": self.output_layers,
                              "class_names": list(self.trainer.class_names)})
        if self.is_main:
            save_ticket(ticket, self.run_dir / "ticket.pt")
            if self._tb:
                self._tb.close()
        return RunResult(self.run_dir, ticket, rounds)

    def _update(self, rounds: list[dict[str, Any]]) -> None:
        if not self.is_main:
            return
        summary = {"method": self.prune.method, "partitions": self.prune.n_partitions, "rounds": rounds}
        atomic_write_json(summary, self.run_dir / "summary.json")
        writer = self._writer()
        last = rounds[-1]
        if writer is not None and "eval" in last and isinstance(last["eval"].get("value"), (int, float)):
            writer.add_scalar(f"ticket/{last['eval'].get('metric', 'metric')}", last["eval"]["value"], last["round"])
            for name, value in (last["eval"].get("per_class") or {}).items():
                if isinstance(value, (int, float)):
                    writer.add_scalar(f"ticket_per_class/{name}", value, last["round"])
        if self.on_update is not None:
            self.on_update(summary)

    def _log_sparsity(self, r: int, report: dict) -> None:
        writer = self._writer()
        if writer is None:
            return
        writer.add_scalar("sparsity/prunable", report["overall"]["sparsity"], r)
        writer.add_scalar("sparsity/prune_rate_all_params", report["prune_rate"]["rate"], r)
        for name, row in report["layers"].items():
            writer.add_scalar(f"sparsity_layer/{name}", row["sparsity"], r)
        writer.flush()


def _stored_time(record: dict[str, Any]) -> float:
    """Wall time of a round as the sum of its stored trainings (stable across resumes)."""
    total = sum(p.get("wall_time_s", 0.0) for p in record.get("partitions", []))
    return total + record.get("eval", {}).get("wall_time_s", 0.0)


def _spec_dict(spec: Any) -> dict[str, list[str]]:
    if isinstance(spec, Mapping):
        return {k: list(v) for k, v in spec.items()}
    return {"types": list(spec.types), "include": list(spec.include), "exclude": list(spec.exclude)}


def summary_json(run_dir: str | Path) -> dict[str, Any]:
    """Read a run's summary.json (rounds, sparsity, metrics, wall time)."""
    return json.loads((Path(run_dir) / "summary.json").read_text())
