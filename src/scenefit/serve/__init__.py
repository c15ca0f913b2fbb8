"""HTTP serving.

    scenefit serve --openai --model runs/demo/model --port 8000     # OpenAI chat-completions

- :mod:`.openai_server` — a small OpenAI-compatible ``/v1/chat/completions`` and
  ``/v1/models`` router around any model-runner callable, plus helpers to run an app on
  loopback (a pre-bound socket, so port 0 works and the real port is known).
"""
