"""The task registry: what the layers above the engine need of each task, found by the task's name.

A front end registers one `TaskEntry` (as a model registers with timm): its name (the "task" key of run configs
and ticket architectures), its config class, how its `Task` is built, how its report reads, how a ticket's
architecture becomes an export target, and the commands it adds to `colt`. Tools, export, compare, transfer and
reports look a task up here by that name; nothing above the engine picks a task by hand.

Installed front ends are found through the `colt.tasks` entry-point group (`setup.cfg`), loaded on the first
look-up; a task in a script or a test registers itself with `register_task`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from colt_core.errors import UserError

ENTRY_POINT_GROUP = "colt.tasks"


class UnknownTaskError(UserError, KeyError):
    """No registered task has the name a config, run or ticket asks for."""

    def __str__(self) -> str:  # KeyError quotes its message; a user reads it as a sentence
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class TaskEntry:
    """One task as the layers above the engine see it.

    `prepare(cfg, dist)` runs before any work (datasets present, weights obtainable) and returns what
    `build(cfg, dist, prepared)` needs besides the config; `notes(cfg, prepared)` are report lines about the
    run's start (e.g. the pretrained weights). `report_style(config)` takes a run config as plain data (a
    stored config.yaml or `to_dict(cfg)`). `export_target(architecture)` rebuilds a ticket's model for export;
    `architecture_from_config(config, num_classes)` describes the model of a run that has no ticket yet
    (`num_classes`: the run's class count, background not counted; None: the config's own). `commands` are
    click commands `colt` gains (e.g. `eval`), and `datasets` maps a `colt make-data` name to the click command
    that writes that synthetic dataset. `report_figure(run_dir, summary)` draws the task's figure of a run's
    report from what its evaluations saved (`TrainingDir.preview`) and returns it (a
    `colt_core.report.figure.ReportFigure`), or None where there is nothing to draw (e.g. an older run).
    """

    name: str
    config: type
    build: Callable[[Any, Any, Any], Any]
    report_style: Callable[[Mapping[str, Any]], Any]
    export_target: Callable[[Mapping[str, Any]], Any]
    prepare: Callable[[Any, Any], Any] = lambda cfg, dist: None
    notes: Callable[[Any, Any], list[str]] = lambda cfg, prepared: []
    architecture_from_config: Callable[[Mapping[str, Any], int | None], dict[str, Any]] | None = None
    commands: Mapping[str, Any] = field(default_factory=dict)
    datasets: Mapping[str, Any] = field(default_factory=dict)
    report_figure: Callable[[Any, Any], Any] | None = None


_TASKS: dict[str, TaskEntry] = {}
_loaded = False


def register_task(entry: TaskEntry) -> TaskEntry:
    """Make `entry` findable by its name; registering the same name again replaces it (a reloaded module)."""
    _TASKS[entry.name] = entry
    return entry


def unregister_task(name: str) -> None:
    """Forget a task (for tests that register a throwaway one)."""
    _TASKS.pop(name, None)


def _load_installed() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        point.load()  # the module registers its task on import


def task_names() -> list[str]:
    """Every registered task, installed ones included, sorted."""
    _load_installed()
    return sorted(_TASKS)


def get_task(name: Any, where: str = "task") -> TaskEntry:
    """The entry registered as `name`; one clear error naming `where` the name came from otherwise."""
    _load_installed()
    if isinstance(name, str) and name in _TASKS:
        return _TASKS[name]
    known = ", ".join(sorted(_TASKS)) or "none (is the colt package installed? pip install -e .)"
    raise UnknownTaskError(f"{where}: unknown task {name!r}; registered tasks: {known}")


def task_of_config(config: Mapping[str, Any], where: str = "config") -> TaskEntry:
    """The entry of a run config given as plain data (its "task" key)."""
    if not isinstance(config, Mapping) or "task" not in config:
        known = ", ".join(task_names())
        raise UnknownTaskError(f"{where}: no task key; add e.g. `task: detection` at the top (registered tasks: "
                               f"{known})")
    return get_task(config["task"], f"{where}: task")


def task_of_architecture(architecture: Mapping[str, Any], where: str = "ticket") -> TaskEntry:
    """The entry of a ticket's architecture description (its "task" key)."""
    return get_task(architecture.get("task") if isinstance(architecture, Mapping) else None,
                    f"{where}: architecture task")
