"""Compare COLT and LTH runs of one setup: rounds to reach each sparsity, metric against sparsity (with the
tickets' controls), wall time, the paper's Fig. 5 and Fig. 7 plots, and the per-class table of the runs whose
task's report asks for one. Runs that differ only in their seed form a series, shown as mean ± std.
The same as `colt compare`.

    python tools/compare_runs.py runs/voc_lth runs/voc_colt2 --out runs/compare_voc
    python tools/compare_runs.py runs/lth_s0 runs/lth_s1 runs/colt2_s0 runs/colt2_s1 --out runs/compare_seeds
"""

from colt_core.commands.compare import compare_command as main

if __name__ == "__main__":
    main()
