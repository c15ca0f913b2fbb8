"""The tiny-model cache: built once, reused byte for byte, keyed, verified, atomic.

    .venv/bin/python -m pytest tests/unit/test_tiny_cache.py -q
"""

from __future__ import annotations

import json
import shutil

import pytest

from scenefit.testbed import tiny_cache
from scenefit.testbed.tiny_cache import ENTRY_FILE, cache_key, cached_tiny_model, key_inputs
from scenefit.testbed.tiny_model import TinyModelConfig

CFG = TinyModelConfig(seed=5, num_layers=1, vocab_size=300)


def _tree(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _entry(cache):
    (entry,) = [p for p in (cache / "tiny-models").iterdir() if not p.name.startswith(".")]
    return entry


def test_built_once_then_reused_byte_for_byte(tmp_path):
    cache = tmp_path / "cache"
    a, how_a = cached_tiny_model(tmp_path / "a", CFG, cache_dir=cache)
    b, how_b = cached_tiny_model(tmp_path / "b", CFG, cache_dir=cache)
    assert (how_a, how_b) == ("built", "reused")
    assert _tree(a) == _tree(b) and "model.safetensors" in _tree(b) and "scenefit_tiny.json" in _tree(b)
    record = json.loads((_entry(cache) / ENTRY_FILE).read_text())
    assert set(record["files"]) == set(_tree(a))  # every file has its checksum
    assert record["inputs"]["config"]["seed"] == 5 and record["inputs"]["cpu_capability"]


def test_the_key_covers_config_code_and_machine(monkeypatch):
    inputs = key_inputs(CFG)
    assert cache_key(inputs) == cache_key(key_inputs(CFG))
    assert cache_key(key_inputs(CFG.model_copy(update={"seed": 6}))) != cache_key(inputs)
    assert cache_key({**inputs, "cpu_capability": "AVX2" if inputs["cpu_capability"] != "AVX2" else "AVX512"}) != cache_key(inputs)
    monkeypatch.setattr(tiny_cache, "code_digest", lambda: "another version of the code")
    assert cache_key(key_inputs(CFG)) != cache_key(inputs)


@pytest.mark.parametrize("damage", ["flip a byte", "drop the last file", "truncate the record"])
def test_a_damaged_entry_is_dropped_and_rebuilt(tmp_path, damage):
    cache = tmp_path / "cache"
    good, _ = cached_tiny_model(tmp_path / "good", CFG, cache_dir=cache)
    entry = _entry(cache)
    if damage == "flip a byte":
        w = entry / "model.safetensors"
        data = bytearray(w.read_bytes())
        data[len(data) // 2] ^= 0xFF
        w.write_bytes(bytes(data))
    elif damage == "drop the last file":
        (entry / "scenefit_tiny.json").unlink()
    else:
        (entry / ENTRY_FILE).write_text('{"key": ')
    heard = []
    again, how = cached_tiny_model(tmp_path / "again", CFG, cache_dir=cache, log=heard.append)
    assert how == "built" and heard and "dropped" in heard[0]
    assert _tree(again) == _tree(good)
    assert tiny_cache.verify_entry(_entry(cache), entry.name) is None


def test_a_killed_build_leaves_no_entry(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    from scenefit.testbed import tiny_model  # cached_tiny_model imports the builder from here when it runs

    def killed(out, cfg, progress=False):
        (out / "model.safetensors").write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny_model, "build_tiny_model", killed)
    with pytest.raises(KeyboardInterrupt):
        cached_tiny_model(tmp_path / "out", CFG, cache_dir=cache)
    assert not [p for p in (cache / "tiny-models").iterdir()]  # no entry, no leftover staging folder
    assert not (tmp_path / "out" / "scenefit_tiny.json").exists()
    monkeypatch.undo()
    _, how = cached_tiny_model(tmp_path / "out", CFG, cache_dir=cache)
    assert how == "built" and (tmp_path / "out" / "scenefit_tiny.json").is_file()


def test_a_racing_builder_keeps_the_first_entry(tmp_path, monkeypatch):
    """Two builders of one key: the second's rename finds the first's entry and uses it."""
    cache = tmp_path / "cache"
    first, _ = cached_tiny_model(tmp_path / "first", CFG, cache_dir=cache)
    entry = _entry(cache)
    spare = tmp_path / "spare"
    shutil.copytree(entry, spare)
    shutil.rmtree(entry)

    from scenefit.testbed import tiny_model

    real = tiny_model.build_tiny_model

    def slow_builder(out, cfg, progress=False):
        shutil.copytree(spare, entry)  # the other builder finishes first
        return real(out, cfg, progress=progress)

    monkeypatch.setattr(tiny_model, "build_tiny_model", slow_builder)
    second, how = cached_tiny_model(tmp_path / "second", CFG, cache_dir=cache)
    assert how == "built" and _tree(second) == _tree(first)
    assert [p.name for p in (cache / "tiny-models").iterdir()] == [entry.name]  # staging folder gone


def test_an_unwritable_cache_builds_straight_into_the_folder(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    heard = []
    out, how = cached_tiny_model(tmp_path / "out", CFG, cache_dir=blocker, log=heard.append)
    assert how == "uncached" and (out / "scenefit_tiny.json").is_file() and "not writable" in heard[0]
