"""HTTP serving.

    scenefit serve-teacher --model runs/demo/model --port 8000     # OpenAI chat-completions
    scenefit serve --demo                                            # the students + web page

- :mod:`.openai_server` — a small OpenAI-compatible ``/v1/chat/completions`` and
  ``/v1/models`` router around any model-runner callable, plus helpers to run an app on
  loopback (a pre-bound socket, so port 0 works and the real port is known).
- :mod:`.app` — the student server: ``POST /v1/classify`` (JSON or multipart), ``/v1/models``,
  ``/v1/metrics``, the web page at ``/`` (files in ``static/``) and the OpenAI chat route
  dispatched to a student adapter by model name.
- :mod:`.streaming` — streamed chat answers (server-sent events) and the stopping criterion
  that ends a request's generation when its client leaves or it times out.
- :mod:`.batching` — the micro-batcher merging concurrent requests into predictor calls.
- :mod:`.security` — bearer auth, body/image caps, decoded pixels in flight, concurrency cap
  (429, counted once the body is read), body-read timeout (408), timeouts (504).
- :mod:`.config` — ``ServeConfig``, the ``serve`` config section.
"""
