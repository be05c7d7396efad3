"""`colt` with the blobs task registered, in a process of its own (the tests that kill a run, or start a second
process on its directory). COLT_BLOBS_SLEEP (seconds per validation batch) slows its trainings down; it is no
setting of the run, so a run started here resumes in-process with the same config.

    python tests/core/colt_blobs.py train --cfg blobs.yaml --out RUN
"""

import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import blobs_task

from colt_core.commands import main
from colt_core.registry import register_task

SLEEP = float(os.environ.get("COLT_BLOBS_SLEEP", "0"))

register_task(dataclasses.replace(blobs_task.ENTRY,
                                  build=lambda cfg, dist, prepared: blobs_task.BlobsTask(sleep=SLEEP)))

if __name__ == "__main__":
    main()
