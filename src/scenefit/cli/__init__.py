"""The ``scenefit`` command line: one verb per pipeline stage.

    scenefit --help            # every verb
    scenefit VERB --help       # what a verb does, its flags and their defaults

Each verb lives in its own module below and registers itself on :data:`app`; stage code is
imported inside the verbs so that ``--help`` stays fast.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="scenefit",
    help=(
        "Distil the context reasoning of large VLMs into three small students "
        "(location, size, co-occurrence).\n\n"
        "Start here: `scenefit init DIR` (a config and manifest for your own images and teacher), then "
        "`scenefit run --config DIR/scenefit.yaml --out RUN`; the demo: `scenefit run --config demo --out runs/demo`; "
        "where a run stands: `scenefit status RUN`.\n\n"
        "Pipeline: synth/ingest -> annotate -> parse -> consensus -> split -> datasets -> "
        "train -> evaluate -> predict/serve. Every stage verb takes --config (a packaged config's name — "
        "`scenefit configs` — or a file) and --set key=value; flags override both."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """Keeps `scenefit` a group of verbs even while one verb is registered."""


#: Verb modules, in pipeline order (each registers its commands on `app`).
VERB_MODULES = (
    "run", "status", "init", "configs", "env", "tiny_model", "standin_model", "synth", "ingest", "annotate",
    "consensus", "split", "datasets", "train", "evaluate", "predict", "export_vllm", "serve", "serve_teacher",
)

for _name in VERB_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def main() -> None:
    app()
