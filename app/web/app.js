// cinstyle's page: every request goes to this server's own API (same origin); nothing else is fetched.

const $ = (id) => document.getElementById(id);

const PREVIEW_SIDE = 256; // the live preview while sliders move
const PREVIEW_DELAY_MS = 250; // debounce before a preview request
const FULL_DELAY_MS = 700; // quiet time after a preview before the full-size request
const POLL_MS = 500; // job progress polling
const OUTPUT_SIDES = [256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192];

const state = {
  photo: null, // File
  styles: [], // from GET /v1/styles
  weights: new Map(), // style name -> weight (0..1), in the order chosen
  supportsStyleScale: false,
  previewTimer: 0,
  fullTimer: 0,
  inflight: null, // AbortController of the running fast-path request
  generation: 0, // bumps on every change; answers to older generations are dropped
  resultUrl: null,
  slowJob: null,
  textureJob: null,
  textureMaxSide: null,
  learnJob: null,
};

// -- errors ------------------------------------------------------------------------------------------------------

function showError(id, message) {
  const el = $(id);
  el.textContent = message || "";
  el.hidden = !message;
}

// The API's JSON error message ({"error": {"code", "message"}}), with the wait a 429/503 asks for.
async function errorMessage(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) {
    /* not JSON: keep the status line */
  }
  const retry = response.headers.get("Retry-After");
  if ((response.status === 429 || response.status === 503) && retry) {
    message += ` (the server is busy: try again in ${retry} s)`;
  }
  return message;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(url, options = {}) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "the server cannot be reached; is it still running?");
  }
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  return response;
}

// Which API error goes next to which control: the message names the parameter it is about.
function errorTarget(message, fallback) {
  const text = message.toLowerCase();
  if (/\bstyle(s)?\b|weight|blend/.test(text) && !/style_image|painting/.test(text)) return "weights-error";
  if (/strength|max_side|format|style_scale|preserve/.test(text)) return "settings-error";
  return fallback;
}

// -- server status -----------------------------------------------------------------------------------------------

async function waitUntilReady() {
  const status = $("server-status");
  for (;;) {
    try {
      const response = await fetch("/readyz");
      if (response.ok) {
        const ready = await response.json();
        status.textContent = `Ready: ${ready.styles} styles on ${ready.device} (${ready.backend}).`;
        status.classList.remove("down");
        return;
      }
      status.textContent = `Not ready yet: ${await errorMessage(response)}`;
    } catch (_) {
      status.textContent = "The server cannot be reached; retrying…";
    }
    status.classList.add("down");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

// What this server's API accepts, from its own schema: the largest output side and whether stroke size exists.
async function readCapabilities() {
  const maxSide = $("max-side");
  let largest = 1024;
  try {
    const schema = await (await api("/openapi.json")).json();
    const params = schema.paths["/v1/stylize"].post.parameters || [];
    const byName = Object.fromEntries(params.map((p) => [p.name, p]));
    if (byName.max_side && byName.max_side.schema && byName.max_side.schema.maximum) {
      largest = byName.max_side.schema.maximum;
    }
    state.supportsStyleScale = "style_scale" in byName;
    const texture = schema.paths["/v1/textures"];
    const widthParam = texture && (texture.post.parameters || []).find((p) => p.name === "width");
    state.textureMaxSide = widthParam && widthParam.schema ? widthParam.schema.maximum : null;
  } catch (_) {
    /* the defaults above */
  }
  $("style-scale-field").hidden = !state.supportsStyleScale;
  $("texture-panel").hidden = !state.textureMaxSide;
  if (state.textureMaxSide) {
    const sides = [64, 128, 256, 384, 512, 768, 1024].filter((s) => s < state.textureMaxSide);
    for (const side of sides.concat([state.textureMaxSide])) {
      $("texture-size").append(new Option(`${side} × ${side} px`, String(side)));
    }
    $("texture-size").value = String(Math.min(256, state.textureMaxSide));
  }
  const sides = OUTPUT_SIDES.filter((side) => side < largest).concat([largest]);
  for (const side of sides) {
    const option = new Option(`${side} px (longer side)`, String(side));
    maxSide.append(option);
  }
  maxSide.value = String(Math.min(1024, largest));
  if (!sides.includes(Number(maxSide.value))) maxSide.value = String(largest);
}

// -- photo -------------------------------------------------------------------------------------------------------

function setPhoto(file) {
  if (!file) return;
  state.photo = file;
  const preview = $("photo-preview");
  if (preview.dataset.url) URL.revokeObjectURL(preview.dataset.url);
  preview.dataset.url = URL.createObjectURL(file);
  preview.src = preview.dataset.url;
  preview.alt = `Your photo: ${file.name}`;
  preview.hidden = false;
  $("photo-info").textContent = `${file.name} · ${(file.size / 1024).toFixed(0)} KB`;
  showError("photo-error", "");
  schedule();
}

function setUpPhoto() {
  const input = $("photo-input");
  const zone = $("drop-zone");
  input.addEventListener("change", () => setPhoto(input.files[0]));
  preview().addEventListener("error", () => {
    // The browser cannot show it; the server may still read it (TIFF, ...), so only say so.
    preview().hidden = true;
    $("photo-info").textContent += " · (this browser cannot display it)";
  });
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    if (event.dataTransfer.files.length) setPhoto(event.dataTransfer.files[0]);
  });
  zone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      input.click();
    }
  });
  zone.tabIndex = 0;
}

