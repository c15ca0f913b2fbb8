"""`scenefit run` and `scenefit status`: the stages chained into one resumable run folder.

Modules: :mod:`.config` (section ``run``), :mod:`.stages` (the stage table: what each stage
runs, when it is done, its one-line headline), :mod:`.runner` (runs the stages as processes
with their logs; :mod:`.process` says how a stage's process starts), :mod:`.run_folder` (the run's recorded settings, RUN/run.yaml),
:mod:`.serve_check` (the demo's one HTTP request), :mod:`.starter` (`scenefit init`).
"""
