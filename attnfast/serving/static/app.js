// The attnfast page: captions to images with each word's attention, and a path between two captions.
// Plain browser JavaScript, no library: everything it shows comes from /v1/images and /v1/interpolate.
"use strict";

const $ = (id) => document.getElementById(id);

function dataUrl(format, base64) {
  return `data:image/${format};base64,${base64}`;
}

function figure(src, label, alt) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src;
  img.alt = alt || label;
  const caption = document.createElement("figcaption");
  caption.textContent = label;
  fig.append(img, caption);
  return fig;
}

async function postJson(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) {
    const retry = response.headers.get("Retry-After");
    throw new Error(data.error + (retry ? ` (retry in ${retry} s)` : ""));
  }
  return data;
}

function showAttention(result, index) {
  const item = result.images[index];
  const strip = $("attention-strip");
  strip.replaceChildren();
  document.querySelectorAll("#images figure").forEach((fig, k) => fig.classList.toggle("selected", k === index));
  if (!item.attention || item.attention.length === 0) {
    $("attention-title").hidden = true;
    return;
  }
  strip.append(figure(dataUrl(result.format, item.image), `seed ${item.seed}`, "generated image"));
  for (const word of item.attention) {
    const fig = figure(dataUrl(result.format, word.overlay), word.word, `attention of "${word.word}"`);
    fig.classList.add("word");
    strip.append(fig);
  }
  $("attention-title").hidden = false;
}

async function generate(event) {
  event.preventDefault();
  const button = $("generate");
  const status = $("status");
  const body = {
    captions: [$("caption").value],
    n: Number($("count").value),
    attention: true,
  };
  if ($("seed").value !== "") body.seed = Number($("seed").value);
  button.disabled = true;
  status.className = "";
  status.textContent = "drawing...";
  const started = performance.now();
  try {
    const result = await postJson("/v1/images", body);
    const images = $("images");
    images.replaceChildren();
    result.images.forEach((item, k) => {
      const fig = figure(dataUrl(result.format, item.image), `seed ${item.seed}`, `image ${k + 1}`);
      fig.addEventListener("click", () => showAttention(result, k));
      images.append(fig);
    });
    const unknown = result.captions[0].unknown;
    $("unknown").hidden = unknown.length === 0;
    $("unknown").textContent = `Words the model does not know: ${unknown.join(", ")}`;
    showAttention(result, 0);
    const ms = Math.round(performance.now() - started);
    status.textContent = `${result.images.length} images of ${result.size}x${result.size} in ${ms} ms ` +
      `(seed ${result.seed}; the model read: "${result.captions[0].tokens.join(" ")}")`;
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

let path = null;

function showStep() {
  if (!path) return;
  const k = Number($("beta").value);
  const item = path.images[k];
  $("path-image").src = dataUrl(path.format, item.image);
  $("beta-label").textContent = `beta = ${item.beta.toFixed(2)}: ` +
    (k === 0 ? path.captions[0].text : k === path.images.length - 1 ? path.captions[1].text : "in between");
}

async function interpolate(event) {
  event.preventDefault();
  const button = $("interpolate");
  const status = $("interpolate-status");
  button.disabled = true;
  status.className = "";
  status.textContent = "drawing...";
  try {
    path = await postJson("/v1/interpolate", {
      captions: [$("caption-a").value, $("caption-b").value],
      steps: 9,
      seed: $("seed").value === "" ? 0 : Number($("seed").value),
    });
    $("beta").max = String(path.images.length - 1);
    $("beta").value = "0";
    $("path").hidden = false;
    showStep();
    status.textContent = `${path.images.length} images; move the slider`;
  } catch (error) {
    status.className = "error";
    status.textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

async function describeModel() {
  try {
    const health = await (await fetch("/v1/health")).json();
    $("model-info").textContent = `Model: ${health.stages} stage(s), ${health.vocabulary} words, on ${health.device}; ` +
      `batches of up to ${health.max_batch} images.`;
  } catch (error) {
    $("model-info").textContent = "(health check failed)";
  }
}

$("generate-form").addEventListener("submit", generate);
$("interpolate-form").addEventListener("submit", interpolate);
$("beta").addEventListener("input", showStep);
describeModel();
