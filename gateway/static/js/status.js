// Index statistics (GET /v1/stats) and the recent failures list (GET /v1/failures).

import { describeError, getFailures, getStats } from "./api.js";

const nf = new Intl.NumberFormat();

export class StatsView {
  constructor(el, onUpdate = () => {}) {
    this.el = el;
    this.onUpdate = onUpdate;
    this.count = null;
    this.strategy = null;
    this.timer = null;
    this.soon = 0;
  }

  async refresh() {
    try {
      const s = await getStats();
      this.count = Number.isFinite(s.count) ? s.count : null;
      this.strategy = typeof s.strategy === "string" ? s.strategy : null;
      const model = s.model || {};
      const name = model.name || "unknown model";
      const fp = model.sha256 ? ` (${String(model.sha256).slice(0, 8)})` : "";
      // A figure the server could not get in time is null and named in `unavailable`.
      const count = Number.isFinite(s.count) ? nf.format(s.count) : "?";
      const parts = [
        `<strong>${count}</strong> images indexed`,
        `model ${esc(name)}${esc(fp)}`,
        `backend ${esc(s.backend || "?")}`,
      ];
      if (s.mode) parts.push(esc(s.mode));
      if (s.queued) parts.push(`${nf.format(s.queued)} queued`);
      if (Array.isArray(s.unavailable) && s.unavailable.length) {
        parts.push(`${esc(s.unavailable.join(", "))} unavailable now`);
      }
      this.el.innerHTML = parts.join(" · ");
      this.el.dataset.state = "ok";
      this.onUpdate(this.count);
    } catch (err) {
      this.el.textContent = `Index statistics unavailable: ${describeError(err)}`;
      this.el.dataset.state = "error";
    }
  }

  /** Refresh within `ms`, at most once per `ms` however often it is asked (ingest progress). */
  refreshSoon(ms = 1000) {
    if (this.soon) return;
    this.soon = window.setTimeout(() => {
      this.soon = 0;
      this.refresh();
    }, ms);
  }

  /** Refresh now and then every `ms` while the page is visible. */
  start(ms = 15000) {
    this.refresh();
    this.timer = window.setInterval(() => {
      if (document.visibilityState === "visible") this.refresh();
    }, ms);
  }
}

export class FailuresView {
  constructor({ box, list, status, count, refreshButton }) {
    Object.assign(this, { box, list, status, count });
    refreshButton.addEventListener("click", () => this.refresh());
    box.addEventListener("toggle", () => {
      if (box.open) this.refresh();
    });
  }

  async refresh() {
    this.status.textContent = "Loading…";
    try {
      const data = await getFailures(50);
      const failures = Array.isArray(data.failures) ? data.failures : [];
      this.count.textContent = failures.length ? String(failures.length) : "";
      this.list.replaceChildren(...failures.map(row));
      this.status.textContent = failures.length ? "" : "No failures recorded.";
    } catch (err) {
      this.status.textContent = `Could not load failures: ${describeError(err)}`;
    }
  }
}

function row(f) {
  const li = document.createElement("li");
  li.dataset.id = f.id ?? "";
  const head = document.createElement("div");
  head.className = "failure-head";
  const reason = document.createElement("span");
  reason.className = "failure-reason";
  reason.textContent = f.reason || "failed";
  const when = document.createElement("time");
  const d = toDate(f.at);
  if (d) {
    when.dateTime = d.toISOString();
    when.textContent = d.toLocaleString();
  } else if (f.at) {
    when.textContent = String(f.at);
  }
  head.append(reason, when);
  const src = document.createElement("div");
  src.className = "failure-source";
  src.textContent = f.source || f.id || "";
  const msg = document.createElement("div");
  msg.className = "failure-message";
  msg.textContent = f.message || "";
  li.append(head, src, msg);
  return li;
}

/** `at` may be an ISO 8601 string or epoch seconds (ms when implausibly large for s). */
function toDate(at) {
  if (at === null || at === undefined || at === "") return null;
  const n = typeof at === "number" ? at : /^\d+(\.\d+)?$/.test(String(at)) ? Number(at) : NaN;
  const d = Number.isFinite(n) ? new Date(n < 1e11 ? n * 1000 : n) : new Date(String(at));
  return Number.isNaN(d.getTime()) ? null : d;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
