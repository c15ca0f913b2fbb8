// scenefit web page logic (served at /static/app.js): load an image, drag a box on it,
// send it with the object name to POST /v1/classify, show the three verdicts.
"use strict";

(function () {
  const MAX_W = 640, MAX_H = 480;          // the canvas shows the image scaled to fit this
  const CRITERIA = ["location", "size", "co_occurrence"];
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  const state = { file: null, image: null, scale: 1, box: null, drag: null };

  // The token is kept for this tab only (sessionStorage), never in the URL.
  const tokenInput = $("token-input");
  tokenInput.value = sessionStorage.getItem("scenefit-token") || "";
  tokenInput.addEventListener("change", () => sessionStorage.setItem("scenefit-token", tokenInput.value.trim()));

  fetch("/health").then((r) => r.json()).then((h) => {
    if (h.synthetic) {
      const n = $("notice");
      n.textContent = "These students were trained on the synthetic scene world (a test bed): their verdicts are not results on real data.";
      n.hidden = false;
    }
  }).catch(() => {});

  function draw() {
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (state.image) ctx.drawImage(state.image, 0, 0, canvas.width, canvas.height);
    const b = state.drag ? normalise(state.drag) : state.box && toCanvas(state.box);
    if (b) {
      ctx.strokeStyle = "#ff0000";
      ctx.lineWidth = 2;
      ctx.strokeRect(b.x0 + 1, b.y0 + 1, b.x1 - b.x0 - 2, b.y1 - b.y0 - 2);
    }
  }

  function normalise(d) {
    return { x0: Math.min(d.sx, d.ex), y0: Math.min(d.sy, d.ey), x1: Math.max(d.sx, d.ex), y1: Math.max(d.sy, d.ey) };
  }
  function toCanvas(b) {
    const s = state.scale;
    return { x0: b[0] * s, y0: b[1] * s, x1: b[2] * s, y1: b[3] * s };
  }
  // Canvas pixels -> image pixels, clamped to the image (the server refuses boxes outside it).
  function toImage(b) {
    const s = state.scale, W = state.image.naturalWidth, H = state.image.naturalHeight;
    const clamp = (v, hi) => Math.max(0, Math.min(hi, Math.round(v / s)));
    return [clamp(b.x0, W), clamp(b.y0, H), clamp(b.x1, W), clamp(b.y1, H)];
  }
  function point(ev) {
    const r = canvas.getBoundingClientRect();
    const x = (ev.clientX - r.left) * canvas.width / r.width;
    const y = (ev.clientY - r.top) * canvas.height / r.height;
    return { x: Math.max(0, Math.min(canvas.width, x)), y: Math.max(0, Math.min(canvas.height, y)) };
  }
  function showBox() {
    $("box-text").textContent = state.box ? "Box: " + state.box.join(", ") + " (image pixels)." : "No box yet.";
  }

  $("image-input").addEventListener("change", (ev) => {
    const file = ev.target.files && ev.target.files[0];
    state.file = file || null;
    state.box = null;
    showBox();
    if (!file) return;
    const img = new Image();
    img.onload = () => {
      state.image = img;
      state.scale = Math.min(1, MAX_W / img.naturalWidth, MAX_H / img.naturalHeight);
      // Small images are shown enlarged so a box can still be drawn precisely.
      if (img.naturalWidth * state.scale < 320) state.scale = 320 / img.naturalWidth;
      canvas.width = Math.round(img.naturalWidth * state.scale);
      canvas.height = Math.round(img.naturalHeight * state.scale);
      draw();
    };
    img.onerror = () => showError("The file could not be shown as an image.");
    img.src = URL.createObjectURL(file);
  });

  canvas.addEventListener("pointerdown", (ev) => {
    if (!state.image) return;
    const p = point(ev);
    state.drag = { sx: p.x, sy: p.y, ex: p.x, ey: p.y };
    canvas.setPointerCapture && canvas.setPointerCapture(ev.pointerId);
    ev.preventDefault();
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!state.drag) return;
    const p = point(ev);
    state.drag.ex = p.x;
    state.drag.ey = p.y;
    draw();
  });
  function endDrag(ev) {
    if (!state.drag) return;
    const p = point(ev);
    state.drag.ex = p.x;
    state.drag.ey = p.y;
    const box = toImage(normalise(state.drag));
    state.drag = null;
    state.box = (box[2] - box[0] >= 2 && box[3] - box[1] >= 2) ? box : null;  // a click is not a box
    showBox();
    draw();
  }
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", () => { state.drag = null; draw(); });
  $("clear-box").addEventListener("click", () => { state.box = null; showBox(); draw(); });

  function showError(message) {
    const e = $("error");
    e.textContent = message;
    e.hidden = !message;
  }

  function render(result) {
    const final = $("final");
    final.textContent = result.final || "undecided";
    final.className = cssClass(result.final);
    for (const c of CRITERIA) {
      const card = $("verdict-" + c), v = (result.criteria || {})[c];
      card.hidden = !v;
      if (!v) continue;
      const label = card.querySelector(".label");
      label.textContent = v.label || "unreadable";
      label.className = "label " + cssClass(v.label);
      card.querySelector(".probability").textContent =
        typeof v.probability === "number" ? "(p = " + v.probability.toFixed(3) + ")" : "";
      card.querySelector(".analysis").textContent = analysisText(v);
    }
    $("results").hidden = false;
  }
  // The explanation, or why there is none (analysis_status), and whether the text agrees with the decision.
  function analysisText(v) {
    const status = v.analysis_status;
    let text = v.analysis || (status && status !== "ok" && status !== "not_requested"
      ? "(the explanation could not be read: " + status + ")" : "");
    if (v.text_agrees === false) {
      text += " [the explanation's own label: " + (v.text_label || "none") + "; the decision is the model's logits']";
    }
    return text;
  }
  function cssClass(label) {
    return label === "In-context" ? "in-context" : label === "Out-of-context" ? "out-of-context" : "";
  }

  $("classify-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError("");
    const object = $("object-input").value.trim();
    if (!state.file) return showError("Choose an image first.");
    if (!object) return showError("Type the name of the boxed object.");
    const form = new FormData();
    form.append("image", state.file, state.file.name);
    form.append("object", object);
    if (state.box) form.append("box", state.box.join(","));
    form.append("explain", $("explain-input").checked ? "true" : "false");
    const headers = {};
    const token = tokenInput.value.trim();
    if (token) headers["Authorization"] = "Bearer " + token;
    const button = $("submit");
    button.disabled = true;
    $("status").textContent = state.box ? "Classifying…" : "Classifying (no box drawn: the image must already show its red box)…";
    try {
      const response = await fetch("/v1/classify", { method: "POST", body: form, headers });
      let body = null;
      try { body = await response.json(); } catch (e) { body = null; }
      if (!response.ok) {
        const err = body && body.error;
        showError("Error " + response.status + (err ? " (" + err.code + "): " + err.message : ""));
        $("status").textContent = "";
        return;
      }
      render(body);
      $("status").textContent = "Done.";
    } catch (e) {
      showError("The server could not be reached: " + e);
      $("status").textContent = "";
    } finally {
      button.disabled = false;
    }
  });
})();
