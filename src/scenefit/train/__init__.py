"""Student training: LoRA SFT of one Qwen2.5-VL student per criterion (``scenefit train``).

Modules: :mod:`.config` (section ``train``), :mod:`.data` (rows -> inputs, answer-only labels),
:mod:`.lora` (language-model-only targets), :mod:`.decision` (fast decision scoring),
:mod:`.trainer` (the loop and its outputs), :mod:`.card` (model card).
"""
