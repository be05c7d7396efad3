"""The engine's config sections: how to train (`train:`, `eval:`), prune (`prune:`) and split classes (`split:`).

Every front end's run config has these sections, so every knob works for every task; a front end may
subclass a section only to change its defaults (its paper recipe).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from colt_core.config import at_least, closed_interval, field, open_interval, positive

CONTROLS = ("random_prune", "random_reinit")  # the controls a ticket can be judged against (colt_core.prune.controls)


@dataclass
class OptimizerConfig:
    """Optimizer hyper-parameters (detector paper recipe: Adam, lr 1e-4)."""

    name: Literal["adam", "adamw", "sgd"] = field("adam", help="adam | adamw | sgd")
    lr: float = field(1e-4, help="base learning rate", check=positive)
    weight_decay: float = field(0.0, help="weight decay (L2 for adam/sgd, decoupled for adamw)",
                                check=at_least(0.0))
    momentum: float = field(0.9, help="SGD momentum", check=closed_interval(0.0, 0.999))
    nesterov: bool = field(False, help="SGD Nesterov momentum")
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], help="Adam betas")

    def validate(self) -> list[tuple[str, str]]:
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            return [("betas", f"must be two numbers in [0, 1), got {self.betas}")]
        if self.nesterov and self.name == "sgd" and self.momentum == 0:
            return [("nesterov", "needs momentum > 0")]
        return []


@dataclass
class ScheduleConfig:
    """Learning-rate schedule (detector paper recipe: cosine annealing to 1.02e-6)."""

    name: Literal["cosine", "multistep", "constant"] = field("cosine", help="cosine | multistep | constant")
    eta_min: float = field(1.02e-6, help="cosine: final learning rate", check=at_least(0.0))
    milestones: list[int] = field(default_factory=list, help="multistep: epochs at which lr *= gamma")
    gamma: float = field(0.1, help="multistep: factor applied at each milestone", check=positive)
    warmup_epochs: int = field(0, help="linear warm-up epochs (per iteration)", check=at_least(0))
    interval: Literal["iteration", "epoch"] = field("iteration",
                                                   help="whether the lr changes every step or every epoch")

    def validate(self) -> list[tuple[str, str]]:
        if any(m < 1 for m in self.milestones) or self.milestones != sorted(set(self.milestones)):
            return [("milestones", f"must be increasing epoch numbers >= 1, got {self.milestones}")]
        return []


@dataclass
class TrainConfig:
    """One training (a partition model, a ticket on the full data): the detector paper's recipe by default."""

    epochs: int = field(50, help="epochs per training; the weights with the lowest validation loss are kept",
                        check=at_least(1))
    batch_size: int = field(4, help="samples per batch (per rank under torchrun)", check=at_least(1))
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig, help="optimizer")
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig, help="learning-rate schedule")
    grad_clip: float | None = field(None, help="clip the gradient norm to this (null: no clipping)", check=positive)
    device: str = field("auto", help="auto (CUDA when present), cpu or cuda[:N]")
    amp: Literal["auto", "bf16", "fp16", "off", True, False] = field(
        "auto", help="mixed precision: auto = bfloat16 on GPUs that have it, float16 with a loss scaler on other "
                     "GPUs, off on the CPU; bf16 (GPU or CPU), fp16 (GPU), off (YAML's off is false)")
    channels_last: Literal["auto", True, False] = field(
        "auto", help="channels-last memory format for the model's convolutions: auto = on with CUDA")
    cudnn_benchmark: Literal["auto", True, False] = field(
        "auto", help="cuDNN autotuning: auto = on with CUDA when every batch has one input size (stretch resizing, "
                     "a classifier's crops)")
    tf32: bool = field(True, help="TF32 matmuls and convolutions on GPUs that have them (Ampere and later)")
    persistent_workers: Literal["auto", True, False] = field(
        "auto", help="keep data-loader workers between epochs (data.num_workers > 0): auto = on with CUDA; off on "
                     "the CPU, where a resumed run then draws the same augmentation as an uninterrupted one")
    prefetch_factor: int = field(4, help="batches each data-loader worker loads ahead (data.num_workers > 0)",
                                 check=at_least(1))
    cpu_threads: int | None = field(None, help="torch CPU threads (null: torch's default); small models on a "
                                               "shared CPU often run fastest on 1", check=at_least(1))
    progress: bool = field(True, help="progress bars (on a terminal only)")

    def validate(self) -> list[tuple[str, str]]:
        """The schedule against the epochs and the optimizer, checked on load rather than when training starts."""
        schedule = self.schedule
        if schedule.name == "cosine" and schedule.warmup_epochs >= self.epochs:
            return [("schedule.warmup_epochs", f"must be < epochs ({self.epochs}), got {schedule.warmup_epochs}")]
        if schedule.name == "cosine" and schedule.eta_min > self.optimizer.lr:
            return [("schedule.eta_min", f"must be <= optimizer.lr ({self.optimizer.lr}), got {schedule.eta_min}")]
        return []


