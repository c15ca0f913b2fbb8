"""The demo's last step: serve the trained students and classify one test sample over HTTP.

    scenefit run --config demo --out runs/demo       # run.serve_check: true in the demo config

``scenefit serve`` starts on 127.0.0.1 on a free port with a one-time bearer token; the first
test sample (RUN/split/test.parquet) is sent to ``POST /v1/classify`` as a user would send it,
the answer is written to RUN/serve/classify.json and the server is stopped. Its log goes to the
stage's log.
"""

from __future__ import annotations

import base64
import json
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

from scenefit.core.errors import ScenefitError
from scenefit.pipeline.run_folder import RunFolder

#: How long the server may take to load the students and listen.
START_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 300.0


class ServeCheckError(ScenefitError, RuntimeError):
    """The server did not come up or did not answer; the message says what happened."""


def first_test_sample(run: RunFolder) -> tuple[dict[str, Any], Path]:
    """The first row of the test split (else of the ingest manifest), its image path resolved."""
    import pyarrow.parquet as pq

    from scenefit.core.parquet_io import resolved_path

    table = next((p for p in (run.split / "test.parquet", run.ingest / "manifest.parquet") if p.is_file()), None)
    if table is None:
        raise ServeCheckError(f"no test split in {run.split} to take a sample from")
    row = pq.read_table(table).slice(0, 1).to_pylist()[0]
    row["image"] = resolved_path(row["image"], table.parent.resolve())  # stored relative to the table
    return row, table


def _start_server(run: RunFolder, token: str, log: IO[str]) -> tuple[subprocess.Popen, str]:
    from scenefit.pipeline.process import child_env, stage_command

    cmd = stage_command(["serve", "--students", str(run.students), "--port", "0", "--config", str(run.config_file)])
    env = dict(child_env(), SCENEFIT_API_TOKEN=token)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True, env=env)
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    line = first[0].strip() if first else ""
    if not line.startswith("serving http://127.0.0.1:"):
        stop_server(proc)
        raise ServeCheckError(f"the server did not start within {START_TIMEOUT_S:.0f} s (first line: {line!r}); "
                              "its log is above")
    return proc, line.split()[1].rstrip("/")


def stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops it; killed when it does not exit within 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def classify_one(run: RunFolder, log: IO[str]) -> dict[str, Any]:
    """Serve the students, classify the first test sample over HTTP, stop; the record written to
    RUN/serve/classify.json."""
    import httpx

    from scenefit.core.files import write_json

    row, table = first_test_sample(run)
    token = secrets.token_urlsafe(18)
    proc, url = _start_server(run, token, log)
    try:
        log.write(f"server up at {url}; POST /v1/classify with sample {row['id']}\n")
        log.flush()
        body = {"image": base64.b64encode(Path(row["image"]).read_bytes()).decode(), "object": row["object"],
                "box": row["box"], "boxed": bool(row.get("boxed")), "explain": True}
        t0 = time.monotonic()
        r = httpx.post(url + "/v1/classify", json=body, headers={"Authorization": f"Bearer {token}"},
                       timeout=REQUEST_TIMEOUT_S)
        if r.status_code != 200:
            raise ServeCheckError(f"POST /v1/classify answered {r.status_code}: {r.text[:500]}")
        answer = r.json()
    finally:
        stop_server(proc)
    sample = {"id": row["id"], "object": row["object"], "box": list(row["box"]), "table": str(table),
              "truth": {k[len("truth_"):]: v for k, v in row.items() if k.startswith("truth_") and v}}
    record = {"url": url, "seconds": round(time.monotonic() - t0, 3), "sample": sample, "response": answer}
    write_json(record, run.serve / "classify.json")
    log.write(json.dumps(record, indent=2, default=str) + "\n")
    return record


def verdict_lines(record: dict[str, Any]) -> list[str]:
    """The classify answer as the demo prints it: the sample, one line per criterion (and its
    explanation), the final decision, the synthetic notice."""
    s, out = record["sample"], record["response"]
    lines = ["the students on 127.0.0.1; one test image classified over HTTP:",
             f"sample {s['id']}: object {s['object']!r}, box {s['box']}"]
    for name, v in (out.get("criteria") or {}).items():
        truth = (s.get("truth") or {}).get(name)
        lines.append(f"  {name:<14} {v['label']:<15} p={v['probability']:.3f}" + (f"  (truth: {truth})" if truth else ""))
        if v.get("analysis"):
            lines.append(f"  {'':<14} {v['analysis']}")
    lines.append(f"  {'final':<14} {out.get('final')}")
    if out.get("notice"):
        lines.append(out["notice"])
    return lines


def run_check(run: RunFolder, log: IO[str]) -> int:
    """The stage as the runner calls it: 0 when the sample was classified, 1 with the reason in the log."""
    import httpx

    try:
        classify_one(run, log)
        return 0
    except (ServeCheckError, httpx.HTTPError, OSError, ValueError, KeyError) as e:
        log.write(f"error: {type(e).__name__}: {e}\n")
        return 1
