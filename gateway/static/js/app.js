// Entry point: wires the search inputs (drop, paste, file, URL), the gallery and viewer,
// the ingest panel, statistics and settings together.

import { getApiKey, setApiKey } from "./api.js";
import { DuplicatesView } from "./duplicates.js";
import { FilterChips } from "./filters.js";
import { Gallery } from "./gallery.js";
import { IngestPanel } from "./ingest.js";
import { SearchController } from "./search.js";
import { FailuresView, StatsView } from "./status.js";
import { Viewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);

const stats = new StatsView($("stats"), (count) => {
  const hint = $("empty-index");
  if (hint) hint.hidden = count !== 0;
  if (stats.strategy) $("strategy-default").textContent = `Server default (${stats.strategy.replace("_", "-")})`;
});
const failures = new FailuresView({
  box: $("failures-box"),
  list: $("failures-list"),
  status: $("failures-status"),
  count: $("failures-count"),
  refreshButton: $("failures-refresh"),
});

function controls() {
  const kEl = $("k");
  const mdEl = $("max-distance");
  let k = Number.parseInt(kEl.value, 10);
  if (!Number.isFinite(k) || k < 1) k = 24;
  k = Math.min(k, 1000);
  const md = mdEl.value.trim() === "" ? null : Math.max(0, Math.min(256, Number.parseInt(mdEl.value, 10)));
  return {
    k, maxDistance: Number.isFinite(md) ? md : null, strategy: $("strategy").value || null,
    filter: chips.value(),
  };
}

const chips = new FilterChips(
  { form: $("filter-form"), field: $("filter-field"), value: $("filter-value"), list: $("filter-chips") },
  () => { if (searchCtl && searchCtl.query) _run(searchCtl.query); },
);

let searchCtl = null;
const similar = (item) =>
  searchCtl.run({ kind: "id", value: item.id, label: `Similar to ${item.source || item.id}`, preview: item.thumbnail_url || `/v1/images/${encodeURIComponent(item.id)}/thumbnail` });

const gallery = new Gallery($("gallery"), {
  onOpen: (i) => viewer.open(i),
  onSimilar: (item) => similar(item),
});
searchCtl = new SearchController(
  {
    results: document.querySelector(".results"),
    status: $("search-status"),
    error: $("search-error"),
    empty: $("empty"),
    more: $("more"),
    moreButton: $("more-button"),
    query: { figure: $("query-figure"), image: $("query-image"), caption: $("query-caption") },
  },
  { gallery, controls, getIndexCount: () => stats.count },
);
const viewer = new Viewer($("viewer"), {
  gallery,
  onSimilar: (item) => similar(item),
  loadMore: () => searchCtl.loadMore(),
});

// Searching by id puts it in the address (#similar=<id>) so the back button and links work.
const _run = searchCtl.run.bind(searchCtl);
searchCtl.run = (query) => {
  const hash = query.kind === "id" ? `#similar=${encodeURIComponent(query.value)}` : "";
  if (hash && location.hash !== hash) history.pushState(null, "", hash);
  else if (!hash && location.hash) history.pushState(null, "", location.pathname + location.search);
  return _run(query);
};
function fromHash() {
  const m = /^#similar=(.+)$/.exec(location.hash);
  if (m) {
    const id = decodeURIComponent(m[1]);
    if (!(searchCtl.query && searchCtl.query.kind === "id" && searchCtl.query.value === id)) {
      _run({ kind: "id", value: id, label: `Similar to ${id}`, preview: `/v1/images/${encodeURIComponent(id)}/thumbnail` });
    }
  }
}
window.addEventListener("popstate", fromHash);

function searchFile(file) {
  if (file) searchCtl.run({ kind: "file", value: file });
}
function searchUrl(url) {
  $("search-url").value = url;
  searchCtl.run({ kind: "url", value: url, label: url });
}

// --- search inputs -------------------------------------------------------------------
$("search-file").addEventListener("change", (ev) => {
  searchFile(ev.target.files[0]);
  ev.target.value = ""; // choosing the same file again still fires "change"
});
$("text-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("search-text").value.trim();
  if (text) searchCtl.run({ kind: "text", value: text, label: `“${text}”` });
});
$("url-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const url = $("search-url").value.trim();
  if (url) searchUrl(url);
});