@dataclass
class EvalConfig:
    """Validation and test-set evaluation."""

    batch_size: int = field(4, help="samples per evaluation batch (validation and test)", check=at_least(1))


@dataclass
class PruneGroupSpec:
    """Which weights form one prune group: module types, optionally narrowed by name regexes."""

    types: list[str] = field(default_factory=list, help="module class names, e.g. [Conv2d] or [Linear]")
    include: list[str] = field(default_factory=list, help="regexes on weight names; empty = every weight of the types")
    exclude: list[str] = field(default_factory=list, help="regexes on weight names left out of the group")


@dataclass
class EarlyBirdConfig:
    """Stop a search training once the mask it would prune stops changing (You et al., "Drawing Early-Bird
    Tickets", ICLR 2020)."""

    distance: float = field(0.1, help="stop when the would-be mask differs from each of the last `window` ones on "
                                      "less than this share of the weights the round prunes from",
                            check=open_interval(0.0, 1.0))
    window: int = field(5, help="how many earlier checks' masks the newest is compared with", check=at_least(1))
    check: Literal["epoch"] | int = field(
        "epoch", help="when to check: epoch (after each epoch) or every this many optimizer steps")

    def validate(self) -> list[tuple[str, str]]:
        if not isinstance(self.check, str) and self.check < 1:
            return [("check", f"must be epoch or a number of optimizer steps >= 1, got {self.check}")]
        return []


