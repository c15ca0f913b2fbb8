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
        "Pipeline: synth/ingest -> annotate -> parse -> consensus -> split -> datasets -> "
        "train -> evaluate -> predict/serve. Every stage verb takes --config FILE.yaml and --set key=value; flags override both."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """Keeps `scenefit` a group of verbs even while one verb is registered."""


#: Verb modules, in pipeline order (each registers its commands on `app`).
VERB_MODULES = ("env", "tiny_model", "standin_model", "synth", "ingest", "annotate", "data", "train", "evaluate", "predict", "serve")

for _name in VERB_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def main() -> None:
    app()
