"""The embedded synthetic world (scenes with one boxed object and known truth) and the
simulated teachers that answer about it.

    scenefit synth --n 400 --out runs/demo/world

    from scenefit.testbed import WorldConfig, generate_world, load_layouts, SimulatedTeacher, PERSONAS

A test bed, labelled SYNTHETIC in every output; never a stand-in for a result on real data.
"""

from scenefit.testbed.world import WorldConfig, generate_world, iter_layouts, layout_sample, load_layouts, sample_layout
from scenefit.testbed.personas import PERSONAS, PersonaConfig, SimulatedTeacher

__all__ = [
    "WorldConfig", "generate_world", "iter_layouts", "layout_sample", "load_layouts", "sample_layout",
    "PERSONAS", "PersonaConfig", "SimulatedTeacher",
]
