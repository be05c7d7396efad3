"""`python -m colt_core.commands ...`: the `colt` command without its console script."""

from colt_core.commands import main

main()