@dataclass
class PruneConfig:
    """How tickets are found: COLT-N or LTH, per-group rates, when to stop, what to evaluate."""

    method: Literal["colt", "lth"] = field("colt", help="colt: N partitions, intersected masks; lth: IMP on full data")
    partitions: int = field(2, help="N of COLT-N (ignored by lth, which uses the full data)", check=at_least(1))
    rates: dict[str, float] = field(default_factory=lambda: {"conv": 0.15, "fc": 0.20},
                                    help="fraction of the surviving weights pruned per round, per group")
    groups: dict[str, PruneGroupSpec] = field(
        default_factory=dict, help="prune groups by name; empty = the front end's defaults (conv and fc)")
    output_layers: list[str] = field(default_factory=list,
                                     help="never-pruned output layers; empty = the front end's default head")
    target_sparsity: float = field(0.79, help="stop when this fraction of prunable weights is pruned",
                                   check=open_interval(0.0, 1.0))
    max_rounds: int = field(20, help="stop after this many train-prune rounds", check=at_least(1))
    rewind_iteration: int = field(
        0, help="0: rewind to θ0; k > 0: late rewinding to the weights after k optimizer steps of round 0's "
                "full-data training (LTH: its round; COLT: the dense model's), which every later training and "
                "the ticket file start from", check=at_least(0))
    on_layer_collapse: Literal["error", "warn"] = field("error", help="what to do when a layer loses every weight")
    prune_frozen: bool = field(False, help="also prune weights the model keeps frozen (e.g. torchvision's "
                                           "trainable_backbone_layers); they are left alone by default")
    scope: Literal["global", "layer"] = field(
        "global", help="global: a group's smallest weights across all its layers (the paper's); layer: every layer "
                       "loses the group's rate of its own weights, for models whose layers' weights differ in scale "
                       "(MobileNet's depthwise convs beside an FPN), where global pruning empties whole layers")
    evaluate: Literal["first_last", "final", "all", "none"] = field(
        "first_last",
        help="which tickets to train on the full data and evaluate: dense+final, final, every round, none")
    evaluate_levels: list[float] = field(
        default_factory=list, help="also evaluate the first round whose sparsity reaches each of these levels, "
                                   "e.g. [0.79, 0.9] (besides what `evaluate` asks for)")
    controls: list[str] = field(
        default_factory=list, help="controls trained and evaluated beside every evaluated sparse ticket: "
                                   "random_prune (a random mask with the ticket's per-layer counts, from the "
                                   "ticket's start weights), random_reinit (the ticket's mask on a fresh init)")
    early_bird: EarlyBirdConfig | None = field(
        None, help="stop each search training (a COLT partition, an LTH round; never a ticket evaluation or a "
                   "control) once its would-be mask has settled, and prune from the weights at that moment; "
                   "null: train every epoch")
    partition_steps: Literal["epochs", "full_data"] = field(
        "epochs", help="how long a COLT partition trains: epochs (train.epochs over its own data, the paper's: "
                       "fewer optimizer steps than a full-data training) or full_data (as many optimizer steps as "
                       "train.epochs over the full data, its epochs scaled up)")
    score: Literal["magnitude", "magnitude_increase"] = field(
        "magnitude", help="what a trained model's weights are ranked by: magnitude |w| (the paper's), or "
                          "magnitude_increase |w| - |w0| (Zhou et al. 2019: how much training grew a weight, "
                          "which ranks weights that stayed near their start apart from their start)")
    # torch-pruning's dependency graph groups the coupled channels (colt_core.prune.channels).
    granularity: Literal["weight", "channel"] = field(
        "weight", help="weight: a ticket keeps any weights (unstructured); channel: whole output channels of the "
                       "convolutions, coupled channels (residual sums, depthwise convs, FPN laterals) together, each "
                       "channel group losing its prune group's rate of its surviving channels a round, so the ticket "
                       "exports to a slimmer network that runs faster")
    channel_score: Literal["l1", "bn_gamma"] = field(
        "bn_gamma", help="granularity channel: what ranks a channel, summed over its group: bn_gamma (|γ| of the "
                         "BatchNorm layers after its filters, Network Slimming's; l1 where there are none: it gave "
                         "the better tickets on the digits benchmark) or l1 (the L1 norm of its filters)")
    fc_granularity: Literal["weight", "neuron"] = field(
        "weight", help="granularity channel: the linear layers' weights are pruned one by one (weight) or as whole "
                       "neurons, rows coupled to the next layer's inputs (neuron)")

    def validate(self) -> list[tuple[str, str]]:
        problems = []
        for name, rate in self.rates.items():
            check = open_interval(0.0, 1.0)(rate)
            if check:
                problems.append((f"rates.{name}", check))
        if any(not 0.0 < level < 1.0 for level in self.evaluate_levels):
            problems.append(("evaluate_levels", f"must be sparsities in (0, 1), got {self.evaluate_levels}"))
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown or len(set(self.controls)) != len(self.controls):
            problems.append(("controls", f"must be distinct names from {', '.join(CONTROLS)}, got {self.controls}"))
        if self.groups:
            missing = sorted(set(self.groups) - set(self.rates))
            if missing:
                problems.append(("rates", f"groups {missing} have no rate"))
        if self.granularity == "weight" and self.fc_granularity == "neuron":
            problems.append(("fc_granularity", "neuron prunes channel tickets: set prune.granularity: channel too"))
        return problems

    @property
    def n_partitions(self) -> int:
        """Partitions actually trained per round (1 for LTH)."""
        return 1 if self.method == "lth" else self.partitions