function preview() {
  return $("photo-preview");
}

// -- gallery -----------------------------------------------------------------------------------------------------

async function loadStyles(highlight) {
  const gallery = $("gallery");
  gallery.setAttribute("aria-busy", "true");
  try {
    const body = await (await api("/v1/styles")).json();
    state.styles = body.styles;
    showError("styles-error", "");
  } catch (err) {
    showError("styles-error", `The styles could not be listed: ${err.message}`);
    return;
  } finally {
    gallery.setAttribute("aria-busy", "false");
  }
  const names = new Set(state.styles.map((s) => s.name));
  for (const name of [...state.weights.keys()]) if (!names.has(name)) state.weights.delete(name);
  gallery.replaceChildren(...state.styles.map(styleCard));
  renderWeights();
  loadPreviews(); // one at a time, so a page load never floods the server
  if (highlight) {
    const card = gallery.querySelector(`[data-style="${highlight}"]`);
    if (card) {
      card.scrollIntoView({ block: "nearest" });
      card.focus();
    }
  }
}

function pretty(name) {
  return name.replace(/[_-]+/g, " ");
}

function styleCard(style) {
  const card = document.createElement("button");
  card.type = "button";
  card.className = "style-card";
  card.dataset.style = style.name;
  card.setAttribute("aria-pressed", String(state.weights.has(style.name)));
  card.title = style.name;

  const pics = document.createElement("span");
  pics.className = "pics";
  if (style.painting_url) {
    const painting = document.createElement("img");
    painting.src = style.painting_url;
    painting.alt = `The painting: ${pretty(style.name)}`;
    painting.loading = "lazy";
    pics.append(painting);
  } else {
    const none = document.createElement("span");
    none.className = "placeholder";
    none.textContent = "no painting";
    pics.append(none);
  }
  const applied = document.createElement("img");
  applied.className = "style-preview";
  applied.alt = `A sample in the style ${pretty(style.name)}`;
  applied.dataset.src = style.preview_url;
  pics.append(applied);

  const name = document.createElement("span");
  name.className = "name";
  name.textContent = pretty(style.name);
  const badge = document.createElement("span");
  badge.className = `badge ${style.kind}`;
  badge.textContent = style.kind === "learned" ? "learned" : "built-in";
  card.append(pics, name, badge);
  card.addEventListener("click", () => toggleStyle(style.name));
  return card;
}

async function loadPreviews() {
  for (const img of document.querySelectorAll("#gallery img.style-preview[data-src]")) {
    const url = img.dataset.src;
    delete img.dataset.src;
    try {
      const blob = await (await api(url)).blob();
      img.src = URL.createObjectURL(blob);
    } catch (_) {
      img.alt = "(preview unavailable right now)";
    }
  }
}

function toggleStyle(name) {
  if (state.weights.has(name)) state.weights.delete(name);
  else state.weights.set(name, 1);
  for (const card of document.querySelectorAll("#gallery .style-card")) {
    card.setAttribute("aria-pressed", String(state.weights.has(card.dataset.style)));
  }
  renderWeights();
  schedule();
}

