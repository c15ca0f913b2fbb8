"""scenefit — distil the context reasoning of large VLMs into small LoRA students.

An image has one object marked with a red box. Each student answers one criterion
(location, size, co-occurrence): in context or out of context, and why.
"""

__version__ = "0.1.0"

SYNTHETIC_NOTICE = (
    "SYNTHETIC WORLD: procedurally drawn scenes and simulated teachers — "
    "a test bed, not a result on real data."
)
