"""`scenefit serve` from the command line and as a client meets it — serve --demo's defaults, a
web page with no CDN, the token check, a refusal, the deprecated --openai alias, the settings it
reads — each test naming the page and section that state it; the server checks use the fake
predictor of tests/support/serve.py.

    .venv/bin/python -m pytest tests/unit/test_serve_cli.py -q
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from scenefit.cli import app
from scenefit.core.config import packaged_configs_dir

runner = CliRunner()

pytestmark = pytest.mark.usefixtures("torch_one_thread")



def test_serve_demo_defaults_to_demo_students_on_loopback_8000(tmp_path, monkeypatch, repo_root):
    """docs/reference.md, "Serving the students": `scenefit serve --demo` serves the students `make demo`
    trained ($DEMO_DIR/students) at http://127.0.0.1:8000/, with the demo config's limits."""
    pytest.importorskip("fastapi")
    import scenefit.serve.app as serve_app

    seen = {}

    def fake_serve_students(students, predict_cfg, cfg, token, on_ready=None):
        seen.update(students=Path(students), host=cfg.host, port=cfg.port, token=token)
        on_ready(f"http://{cfg.host}:{cfg.port}")

    monkeypatch.setattr(serve_app, "serve_students", fake_serve_students)
    monkeypatch.setenv("DEMO_DIR", str(tmp_path / "demo"))
    monkeypatch.delenv("SCENEFIT_API_TOKEN", raising=False)
    monkeypatch.chdir(tmp_path)  # any folder: the demo config comes from the package
    (tmp_path / "demo" / "students").mkdir(parents=True)
    r = runner.invoke(app, ["serve", "--demo"])
    assert r.exit_code == 0, r.output
    assert seen == {"students": tmp_path / "demo" / "students", "host": "127.0.0.1", "port": 8000, "token": None}
    assert "serving http://127.0.0.1:8000" in r.stdout
    assert str(packaged_configs_dir() / "demo.yaml") in r.stderr  # no run.yaml in DEMO_DIR: the packaged config
    (tmp_path / "demo" / "run.yaml").write_text("serve: {port: 8123}\n")  # what `scenefit run` recorded wins
    r = runner.invoke(app, ["serve", "--demo"])
    assert r.exit_code == 0, r.output
    assert seen["port"] == 8123 and str(tmp_path / "demo" / "run.yaml") in r.stderr


@pytest.fixture(scope="module")
def token_server():
    pytest.importorskip("fastapi")
    import httpx

    from scenefit.serve.app import create_app
    from scenefit.serve.config import ServeConfig
    from scenefit.serve.openai_server import serve_in_thread
    from support.serve import TOKEN, FakePredictor

    with serve_in_thread(create_app(FakePredictor(), ServeConfig(max_wait_ms=5), token=TOKEN)) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client, TOKEN


def test_web_page_needs_no_cdn(token_server):
    """docs/reference.md, "Serving the students": the page at / needs no CDN — every file it loads comes
    from this server, and none of them names another host."""
    client, _ = token_server
    page = client.get("/")
    assert page.status_code == 200
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assert refs, "the page loads no files?"
    texts = [page.text]
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
        r = client.get(ref)
        assert r.status_code == 200, ref
        texts.append(r.text)
    for text in texts:
        assert not re.search(r"https?://", text), re.search(r".{0,40}https?://.{0,40}", text).group(0)
        for target in re.findall(r"""(?:url\(|@import\s+|fetch\(|import\s*\()\s*["']?([^"')\s]+)""", text):
            assert target.startswith(("/", "data:")) and not target.startswith("//"), target


def test_bearer_token_is_compared_in_constant_time(token_server, monkeypatch):
    """docs/reference.md, "Serving the students": the bearer token is compared in constant time
    (hmac.compare_digest decides, for a wrong and for the right token)."""
    import hmac

    client, token = token_server
    real = hmac.compare_digest
    calls = []

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert client.get("/v1/models", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    assert (b"wrong-token", token.encode()) in calls
    calls.clear()
    assert client.get("/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert (token.encode(), token.encode()) in calls


def test_serve_refuses_a_corrupt_image_with_422(token_server, tmp_path):
    """docs/reference.md, "Serving the students": an image whose data cannot be decoded is a 422 `corrupt`
    refusal, as JSON and as multipart."""
    from support.images import write_bad_images

    client, token = token_server
    data = write_bad_images(tmp_path)["corrupt"][0].read_bytes()
    headers = {"Authorization": f"Bearer {token}"}
    responses = [
        client.post("/v1/classify", headers=headers,
                    json={"image": base64.b64encode(data).decode(), "object": "dog", "box": [1, 1, 20, 20]}),
        client.post("/v1/classify", headers=headers, files={"image": ("c.png", data, "image/png")},
                    data={"object": "dog", "box": "1,1,20,20"}),
    ]
    for r in responses:
        assert r.status_code == 422, (r.status_code, r.text)
        assert r.json()["error"]["code"] == "corrupt", r.json()


@pytest.mark.parametrize("flags", [["--students", "x"], ["--api-token", "t"], ["--max-concurrency", "4"],
                                   ["--max-wait-ms", "5"], ["--request-timeout", "9"], ["--max-body-bytes", "100"],
                                   ["--max-image-pixels", "100"], ["--config", "demo"]])
def test_serve_openai_refuses_the_students_flags(flags, tmp_path):
    """docs/reference.md, "Asking the teachers": `serve --openai` (the deprecated alias) refuses the students' flags (--api-token, --students,
    the request limits, --config) instead of ignoring them."""
    pytest.importorskip("fastapi")
    (tmp_path / "m").mkdir()
    r = runner.invoke(app, ["serve", "--openai", "--model", str(tmp_path / "m"), *flags])
    assert r.exit_code == 2, r.output
    assert flags[0] in r.stderr and "--openai" in r.stderr


def test_attn_implementation_reaches_predict_and_serve(random_head_students, tmp_path, monkeypatch):
    """docs/performance.md (the vision tower's attention) and docs/reference.md, "Serving the
    students": `attn_implementation` in the `predict` section, which `serve` loads its students with, or `scenefit predict --set attn_implementation=…`, picks the attention kernel of the
    loaded model."""
    pytest.importorskip("fastapi")
    import scenefit.serve.app as serve_app
    from scenefit.predict import Predictor

    loaded = []
    real = Predictor.from_students.__func__

    def spy(cls, *args, **kwargs):
        loaded.append(real(cls, *args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(Predictor, "from_students", classmethod(spy))
    Image.new("RGB", (64, 48), (60, 140, 60)).save(tmp_path / "ok.png")
    r = runner.invoke(app, ["predict", "--students", str(random_head_students), "--image", str(tmp_path / "ok.png"),
                            "--object", "cow", "--boxed", "--set", "attn_implementation=eager"])
    assert r.exit_code == 0, r.output
    assert loaded[-1].model.config._attn_implementation == "eager"

    seen = {}
    monkeypatch.setattr(serve_app, "serve_students",
                        lambda students, predict_cfg, cfg, token, on_ready=None: seen.update(attn=predict_cfg.attn_implementation))
    cfg = tmp_path / "c.yaml"
    cfg.write_text("predict:\n  attn_implementation: eager\n")
    r = runner.invoke(app, ["serve", "--students", str(random_head_students), "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert seen == {"attn": "eager"}