function renderWeights() {
  const box = $("weights");
  const rows = [];
  for (const [name, weight] of state.weights) {
    const id = `weight-${name}`;
    const row = document.createElement("div");
    row.className = "field";
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = pretty(name);
    const value = document.createElement("output");
    value.htmlFor = id;
    value.textContent = weight.toFixed(2);
    label.append(value);
    const slider = document.createElement("input");
    slider.type = "range";
    slider.id = id;
    slider.className = "weight";
    slider.dataset.style = name;
    slider.min = "0";
    slider.max = "1";
    slider.step = "0.05";
    slider.value = String(weight);
    slider.addEventListener("input", () => {
      state.weights.set(name, Number(slider.value));
      value.textContent = Number(slider.value).toFixed(2);
      schedule();
    });
    row.append(label, slider);
    rows.push(row);
  }
  if (!rows.length) {
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.id = "no-style-hint";
    hint.textContent = "No style chosen yet.";
    rows.push(hint);
  }
  box.replaceChildren(...rows);
}

// -- the fast path: a debounced low-resolution preview, then the full-size result ---------------------------------

function styleSpec() {
  return [...state.weights].map(([name, weight]) => `${name}:${weight}`).join(",");
}

function styleScale() {
  return 2 ** Number($("style-scale").value);
}

function commonParams(maxSide, format) {
  const params = new URLSearchParams({
    strength: $("strength").value,
    preserve_color: String($("preserve-color").checked),
    max_side: String(maxSide),
    format,
  });
  if (state.supportsStyleScale) params.set("style_scale", String(styleScale()));
  return params;
}

function schedule() {
  state.generation += 1;
  clearTimeout(state.previewTimer);
  clearTimeout(state.fullTimer);
  if (state.inflight) state.inflight.abort();
  if (!state.photo || state.weights.size === 0) {
    $("result-status").textContent = !state.photo ? "Choose a photo." : "Pick a style.";
    return;
  }
  if ([...state.weights.values()].every((w) => w === 0)) {
    showError("weights-error", "All the weights are 0: raise at least one slider.");
    return;
  }
  showError("weights-error", "");
  state.previewTimer = setTimeout(() => render("preview"), PREVIEW_DELAY_MS);
}

async function render(requested) {
  const generation = state.generation;
  const chosen = Number($("max-side").value);
  const kind = chosen <= PREVIEW_SIDE ? "full" : requested; // a small output is its own preview
  const side = kind === "preview" ? Math.min(PREVIEW_SIDE, chosen) : chosen;
  const format = kind === "preview" ? "jpeg" : $("format").value;
  const params = commonParams(side, format);
  params.set("style", styleSpec());
  const form = new FormData();
  form.append("image", state.photo);
  const controller = new AbortController();
  state.inflight = controller;
  $("result-status").textContent = kind === "preview" ? "Previewing…" : "Painting at full size…";
  try {
    const response = await api(`/v1/stylize?${params}`, { method: "POST", body: form, signal: controller.signal });
    const blob = await response.blob();
    if (generation !== state.generation) return; // a newer change is on its way
    await showResult(blob, kind, response.headers.get("X-Inference-Ms"), format);
    for (const id of ["photo-error", "weights-error", "settings-error", "result-error"]) showError(id, "");
    if (kind === "preview" && side !== chosen) {
      state.fullTimer = setTimeout(() => render("full"), FULL_DELAY_MS);
    }
  } catch (err) {
    if (err.name === "AbortError" || generation !== state.generation) return;
    const target = err.status === 400 || err.status === 413 || err.status === 415 ? "photo-error" : null;
    showError(target || errorTarget(err.message, "result-error"), err.message);
    $("result-status").textContent = "No result: see the message above.";
  } finally {
    if (state.inflight === controller) state.inflight = null;
  }
}

