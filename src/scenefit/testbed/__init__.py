"""The test bed, kept apart from the product: everything scenefit proves itself on without a
model hub, a dataset host or a GPU.

- :mod:`.world`, :mod:`.catalog`, :mod:`.render` — the embedded synthetic world (scenes with
  one boxed object and known truth per criterion)
- :mod:`.personas` and :mod:`.simulated_backend` — simulated teachers that answer about it
- :mod:`.tiny_model`, :mod:`.tiny_vision`, :mod:`.tiny_knowledge` — a tiny Qwen2.5-VL built
  locally, and its perception and knowledge pretraining
- :mod:`.standin` — the Qwen2.5-VL-3B-Instruct stand-in: real vocabulary, template, processor
  and config, random weights
- :mod:`.toy_students` — small students on the tiny base, for tests and benchmarks

    scenefit synth --n 400 --out runs/demo/world

    from scenefit.testbed import WorldConfig, generate_world, load_layouts, SimulatedTeacher, PERSONAS

A test bed, labelled SYNTHETIC in every output; never a stand-in for a result on real data.
"""

from scenefit.testbed.personas import PERSONAS, PersonaConfig, SimulatedTeacher
from scenefit.testbed.world import WorldConfig, generate_world, iter_layouts, layout_sample, load_layouts, sample_layout

__all__ = [
    "WorldConfig", "generate_world", "iter_layouts", "layout_sample", "load_layouts", "sample_layout",
    "PERSONAS", "PersonaConfig", "SimulatedTeacher",
]