@dataclass
class SplitConfig:
    """How classes are split into the COLT partitions."""

    groups: list[list[int | str]] | None = field(
        None, help="explicit class groups (ids or names): disjoint, non-empty, covering every class; "
                   "null = seeded random near-equal split")
    seed: int | None = field(None, help="seed of the random split; null = the run's seed")
    non_iid: bool = field(False, help="drop a seeded random 0..non_iid_max_drop share of each class's samples")
    non_iid_max_drop: float = field(0.3, help="largest share of a class's samples dropped when non_iid",
                                    check=closed_interval(0.0, 0.95))


def check_partitions(prune: PruneConfig, split: SplitConfig, num_classes: int) -> list[tuple[str, str]]:
    """Cross-checks of the partitions against the class count (`RunConfig.validate` runs them when the config
    knows the count; a task whose classes come from its data runs them once it has read it)."""
    problems = []
    if prune.method == "colt" and prune.partitions > num_classes:
        problems.append(("prune.partitions",
                         f"must be <= the number of classes ({num_classes}), got {prune.partitions}"))
    if split.groups is not None and prune.method == "colt" and len(split.groups) != prune.partitions:
        problems.append(("split.groups",
                         f"gives {len(split.groups)} groups but prune.partitions is {prune.partitions}"))
    return problems


@dataclass
class DataConfig:
    """What every task's `data:` section has; a front end adds where its dataset lives and how it is read."""

    val_fraction: float = field(0.1, help="share of the training data held out (seeded) for model selection; "
                                          "the test set is only for reported metrics",
                                check=open_interval(0.0, 1.0))
    num_workers: int = field(2, help="DataLoader worker processes", check=at_least(0))


@dataclass
class RunConfig:
    """The sections every run config has; a front end adds its `data:` and `model:` (and may narrow a
    section's type to change its defaults)."""

    task: str = field("", help="the task this config is for (the name it registered as, e.g. detection or "
                                "classification): `colt train` picks the front end by it")
    seed: int = field(0, help="seed of θ0, the class split, the validation hold-out and every training")
    output_dir: str = field("runs/run", help="run directory (--out overrides)")
    data: DataConfig = field(default_factory=DataConfig, help="dataset")
    train: TrainConfig = field(default_factory=TrainConfig, help="training")
    eval: EvalConfig = field(default_factory=EvalConfig, help="evaluation")
    prune: PruneConfig = field(default_factory=PruneConfig, help="pruning")
    split: SplitConfig = field(default_factory=SplitConfig, help="class partitions")
    ticket: str | None = field(None, help="train this ticket file (mask + start weights; found by this tool, on "
                                          "this or another dataset) on the data instead of finding a ticket; "
                                          "--ticket sets it")
    control: str | None = field(None, help="with ticket: train this control of it instead: random_prune or "
                                           "random_reinit; --control sets it")

    @property
    def num_classes(self) -> int | None:
        """Classes of the configured data when the config alone tells (None: known once the data is read)."""
        return None

    def validate(self) -> list[tuple[str, str]]:
        expected = type(self).__dataclass_fields__["task"].default
        if expected and self.task != expected:
            return [("task", f"this is a {expected} config (task: {expected}), got {self.task!r}; give a {self.task} "
                             f"config to its own tool, or `colt train`, which picks the task from the config")]
        if self.num_classes is not None:
            problems = check_partitions(self.prune, self.split, self.num_classes)
            if problems:
                return problems
        if self.control is not None and self.control not in CONTROLS:
            return [("control", f"must be one of {', '.join(CONTROLS)}, got {self.control!r}")]
        if self.control is not None and self.ticket is None:
            return [("control", "is a control of a given ticket: pass --ticket FILE too")]
        return []
