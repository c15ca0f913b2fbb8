"""A pip user's path, proved from the built wheel: `scenefit init`, `scenefit run` on photographs
with an OpenAI-compatible teacher over loopback, then `status`, `predict` and `serve` from other
folders — nothing of the clone in reach.

    .venv/bin/python -m pytest tests/e2e/test_wheel_own_data.py -q

How the wheel is installed without a network: ``pip wheel --no-deps --no-build-isolation`` builds
it from a copy of the sources (the clone stays clean); ``python -m venv --without-pip`` makes a
fresh environment on the same base interpreter, and the dev environment's pip installs the wheel
into it (``pip --python ENV/bin/python install --no-index --no-deps``) — scenefit's own files,
metadata and console script, nothing else. The dependencies (torch, transformers, …) are then
reused from the dev environment by one ``.pth`` line naming its site-packages: a path line adds
that folder to ``sys.path`` *after* the fresh environment's own site-packages (so the installed
scenefit wins), and ``.pth`` files inside it are not processed, so the dev environment's editable
scenefit never loads. The test checks that ``import scenefit`` comes from the wheel.

The teacher: ``scenefit serve-teacher`` serves a tiny random Qwen2.5-VL (built by the wheel's own
``scenefit tiny-model``) over the OpenAI protocol on 127.0.0.1, and annotate asks it about every
photograph — real requests, real images, real answers stored. A random model writes no labels,
so its answers are stored as unparseable; to give the later stages something to learn from, the
test then imports one well-formed answer per sample as a second teacher ("reference", as a user
imports published answers with ``scenefit import-answers``) and the run's consensus takes that
teacher's labels (``--set consensus.rule=designated``; the served teacher must still have
answered every sample). The steps and sizes of the paper's recipe are reduced with ``--set``.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import threading
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from scenefit.pipeline.serve_check import stop_server
from support.servers import openai_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]  # a wheel, a teacher, a whole run
pytest.importorskip("fastapi")  # serve and serve-teacher need the `serve` extra (part of `dev`)

REPO = Path(__file__).resolve().parents[2]
#: (width, height) of the photographs: one of 12 megapixels, portrait and landscape, small and large.
SIZES = [(4000, 3000), (1600, 1200), (1200, 1600), (1024, 683), (800, 800), (640, 480)]
OBJECTS = ["cow", "kettle", "zebra", "bicycle"]


# ------------------------------------------------------------------------------- the photographs

def photograph(path: Path, size: tuple[int, int], seed: int) -> list[tuple[int, int, int, int]]:
    """A JPEG that looks like a photo, not a drawing of the synthetic world: a sky and a ground
    gradient, soft blobs and shapes at a quarter of the size, scaled up (smooth like optics) with
    sensor-like noise on top. Returns a few boxes around its shapes."""
    w, h = size
    rng = np.random.default_rng(seed)
    sw, sh = max(64, w // 4), max(64, h // 4)
    y = np.linspace(0, 1, sh)[:, None, None]
    horizon = rng.uniform(0.35, 0.65)
    sky = np.array([rng.uniform(90, 160), rng.uniform(140, 200), rng.uniform(200, 250)])
    ground = np.array([rng.uniform(60, 140), rng.uniform(80, 150), rng.uniform(30, 90)])
    img = np.where(y < horizon, sky * (0.7 + 0.3 * y / horizon), ground * (1.1 - 0.4 * (y - horizon)))
    img = np.broadcast_to(img, (sh, sw, 3)).copy()
    small = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(small)
    boxes = []
    for k in range(6):
        cx, cy = rng.uniform(0.1, 0.9) * sw, rng.uniform(0.3, 0.9) * sh
        rx, ry = rng.uniform(0.04, 0.12) * sw, rng.uniform(0.04, 0.12) * sh
        color = tuple(int(c) for c in rng.integers(20, 235, 3))
        (draw.ellipse if k % 2 else draw.rectangle)((cx - rx, cy - ry, cx + rx, cy + ry), fill=color)
        boxes.append((int((cx - rx) * w / sw), int((cy - ry) * h / sh), int((cx + rx) * w / sw), int((cy + ry) * h / sh)))
    small = small.filter(ImageFilter.GaussianBlur(1.5))
    big = np.asarray(small.resize((w, h), Image.BICUBIC), dtype=np.int16)
    big = big + rng.integers(-12, 13, size=(h, w, 1), dtype=np.int16)  # grain
    Image.fromarray(big.clip(0, 255).astype(np.uint8)).save(path, quality=88)
    return [(max(0, x0), max(0, y0), min(w - 1, x1), min(h - 1, y1)) for x0, y0, x1, y1 in boxes]


def teacher_answer(out: bool) -> str:
    """A well-formed answer in the teachers' format (the 'reference' teacher's)."""
    label = "Out-of-context" if out else "In-context"
    why = "is unusual here" if out else "fits the scene"
    return (f"Analysis:\nLocation: The object {why}.\nCo-occurrence: The object {why}.\nSize: The object {why}.\n"
            f"Summary:\nLocation: {label}\nCo-occurrence: {label}\nSize: {label}\nFinal decision: {label}.")


# ------------------------------------------------------------------------------- the installed wheel

def build_wheel(tmp: Path) -> Path:
    src = tmp / "source"
    shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(dist), str(src)], check=True, timeout=600)
    (wheel,) = dist.glob("scenefit-*.whl")
    return wheel


def install(wheel: Path, env_dir: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=300)
    python = env_dir / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-deps", "-q",
                    str(wheel)], check=True, timeout=600)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "_dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir / "bin" / "scenefit"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(tmp)
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
    for cfg in ("demo", "paper", "own-data", "accelerate/multi_gpu_ddp", "accelerate/deepspeed_zero3"):
        assert f"scenefit/configs/{cfg}.yaml" in names
    exe = install(wheel, tmp / "env")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{exe.parent}{os.pathsep}{env['PATH']}", VIRTUAL_ENV=str(tmp / "env"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONUNBUFFERED="1")
    where = subprocess.run([str(exe.parent / "python"), "-c",
                            "import scenefit, importlib.metadata as m; print(scenefit.__file__, m.version('scenefit'))"],
                           capture_output=True, text=True, env=env, cwd=tmp, check=True).stdout
    assert where.startswith(str(tmp / "env")) and where.split()[1] == "0.1.0", where
    return exe, env


def sf(installed, *args: str, cwd: Path, timeout: float = 1500, columns: int | None = None) -> subprocess.CompletedProcess:
    """The installed `scenefit`; ``columns``: the width of its output to the pipe (80 is rich's without COLUMNS)."""
    exe, env = installed
    env = dict(env, COLUMNS=str(columns)) if columns else env
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------- the path

def test_from_pip_install_to_served_students_in_any_folder(installed, tmp_path):
    exe, env = installed
    elsewhere, another = tmp_path / "work", tmp_path / "another"
    elsewhere.mkdir()
    another.mkdir()
    tiny = tmp_path / "tiny-teacher"
    r = sf(installed, "tiny-model", str(tiny), cwd=elsewhere)
    assert r.returncode == 0, r.stderr

    with openai_server(tiny, "tiny-teacher", "--max-new-tokens", "16", "--max-batch", "8", exe=exe, env=env,
                       cwd=elsewhere) as base:
        r = sf(installed, "init", "proj", "--base-url", base, "--model", "tiny-teacher", cwd=elsewhere)
        assert r.returncode == 0, r.stderr
        proj = elsewhere / "proj"
        rows, answers, k = [], [], 0
        for i, size in enumerate(SIZES):
            name = f"photo-{i}.jpg"
            boxes = photograph(proj / "images" / name, size, seed=i)
            for j in range(2):  # two boxed objects per photograph: one in context, one out (the reference)
                x0, y0, x1, y1 = boxes[j]
                rows.append(f"p{i}-{j},images/{name},{OBJECTS[(i + j) % 4]},{x0},{y0},{x1},{y1},photo-{i}")
                answers.append({"id": f"p{i}-{j}", "response": teacher_answer(out=bool(k % 2))})
                k += 1
        (proj / "manifest.csv").write_text("id,image,object,x0,y0,x1,y1,group\n" + "\n".join(rows) + "\n")
        with Image.open(proj / "images" / "photo-0.jpg") as im:
            assert im.size == (4000, 3000) and im.format == "JPEG"

        sets = ["annotate.teachers.0.max_tokens=16", "annotate.teachers.0.max_pixels=50176",
                "annotate.teachers.0.concurrency=8", "consensus.rule=designated", "consensus.designated=reference",
                "split.fractions={train: 0.6, val: 0.2, test: 0.2}", f"train.base_model={tiny}",
                "train.lora.r=4", "train.lora.alpha=8", "train.max_steps=2", "train.eval_steps=1",
                "train.save_steps=1", "train.num_devices=1", "train.per_device_batch_size=2",
                "train.gradient_accumulation_steps=1", "train.effective_batch_size=2",
                "train.per_device_eval_batch_size=4", "train.eval_samples=4", "train.precision=fp32",
                "train.gradient_checkpointing=false", "train.dataloader_num_workers=0", "train.min_pixels=3136",
                "train.max_pixels=12544", "train.report_to=[]", "predict.device=cpu", "predict.dtype=fp32",
                "evaluate.predict.max_new_tokens=8", "evaluate.predict.batch_size=8"]
        first = sf(installed, "run", "--config", "proj/scenefit.yaml", "--out", "runs/mine", "--to", "annotate",
                   *[w for s in sets for w in ("--set", s)], cwd=elsewhere)
        assert first.returncode == 0, first.stderr
    run = elsewhere / "runs" / "mine"
    assert "stopped after annotate (--to)" in first.stderr
    assert f"{len(rows)} samples kept, 0 rejected" in first.stderr, first.stderr
    con = sqlite3.connect(f"file:{run / 'annotate' / 'annotations.sqlite'}?mode=ro", uri=True)
    served = con.execute("SELECT COUNT(*), COUNT(DISTINCT prompt_hash), MIN(prompt_hash) FROM annotations "
                         "WHERE teacher = 'teacher' AND status != 'failed'").fetchone()
    con.close()
    assert served[:2] == (len(rows), 1)  # the served teacher answered every photograph

    # published answers of a second teacher, under the same prompt, then the same run continues
    with open(elsewhere / "reference.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "response"])
        writer.writeheader()
        writer.writerows(answers)
    r = sf(installed, "import-answers", "reference.csv", "--teacher", "reference", "--db",
           str(run / "annotate" / "annotations.sqlite"), "--prompt-hash", served[2], cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    second = sf(installed, "run", "--out", "runs/mine", cwd=elsewhere, columns=80)
    assert second.returncode == 0, second.stderr
    assert "== result ==" in second.stderr and (run / "report" / "report.html").is_file()
    assert f"report: {run / 'report' / 'report.html'}  (metrics: " in second.stderr  # paths whole, to copy
    assert f"students: {run / 'students'}   (scenefit predict" in second.stderr
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert not metrics["synthetic"] and metrics["location"]["n"] > 0

    # status, predict and serve from yet another folder
    st = sf(installed, "status", str(run), "--json", cwd=another)
    assert st.returncode == 0, st.stderr
    out = json.loads(st.stdout)
    assert [s["stage"] for s in out["stages"]] == ["ingest", "annotate", "consensus", "split", "datasets", "train",
                                                   "evaluate"]
    assert all(s["status"] == "done" for s in out["stages"]) and "scenefit predict --students" in out["next"][1]
    assert "vs teacher labels" in out["stages"][-1]["line"]

    students = run / "students"
    photo = elsewhere / "proj" / "images" / "photo-1.jpg"
    pr = sf(installed, "predict", "--students", str(students), "--image", str(photo), "--object", "cow",
            "--box", "100,200,500,700", "--json", cwd=another)
    assert pr.returncode == 0, pr.stderr
    verdict = json.loads(pr.stdout)
    verdict = verdict[0] if isinstance(verdict, list) else verdict
    assert set(verdict["criteria"]) == {"location", "size", "co_occurrence"} and verdict["final"]

    token = "t0ken-for-this-test"
    proc = subprocess.Popen([str(exe), "serve", "--students", str(students), "--port", "0"], cwd=another,
                            env=dict(env, SCENEFIT_API_TOKEN=token), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=300)
        assert line and line[0].startswith("serving http://127.0.0.1:"), (line, proc.poll())
        url = line[0].split()[1]
        buf = io.BytesIO()
        Image.open(elsewhere / "proj" / "images" / "photo-3.jpg").save(buf, format="JPEG")
        body = {"image": base64.b64encode(buf.getvalue()).decode(), "object": "zebra", "box": [50, 60, 400, 500],
                "explain": False}
        resp = httpx.post(url + "/v1/classify", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=300)
        assert resp.status_code == 200, resp.text
        assert set(resp.json()["criteria"]) == {"location", "size", "co_occurrence"}
    finally:
        stop_server(proc)
