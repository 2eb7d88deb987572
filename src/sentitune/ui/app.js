// The demo page of `sentitune serve`: posts from the text box or a CSV file, sent to the predict route
// the page was served with; every text is written with textContent, never parsed as HTML.
"use strict";

const body = document.body;
const predictRoute = body.dataset.predictRoute;
const maxInstances = parseInt(body.dataset.maxInstances, 10);
const maxExplain = parseInt(body.dataset.maxExplain, 10);
const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// The cells of a CSV line: commas outside double quotes split, "" inside quotes is a quote.
function csvCells(line) {
  const cells = [];
  let cell = "", quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (quoted && c === '"' && line[i + 1] === '"') { cell += '"'; i++; }
    else if (c === '"') quoted = !quoted;
    else if (c === "," && !quoted) { cells.push(cell); cell = ""; }
    else cell += c;
  }
  cells.push(cell);
  return cells;
}

function postsOfCsv(content) {
  const lines = content.split(/\r?\n/).filter((l) => l.trim() !== "");
  if (!lines.length) return [];
  const header = csvCells(lines[0]).map((h) => h.trim().toLowerCase());
  const column = Math.max(0, header.indexOf("text"));
  return lines.slice(1).map((l) => csvCells(l)[column] || "").filter((t) => t.trim() !== "");
}

$("file").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const content = await file.text();
  const posts = /\.csv$/i.test(file.name) ? postsOfCsv(content) : content.split(/\r?\n/);
  $("posts").value = posts.filter((t) => t.trim() !== "").join("\n");
  $("message").textContent = `${file.name}: ${posts.length} posts`;
});

function bars(scores) {
  const box = element("div", "bars");
  for (const [name, value] of Object.entries(scores)) {
    box.append(element("span", "", name));
    const bar = element("progress");
    bar.max = 1;
    bar.value = value;
    bar.setAttribute("aria-label", `${name} ${value.toFixed(3)}`);
    box.append(bar, element("span", "", value.toFixed(3)));
  }
  return box;
}

// The API counts a post's characters in code points (Python's str); a JS string counts UTF-16 units,
// two for an emoji like 😡. at[i] is the UTF-16 index of code point i (at[n] is the length).
function codeUnitIndex(text) {
  const at = [0];
  for (const ch of text) at.push(at[at.length - 1] + ch.length);
  return at;
}

// UTF-16 indices where a user-perceived character starts (a letter with its combining marks, an emoji
// ZWJ sequence, a flag), and the end: a highlight's edges are moved onto them so none is cut in two.
function clusterEdges(text) {
  if (typeof Intl === "undefined" || !Intl.Segmenter) return null;
  const edges = [];
  for (const part of new Intl.Segmenter(undefined, { granularity: "grapheme" }).segment(text)) edges.push(part.index);
  edges.push(text.length);
  return edges;
}

function snapDown(edges, i) {
  if (!edges) return i;
  let lo = 0, hi = edges.length - 1;
  while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (edges[mid] <= i) lo = mid; else hi = mid - 1; }
  return edges[lo];
}

function snapUp(edges, i) {
  if (!edges) return i;
  let lo = 0, hi = edges.length - 1;
  while (lo < hi) { const mid = (lo + hi) >> 1; if (edges[mid] >= i) hi = mid; else lo = mid + 1; }
  return edges[lo];
}

function wordTitle(word, explanation) {
  const value = word.attribution;
  if (explanation.method === "occlusion") {
    const without = explanation.score - value;
    return `${explanation.label} ${explanation.score.toFixed(3)}; without this word ${without.toFixed(3)}`;
  }
  return `${value.toFixed(4)} towards ${explanation.label} (${explanation.method})`;
}

function explained(text, explanation) {
  const line = element("div", "text");
  const at = codeUnitIndex(text);
  const edges = clusterEdges(text);
  const peak = Math.max(1e-9, ...explanation.words.map((w) => Math.abs(w.attribution)));
  let done = 0;
  for (const word of explanation.words) {
    const start = Math.max(done, snapDown(edges, at[word.start]));
    const end = Math.max(start, snapUp(edges, at[word.end]));
    line.append(document.createTextNode(text.slice(done, start)));
    const span = element("span", "word", text.slice(start, end));
    const strength = Math.abs(word.attribution) / peak;
    span.style.backgroundColor = word.attribution >= 0
      ? `rgba(39, 174, 96, ${(0.6 * strength).toFixed(2)})` : `rgba(192, 57, 43, ${(0.6 * strength).toFixed(2)})`;
    span.title = wordTitle(word, explanation);
    span.dataset.start = word.start;
    span.dataset.end = word.end;
    line.append(span);
    done = end;
  }
  line.append(document.createTextNode(text.slice(done)));
  return line;
}

function show(texts, predictions) {
  const results = $("results");
  results.replaceChildren();
  texts.forEach((text, i) => {
    const p = predictions[i];
    const card = element("div", "result");
    const shown = p.explanation ? explained(text, p.explanation) : element("div", "text", text);
    shown.dir = "auto";  // a Hebrew or Arabic post reads right to left
    card.append(shown);
    card.append(element("div", `label ${p.label}`, p.label), bars(p.scores));
    results.append(card);
  });
}

$("label").addEventListener("click", async () => {
  let texts = $("posts").value.split(/\r?\n/).filter((t) => t.trim() !== "");
  const message = $("message");
  if (!texts.length) { message.textContent = "Type a post first (one per line)."; return; }
  message.textContent = "";
  const explain = $("explain").checked;
  const most = explain ? maxExplain : maxInstances;
  if (texts.length > most) {
    message.textContent = `${texts.length} posts: labelling the first ${most}` +
      (explain ? " (the most one request may ask to explain)." : " (the most one request takes).");
    texts = texts.slice(0, most);
  }
  const button = $("label");
  button.disabled = true;
  try {
    const response = await fetch(predictRoute, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ instances: texts, parameters: { explain } }),
    });
    const answer = await response.json();
    if (!response.ok) { message.textContent = answer.error || `error ${response.status}`; return; }
    show(texts, answer.predictions);
  } catch (error) {
    message.textContent = `The server did not answer: ${error}`;
  } finally {
    button.disabled = false;
  }
});
