"""COLT engine: masks, prune groups, magnitude pruning, rewinding, partitions, the round loop and training.

Task-agnostic: it speaks of parameters, masks, groups, rounds and partitions, and talks to a front end
(classifier or detector) through the `Task` protocol (`colt_core.train.task`).
"""

from colt_core.config import ConfigError, load_config
from colt_core.errors import UserError
from colt_core.prune.magnitude import PruneGroup, magnitude_prune, resolve_prune_groups
from colt_core.prune.masks import Mask, MaskKeeper, apply_mask, intersect_masks, ones_mask
from colt_core.prune.partition import non_iid_keep, split_classes, validate_groups
from colt_core.prune.sparsity import overall_sparsity, pruned_similarity, sparsity_report
from colt_core.prune.ticket import Ticket, load_ticket, save_ticket
from colt_core.prune.weights import rewind, snapshot
from colt_core.run.rounds import RoundLoop, RunResult
from colt_core.rundir import RunDir, prepare_run_dir
from colt_core.settings import EvalConfig, PruneConfig, PruneGroupSpec, RunConfig, SplitConfig, TrainConfig
from colt_core.train.task import Task, TrainJob, TrainOutput
from colt_core.train.trainer import Trainer

__all__ = [
    "ConfigError", "EvalConfig", "Mask", "MaskKeeper", "PruneConfig", "PruneGroup", "PruneGroupSpec", "RoundLoop",
    "RunConfig", "RunDir", "RunResult", "SplitConfig", "Task", "Ticket", "TrainConfig", "TrainJob", "TrainOutput",
    "Trainer", "UserError", "apply_mask", "intersect_masks", "load_config", "load_ticket", "magnitude_prune",
    "non_iid_keep", "ones_mask", "overall_sparsity", "prepare_run_dir", "pruned_similarity", "resolve_prune_groups",
    "rewind", "save_ticket", "snapshot", "sparsity_report", "split_classes", "validate_groups",
]
