"""Sweeps: seeds, grids and ablations of a bundle's stages run on Ray, and paper-style reports.

``fewlabel sweep SPEC.yaml`` runs every (cell, seed) of a spec (:mod:`fewlabel.sweep.spec`) as a Ray
task (:mod:`fewlabel.sweep.execute`); ``fewlabel report RUN_DIR`` writes tables and plots
(:mod:`fewlabel.sweep.report`). Each bundle ships the specs of its paper's tables in ``bundles/<bundle>/sweeps/``.
"""

from .execute import RunFailed, execute_run, run_sweep, select_runs
from .report import aggregate, collect, grid_table, make_report, metrics_table, per_class_table
from .spec import Run, SpecError, SweepSpec, SweepStage, cell_name, check_run_overrides, load_spec

__all__ = [
    "RunFailed", "execute_run", "run_sweep", "select_runs", "aggregate", "collect", "grid_table", "make_report",
    "metrics_table", "per_class_table", "Run", "SpecError", "SweepSpec", "SweepStage", "cell_name", "load_spec",
    "check_run_overrides",
]
