"""Teachers: the large VLMs (or the synthetic world's personas) whose answers are distilled.

    scenefit annotate MANIFEST --db annotations.sqlite --config demo

- :mod:`.config` — ``AnnotateConfig`` (YAML section ``annotate``) and ``TeacherConfig``
- :mod:`.base` — the teacher interface and the image a teacher sees
- :mod:`.registry` — backend name -> class (the package's entry points, or ``register_backend``)
- :mod:`.openai_backend`, :mod:`.transformers_backend`, :mod:`.ray_backend` (``ray_http``,
  ``ray_vllm``) — backends (the synthetic world's ``simulated`` backend lives in the test bed:
  :mod:`scenefit.testbed.simulated_backend`, registered through the same entry points)
- :mod:`.annotate` — the resumable run; :mod:`.import_answers` — answers from files
- :mod:`.store` — the annotation store (SQLite); :mod:`.parse` — the teacher-answer parser
- :mod:`.label_probs` — the teacher's P(Out-of-context) at each label, from token log-probabilities
"""
