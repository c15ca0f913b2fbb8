"""Teachers: the large VLMs (or the synthetic world's personas) whose answers are distilled.

    scenefit annotate MANIFEST --db annotations.sqlite --config configs/demo.yaml

- :mod:`.config` — ``AnnotateConfig`` (YAML section ``annotate``) and ``TeacherConfig``
- :mod:`.base` — the teacher interface and the image a teacher sees
- :mod:`.openai_backend`, :mod:`.transformers_backend`, :mod:`.simulated_backend` — backends
- :mod:`.annotate` — the resumable run; :mod:`.import_answers` — answers from files
- :mod:`.label_probs` — the teacher's P(Out-of-context) at each label, from token log-probabilities
"""
