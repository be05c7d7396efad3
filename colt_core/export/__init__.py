"""Dense, sparse, slim and ONNX exports of a run's tickets.

Reads run records (`colt_core.rundir`) and tickets and never imports the training recipe. `sparse` is the file
format, `run_tickets` reads what a run holds, `exporter` writes an export, `onnx` traces and checks ONNX files,
`slim` cuts a channel ticket's removed channels out of its model (`load_slim` reads the result back as a model).
"""

from colt_core.export.errors import ExportError
from colt_core.export.exporter import (
    SOURCES,
    ExportResult,
    ExportTarget,
    ExportView,
    OnnxExport,
    export_run,
    masked_state_dict,
    sparsity_markdown,
    task_export_target,
    write_onnx,
    write_slim_onnx,
)
from colt_core.export.onnx import compare_outputs, export_onnx, require_onnx, run_onnx, verify_onnx
from colt_core.export.run_tickets import (
    evaluated_rounds,
    load_round_ticket,
    trained_weights_path,
    unfinished_run_architecture,
)
from colt_core.export.slim import (
    SLIM_FORMAT,
    SlimResult,
    SlimTrace,
    apply_cuts,
    dead_channels,
    is_channel_mask,
    l1_channel_mask,
    load_slim,
    read_slim,
    save_slim,
    slim_copy,
    slim_model,
)
from colt_core.export.sparse import (
    SPARSE_FORMAT,
    SPARSE_VERSION,
    SparseFormatError,
    encode_sparse,
    load_sparse,
    save_sparse,
)

__all__ = [
    "SLIM_FORMAT",
    "SOURCES",
    "SPARSE_FORMAT",
    "SPARSE_VERSION",
    "ExportError",
    "ExportResult",
    "ExportTarget",
    "ExportView",
    "OnnxExport",
    "SlimResult",
    "SlimTrace",
    "SparseFormatError",
    "apply_cuts",
    "compare_outputs",
    "dead_channels",
    "encode_sparse",
    "evaluated_rounds",
    "export_onnx",
    "export_run",
    "is_channel_mask",
    "l1_channel_mask",
    "load_round_ticket",
    "load_slim",
    "load_sparse",
    "masked_state_dict",
    "read_slim",
    "require_onnx",
    "run_onnx",
    "save_slim",
    "save_sparse",
    "slim_copy",
    "slim_model",
    "sparsity_markdown",
    "task_export_target",
    "trained_weights_path",
    "unfinished_run_architecture",
    "verify_onnx",
    "write_onnx",
    "write_slim_onnx",
]
