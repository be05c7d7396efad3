"""The run directory: its layout (every path), the create/resume policy, and typed records of what is stored.

Below the training recipe: it imports only the foundation, so `train`, `run`, `report` and `export` all read
and write a run through it.
"""

from colt_core.rundir.layout import RoundDir, RunDir, RunDirError, TrainingDir, open_run
from colt_core.rundir.policy import prepare_run_dir, write_config
from colt_core.rundir.records import (
    SUMMARY_SCHEMA,
    Evaluation,
    PartitionResult,
    RoundRecord,
    RunSummary,
    TrainingRecord,
    load_partition,
    read_evaluation,
    read_summary,
    save_partition,
    write_summary,
)

__all__ = [
    "SUMMARY_SCHEMA", "Evaluation", "PartitionResult", "RoundDir", "RoundRecord", "RunDir", "RunDirError",
    "RunSummary", "TrainingDir", "TrainingRecord", "load_partition", "open_run", "prepare_run_dir",
    "read_evaluation", "read_summary", "save_partition", "write_config", "write_summary",
]