async function showResult(blob, kind, inferenceMs, format) {
  const img = $("result-image");
  const url = URL.createObjectURL(blob);
  img.dataset.kind = "loading"; // says what is shown only once it is
  await new Promise((resolve) => {
    img.onload = resolve;
    img.onerror = resolve;
    img.src = url;
  });
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = url;
  img.hidden = false;
  img.dataset.kind = kind;
  img.classList.toggle("preview", kind === "preview");
  const size = `${img.naturalWidth} × ${img.naturalHeight}`;
  const ms = inferenceMs ? `, ${Number(inferenceMs).toFixed(0)} ms on the server` : "";
  $("result-status").textContent =
    kind === "preview" ? `Preview ${size}${ms}; the full size follows…` : `Done: ${size}${ms}.`;
  const download = $("download");
  download.hidden = kind === "preview";
  download.href = url;
  const extension = format === "jpeg" ? "jpg" : format;
  const base = (state.photo.name || "photo").replace(/\.[^.]*$/, "");
  download.download = `${base}-${[...state.weights.keys()].join("+")}.${extension}`;
}

function setUpSettings() {
  const strength = $("strength");
  strength.addEventListener("input", () => {
    $("strength-value").textContent = Number(strength.value).toFixed(2);
    schedule();
  });
  const scale = $("style-scale");
  scale.addEventListener("input", () => {
    $("style-scale-value").textContent = `${styleScale().toFixed(2)}×`;
    schedule();
  });
  for (const id of ["preserve-color", "max-side", "format"]) $(id).addEventListener("change", schedule);
}

// -- jobs: the slow path and learning -----------------------------------------------------------------------------

function formatEta(seconds) {
  if (seconds == null) return "";
  if (seconds < 60) return `about ${Math.ceil(seconds)} s left`;
  return `about ${Math.ceil(seconds / 60)} min left`;
}

