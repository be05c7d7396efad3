"""COLT engine: masks, prune groups, magnitude pruning, rewinding, partitions and the round loop.

Task-agnostic: it speaks of parameters, masks, groups, rounds and partitions, and talks to a
front end (classifier or detector) through the `Trainer` protocol.
"""

from colt_core.config import ConfigError, load_config
from colt_core.masks import Mask, MaskKeeper, apply_mask, intersect_masks, ones_mask
from colt_core.partition import non_iid_keep, split_classes, validate_groups
from colt_core.pruning import PruneGroup, magnitude_prune, resolve_prune_groups
from colt_core.rounds import RoundLoop, RunResult, Trainer, TrainJob, TrainOutput, prepare_run_dir
from colt_core.settings import PruneConfig, PruneGroupSpec, SplitConfig
from colt_core.sparsity import overall_sparsity, pruned_similarity, sparsity_report
from colt_core.ticket import Ticket, load_ticket, save_ticket
from colt_core.training import FitResult, fit
from colt_core.weights import rewind, snapshot

__all__ = [
    "ConfigError", "FitResult", "Mask", "MaskKeeper", "PruneConfig", "PruneGroup", "PruneGroupSpec", "RoundLoop",
    "RunResult", "SplitConfig", "Ticket", "TrainJob", "TrainOutput", "Trainer", "apply_mask", "fit",
    "intersect_masks", "load_config", "load_ticket", "magnitude_prune", "non_iid_keep", "ones_mask",
    "overall_sparsity", "prepare_run_dir", "pruned_similarity", "resolve_prune_groups", "rewind", "save_ticket",
    "snapshot", "sparsity_report", "split_classes", "validate_groups",
]
