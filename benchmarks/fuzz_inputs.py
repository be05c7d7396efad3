"""Fuzz every input loader at length: the suite's fuzz targets (tests/core/test_fuzz.py, tests/det/test_fuzz.py) with
N generated inputs each, printing how many inputs each tried, how many were accepted and refused, and how long
it took.

    python benchmarks/fuzz_inputs.py --examples 2000            # 6 targets x 2000 = 12,000 inputs
    python benchmarks/fuzz_inputs.py --examples 500 --only coco  # targets whose name holds "coco"
    python benchmarks/fuzz_inputs.py --examples 2000 --seed 1    # other inputs than the suite's

Every input must be accepted or refused with a `colt_core.errors.UserError`; a target that meets another exception
stops there, hypothesis shrinks the input, and the script prints it and exits 1 after the other targets. The
inputs are derandomized: the same N (and --seed) gives the same inputs.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
import traceback
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable from a checkout; the targets import `tests.fuzzing`
MODULES = ("tests.core.test_fuzz", "tests.det.test_fuzz")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--examples", default=2000, show_default=True, help="generated inputs per target")
@click.option("--only", default=None, help="run only the targets whose function name contains this")
@click.option("--seed", type=int, default=None, help="draw other inputs than the suite's, from this seed")
def main(examples: int, only: str | None, seed: int | None) -> None:
    """Run the fuzz targets with EXAMPLES inputs each and print what they tried."""
    # Read by tests.fuzzing when it is first imported.
    os.environ["COLT_FUZZ_EXAMPLES"] = str(examples)
    if seed is not None:
        os.environ["COLT_FUZZ_SEED"] = str(seed)
    logging.disable(logging.WARNING)  # skip mode warns once per skipped image: thousands of lines
    import hypothesis
    import torch

    torch.set_num_threads(1)
    from tests import fuzzing

    failed = []
    start = time.perf_counter()
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in sorted(n for n in dir(module) if n.startswith("test_fuzz") and (only is None or only in n)):
            before = {target: sum(c.values()) for target, c in fuzzing.OUTCOMES.items()}
            began = time.perf_counter()
            target = getattr(module, name)
            target = hypothesis.seed(seed)(target) if seed is not None else target
            try:
                target()
            except Exception:  # noqa: BLE001 - a bug the fuzzer found: reported below, the other targets still run
                failed.append(name)
                traceback.print_exc()
            tried = sum(sum(c.values()) - before.get(t, 0) for t, c in fuzzing.OUTCOMES.items())
            click.echo(f"{module_name}.{name}: {tried} inputs in {time.perf_counter() - began:.1f} s", err=True)
    total = sum(sum(c.values()) for c in fuzzing.OUTCOMES.values())
    drawn = f", seed {seed}" if seed is not None else ""
    click.echo(f"\n### Fuzzing the input loaders ({examples} examples per target{drawn})\n")
    for line in fuzzing.report():
        click.echo(f"- {line}")
    click.echo(f"\n{total} inputs in {time.perf_counter() - start:.1f} s, "
               f"{'no' if not failed else len(failed)} target(s) failed{': ' + ', '.join(failed) if failed else ''}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
