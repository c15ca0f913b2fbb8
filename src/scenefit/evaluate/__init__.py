"""Stage 8, evaluate: per-criterion and fused metrics against the teacher (and the truth when
known), the untrained base as baseline, reasoning checks, the shortcut test on unmodified
images, and a self-contained report.

    scenefit evaluate --students runs/demo/students --data runs/demo/datasets --split test \
        --out runs/demo/report --config demo

Modules: config (section ``evaluate``), metrics, reasoning, shortcut, report, runner.
"""