let rerunTimer = 0;
$("controls").addEventListener("change", (ev) => {
  if (ev.target.id === "strategy" && searchCtl.query) _run(searchCtl.query);
});
$("controls").addEventListener("input", (ev) => {
  if (ev.target.tagName === "SELECT") return; // handled by "change", without the typing delay
  window.clearTimeout(rerunTimer);
  rerunTimer = window.setTimeout(() => {
    const form = $("controls");
    if (!form.checkValidity()) {
      form.reportValidity();
      return;
    }
    if (searchCtl.query) _run(searchCtl.query);
  }, 400);
});
$("controls").addEventListener("submit", (ev) => ev.preventDefault());

function droppedUrl(dt) {
  const uri = dt.getData("text/uri-list") || dt.getData("text/plain");
  const first = (uri || "").split(/\r?\n/).find((l) => l && !l.startsWith("#"));
  return first && /^https?:\/\//i.test(first.trim()) ? first.trim() : null;
}

function dropTarget(zone, onFiles, onUrl) {
  const set = (v) => (zone.dataset.active = v ? "true" : "false");
  zone.addEventListener("dragenter", (ev) => { ev.preventDefault(); set(true); });
  zone.addEventListener("dragover", (ev) => { ev.preventDefault(); ev.dataTransfer.dropEffect = "copy"; set(true); });
  zone.addEventListener("dragleave", (ev) => { if (!zone.contains(ev.relatedTarget)) set(false); });
  zone.addEventListener("drop", (ev) => {
    ev.preventDefault();
    ev.stopPropagation();
    set(false);
    const files = [...(ev.dataTransfer.files || [])];
    if (files.length) onFiles(files);
    else if (onUrl) {
      const url = droppedUrl(ev.dataTransfer);
      if (url) onUrl(url);
    }
  });
}
dropTarget(document.querySelector(".search-panel"), (files) => searchFile(files[0]), searchUrl);
dropTarget(document.querySelector(".ingest-panel"), (files) => ingest.add(files), null);
// A file dropped anywhere else must not navigate away from the page.
window.addEventListener("dragover", (ev) => ev.preventDefault());
window.addEventListener("drop", (ev) => ev.preventDefault());

document.addEventListener("paste", (ev) => {
  const dt = ev.clipboardData;
  if (!dt) return;
  const file = [...dt.files].find((f) => f.type.startsWith("image/"));
  if (file) {
    ev.preventDefault();
    searchFile(file);
    return;
  }
  const inField = ev.target.closest && ev.target.closest("input, textarea, [contenteditable]");
  const text = dt.getData("text/plain").trim();
  if (!inField && /^https?:\/\/\S+$/i.test(text)) {
    ev.preventDefault();
    searchUrl(text);
  }
});

// --- ingest ------------------------------------------------------------------------------
const ingest = new IngestPanel(
  {
    list: $("ingest-list"), summary: $("ingest-summary"), clear: $("ingest-clear"),
    overall: $("ingest-overall"), progress: $("ingest-progress"), counts: $("ingest-counts"),
  },
  {
    onSimilar: (item) => similar(item),
    onFailure: () => failures.refresh(),
    onSettled: () => stats.refresh(),
    // Fresh header counts (and empty-state text) while images are being indexed.
    onProgress: () => stats.refreshSoon(),
  },
);
$("ingest-files").addEventListener("change", (ev) => {
  ingest.add(ev.target.files);
  ev.target.value = "";
});

// --- duplicates ------------------------------------------------------------------------------
new DuplicatesView(
  {
    form: $("dup-form"),
    distance: $("dup-distance"),
    status: $("dup-status"),
    error: $("dup-error"),
    list: $("dup-list"),
    moreButton: $("dup-more"),
  },
  { onDeleted: () => stats.refresh() },
);

// --- settings ------------------------------------------------------------------------------
$("api-key").value = getApiKey();
$("settings-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const ok = setApiKey($("api-key").value.trim());
  $("settings-status").textContent = ok
    ? $("api-key").value.trim() ? "API key saved in this browser." : "API key cleared."
    : "This browser does not allow storing the key.";
  stats.refresh();
});
$("api-key-clear").addEventListener("click", () => {
  $("api-key").value = "";
  setApiKey("");
  $("settings-status").textContent = "API key cleared.";
});

stats.start();
failures.refresh();
fromHash();
document.documentElement.dataset.ready = "true";
