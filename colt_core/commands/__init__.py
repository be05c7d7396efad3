"""The `colt` command: one click group over every tool.

    colt train --cfg voc_synth_tiny.yaml          find a ticket (the task comes from the config)
    colt export RUN --out DIR                     dense, sparse and ONNX exports of a run's ticket
    colt compare RUN RUN ... --out DIR            COLT against LTH, seeds as mean ± std
    colt make-data voc|coco|cifar10|... ...       synthetic datasets in their real on-disk formats
    colt eval ...                                 and every command a registered task adds

The engine's commands are here; a task's own commands and datasets come from its registry entry, so the group
lists whatever tasks are installed. `tools/*.py` are thin scripts over the same command objects.
"""

from __future__ import annotations

import importlib

import click

from colt_core.registry import get_task, task_names

ENGINE_COMMANDS = {"train": "colt_core.commands.train:train_command",
                   "export": "colt_core.commands.export:export_command",
                   "compare": "colt_core.commands.compare:compare_command"}


def _load(target: str) -> click.Command:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _task_commands() -> dict[str, click.Command]:
    commands: dict[str, click.Command] = {}
    for name in task_names():
        commands.update(get_task(name).commands)
    return commands


class DataGroup(click.Group):
    """`colt make-data`: one subcommand per dataset a registered task can write."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for task in task_names() for n in get_task(task).datasets)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for task in task_names():
            if cmd_name in get_task(task).datasets:
                return get_task(task).datasets[cmd_name]
        return None


class ColtGroup(click.Group):
    """The engine's commands, then those the registered tasks add (loaded on first use)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*ENGINE_COMMANDS, "make-data", *_task_commands()])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in ENGINE_COMMANDS:
            return _load(ENGINE_COMMANDS[cmd_name])
        if cmd_name == "make-data":
            return make_data
        return _task_commands().get(cmd_name)


@click.group(cls=DataGroup, name="make-data", context_settings={"help_option_names": ["-h", "--help"]},
             epilog="\b\nExamples:\n  colt make-data voc --out data/synthetic_voc\n"
                    "  colt make-data cifar10 --root data")
def make_data() -> None:
    """Write a small synthetic dataset in its real on-disk format (for demos and tests)."""


@click.group(cls=ColtGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog="\b\nExamples:\n  colt train --cfg voc_synth_tiny.yaml --resume\n"
                    "  colt export runs/voc_synth_tiny --out runs/voc_synth_tiny/export\n"
                    "  colt compare runs/voc_lth runs/voc_colt2 --out runs/compare\n"
                    "  colt <command> --help")
def main() -> None:
    """COLT: find sparse trainable subnetworks (lottery tickets) of classifiers and detectors in fewer rounds
    than LTH, compare them, and export them."""