// Polls a job until it ends; calls onProgress(job) on every answer; resolves with the finished job.
async function followJob(url, onProgress, isCancelled) {
  for (;;) {
    const job = await (await api(url)).json();
    onProgress(job);
    if (["done", "failed", "cancelled"].includes(job.status) || isCancelled()) return job;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function progressText(job) {
  if (job.status === "queued") return "Waiting in the queue…";
  if (job.status === "running") return `${Math.round(job.progress * 100)} % · ${formatEta(job.eta_s)}`;
  if (job.status === "done") return "Done.";
  if (job.status === "cancelled") return "Cancelled.";
  return `Failed: ${job.error || "unknown error"}`;
}

function jobUi(prefix) {
  return {
    box: $(`${prefix}-progress-box`),
    bar: $(`${prefix}-progress`),
    text: $(`${prefix}-progress-text`),
    start: $(`${prefix}-start`),
    cancel: $(`${prefix}-cancel`),
    error: `${prefix}-error`,
  };
}

function jobStarted(ui) {
  ui.start.disabled = true;
  ui.cancel.hidden = false;
  ui.cancel.disabled = false;
  ui.box.hidden = false;
  ui.bar.value = 0;
  ui.text.textContent = "Sending…";
  showError(ui.error, "");
}

function jobEnded(ui) {
  ui.start.disabled = false;
  ui.cancel.hidden = true;
}

function onProgress(ui) {
  return (job) => {
    ui.bar.value = job.progress;
    ui.text.textContent = progressText(job);
  };
}

async function startSlowJob() {
  const ui = jobUi("slow");
  const painting = $("slow-painting").files[0];
  if (!state.photo) return showError(ui.error, "Choose a photo first (step 1).");
  if (!painting) return showError(ui.error, "Choose the painting to paint after.");
  jobStarted(ui);
  $("slow-result").hidden = true;
  $("slow-download").hidden = true;
  const format = $("format").value;
  const params = commonParams(Number($("max-side").value), format);
  params.delete("style_scale"); // the fast path's control
  const form = new FormData();
  form.append("image", state.photo);
  form.append("style_image", painting);
  try {
    const accepted = await (await api(`/v1/stylize?${params}`, { method: "POST", body: form })).json();
    state.slowJob = accepted;
    const job = await followJob(accepted.url, onProgress(ui), () => state.slowJob === null);
    if (job.status === "done") {
      const blob = await (await api(job.result_url)).blob();
      const url = URL.createObjectURL(blob);
      const img = $("slow-result");
      img.src = url;
      img.hidden = false;
      const download = $("slow-download");
      download.href = url;
      download.download = `painted.${format === "jpeg" ? "jpg" : format}`;
      download.hidden = false;
    } else if (job.status === "failed") {
      showError(ui.error, job.error || "the job failed");
    }
  } catch (err) {
    showError(err.status === 400 || err.status === 415 ? ui.error : errorTarget(err.message, ui.error), err.message);
    ui.box.hidden = true;
  } finally {
    state.slowJob = null;
    jobEnded(ui);
  }
}

async function cancelJob(job, ui) {
  if (!job) return;
  ui.cancel.disabled = true;
  try {
    await api(job.url, { method: "DELETE" });
  } catch (err) {
    showError(ui.error, err.message);
  }
}

async function startLearnJob() {
  const ui = jobUi("learn");
  const name = $("learn-name").value.trim();
  const painting = $("learn-painting").files[0];
  if (!name) return showError(ui.error, "Give the new style a name.");
  if (!painting) return showError(ui.error, "Choose the painting to learn.");
  jobStarted(ui);
  const form = new FormData();
  form.append("name", name);
  form.append("style_image", painting);
  const headers = {};
  const key = $("api-key").value.trim();
  if (key) headers["X-API-Key"] = key;
  try {
    const accepted = await (await api("/v1/styles", { method: "POST", body: form, headers })).json();
    state.learnJob = accepted;
    const job = await followJob(accepted.url, onProgress(ui), () => state.learnJob === null);
    if (job.status === "done") {
      ui.text.textContent = `Learned: “${pretty(name)}” is in the gallery.`;
      await loadStyles(name);
    } else if (job.status === "failed") {
      showError(ui.error, job.error || "the job failed");
    }
  } catch (err) {
    showError(ui.error, err.message);
    if (err.status === 401) $("api-key").focus();
    ui.box.hidden = true;
  } finally {
    state.learnJob = null;
    jobEnded(ui);
  }
}

async function startTextureJob() {
  const ui = jobUi("texture");
  const painting = $("texture-painting").files[0];
  if (!painting) return showError(ui.error, "Choose the painting to take the texture from.");
  jobStarted(ui);
  $("texture-result").hidden = true;
  $("texture-download").hidden = true;
  const side = $("texture-size").value;
  const format = $("format").value;
  const params = new URLSearchParams({
    width: side,
    height: side,
    layers: $("texture-layers").value,
    tileable: String($("texture-tileable").checked),
    format,
  });
  const form = new FormData();
  form.append("style_image", painting);
  try {
    const accepted = await (await api(`/v1/textures?${params}`, { method: "POST", body: form })).json();
    state.textureJob = accepted;
    const job = await followJob(accepted.url, onProgress(ui), () => state.textureJob === null);
    if (job.status === "done") {
      const url = URL.createObjectURL(await (await api(job.result_url)).blob());
      const result = $("texture-result");
      result.style.backgroundImage = `url("${url}")`;
      result.style.backgroundSize = "50% 50%"; // shown 2 x 2: a tileable one shows no seam
      result.dataset.url = url;
      result.hidden = false;
      const download = $("texture-download");
      download.href = url;
      download.download = `texture-${params.get("layers")}.${format === "jpeg" ? "jpg" : format}`;
      download.hidden = false;
    } else if (job.status === "failed") {
      showError(ui.error, job.error || "the job failed");
    }
  } catch (err) {
    showError(ui.error, err.message);
    ui.box.hidden = true;
  } finally {
    state.textureJob = null;
    jobEnded(ui);
  }
}

function setUpJobs() {
  $("texture-start").addEventListener("click", startTextureJob);
  $("texture-cancel").addEventListener("click", () => cancelJob(state.textureJob, jobUi("texture")));
  $("slow-start").addEventListener("click", startSlowJob);
  $("slow-cancel").addEventListener("click", () => cancelJob(state.slowJob, jobUi("slow")));
  $("learn-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startLearnJob();
  });
  $("learn-cancel").addEventListener("click", () => cancelJob(state.learnJob, jobUi("learn")));
}

// -- start -------------------------------------------------------------------------------------------------------

async function main() {
  setUpPhoto();
  setUpSettings();
  setUpJobs();
  await waitUntilReady();
  await readCapabilities();
  await loadStyles();
}

main();
