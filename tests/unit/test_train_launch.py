"""How `scenefit train` reads its launcher without starting one: the requested process count from
launcher flags, the warning when more were asked for than started, the named sharding fallback,
and model-card metadata that huggingface_hub loads. The two-process runs themselves:
tests/e2e/test_train_multiprocess.py.

    .venv/bin/python -m pytest tests/unit/test_train_launch.py -q
"""

from __future__ import annotations

from scenefit.train.launch import requested_processes, sharding_fallback_warning, single_process_warning
from support.train_data import small_config


def test_requested_processes_reads_launcher_flags():
    assert requested_processes(["accelerate", "launch", "--cpu", "--num_processes", "2", "x"]) == 2
    assert requested_processes(["torchrun", "--nproc_per_node=4", "x"]) == 4
    assert requested_processes(["torchrun", "--nproc-per-node", "3"]) == 3
    assert requested_processes(["python", "-m", "scenefit", "train"]) is None
    assert requested_processes(["accelerate", "launch", "--num_processes"]) is None

def test_single_process_warning_only_when_asked_for_more(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    asked = ["accelerate", "launch", "--num_processes", "2"]
    assert single_process_warning(world=2, argv=asked) is None
    assert single_process_warning(world=1, argv=["accelerate", "launch", "--num_processes", "1"]) is None
    assert single_process_warning(world=1, argv=["scenefit", "train"]) is None
    assert "2 processes" in single_process_warning(world=1, argv=asked)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    assert "--cpu" in single_process_warning(world=1, argv=asked)

def test_sharding_fallback_is_named(monkeypatch):
    from accelerate.utils import DistributedType

    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert "FSDP" in sharding_fallback_warning(DistributedType.MULTI_CPU)
    assert sharding_fallback_warning(DistributedType.FSDP) is None
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert sharding_fallback_warning(DistributedType.MULTI_CPU) is None

def test_model_card_metadata_loads_with_huggingface_hub(tmp_path):
    """PEFT loads an existing README.md when it saves an adapter: the card must be valid hub metadata."""
    from huggingface_hub import ModelCard

    from scenefit.train.card import model_card
    from scenefit.train.trainer import student_info

    cfg = small_config()
    from scenefit.student.chat import StudentChat

    info = student_info(cfg, "location", "base-model", True, ["model.language_model.layers.0.self_attn.q_proj"],
                        StudentChat.packaged())
    metrics = {"global_step": 6, "epoch": 1.0, "train_rows": 32, "effective_batch_size": 4,
               "best_metric": {"name": "eval_loss", "value": 1.0},
               "test": {"n": 8, "student": {"accuracy": 0.75, "accuracy_vs_truth": 0.5}, "base": {"accuracy": 0.5}}}
    card = ModelCard(model_card(info, metrics, cfg))
    results = card.data.eval_results
    assert [r.metric_value for r in results] == [0.75, 0.5]
    assert all(r.dataset_split == "test" for r in results)

