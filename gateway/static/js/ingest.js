// Ingest panel: one POST /v1/images per file (XHR for upload progress, a few in parallel),
// then GET /v1/images/{id} with backoff until the image is indexed or failed.

import { ApiError, describeError, getImage, uploadFiles } from "./api.js";

const PARALLEL_UPLOADS = 3;
const POLL_FIRST_MS = 300;
const POLL_MAX_MS = 3000;
const POLL_PARALLEL = 4;
const NOT_FOUND_GRACE_MS = 30000; // distributed mode: status may lag the 202 briefly

const STATUS_TEXT = {
  waiting: "Waiting",
  uploading: "Uploading",
  queued: "Queued for indexing",
  indexed: "Indexed",
  failed: "Failed",
  refused: "Refused",
  skipped: "Skipped (duplicate)",
};
const SETTLED = ["indexed", "failed", "refused", "skipped"];

export class IngestPanel {
  constructor(els, { onSimilar, onFailure, onSettled, onProgress = () => {} }) {
    this.els = els;
    this.onSimilar = onSimilar;
    this.onFailure = onFailure;
    this.onSettled = onSettled;
    this.onProgress = onProgress;
    this.run = null; // the current run: { start, total, doneAtStart } while anything is busy
    this.entries = [];
    this.pending = [];
    this.active = 0;
    this.polling = new Set();
    this.polls = 0;
    this.tickTimer = 0;
    els.clear.addEventListener("click", () => this.clearFinished());
    els.list.addEventListener("click", (ev) => {
      const btn = ev.target.closest(".upload-similar");
      if (!btn) return;
      const entry = this.entries.find((e) => e.li === btn.closest(".upload"));
      if (entry?.id) onSimilar({ id: entry.id, source: entry.file.name, thumbnail_url: entry.thumbnailUrl });
    });
  }

  add(files) {
    const list = [...files];
    if (list.length === 0) return;
    for (const file of list) {
      const entry = { file, id: null, status: "waiting", started: 0, ...this.#row(file) };
      this.entries.push(entry);
      this.pending.push(entry);
      this.els.list.append(entry.li);
      this.#set(entry, "waiting");
    }
    this.#summary();
    this.#pump();
  }

  clearFinished() {
    this.entries = this.entries.filter((e) => {
      const done = SETTLED.includes(e.status);
      if (done) {
        if (e.preview) URL.revokeObjectURL(e.preview);
        this.polling.delete(e);
        e.li.remove();
      }
      return !done;
    });
    this.#summary();
  }

  #pump() {
    while (this.active < PARALLEL_UPLOADS && this.pending.length) {
      const entry = this.pending.shift();
      this.active += 1;
      this.#upload(entry).finally(() => {
        this.active -= 1;
        this.#pump();
      });
    }
  }

  async #upload(entry) {
    this.#set(entry, "uploading", "0%");
    try {
      const data = await uploadFiles([entry.file], (frac) => {
        entry.progress.value = frac;
        this.#set(entry, "uploading", `${Math.round(frac * 100)}%`);
      });
      entry.progress.value = 1;
      const accepted = (data.images || [])[0];
      const refused = (data.errors || [])[0];
      if (accepted) {
        entry.id = accepted.id;
        entry.li.dataset.id = accepted.id;
        entry.statusUrl = accepted.status_url || `/v1/images/${encodeURIComponent(accepted.id)}`;
        this.#set(entry, accepted.status === "indexed" ? "indexed" : "queued");
        entry.detail.textContent = "";
        if (entry.status === "queued") this.#poll(entry, POLL_FIRST_MS);
        else this.#indexed(entry, accepted);
      } else if (refused) {
        this.#refuse(entry, refused.code, refused.message);
      } else {
        this.#refuse(entry, "bad_response", "The server accepted nothing and gave no reason.");
      }
    } catch (err) {
      const item = err instanceof ApiError ? err.errors.find((e) => e.filename === entry.file.name) || err.errors[0] : null;
      if (item) this.#refuse(entry, item.code || err.code, item.message || err.message);
      else this.#refuse(entry, err.code || "error", describeError(err));
    }
  }

  /** Due for a status check after `delay` ms; one scheduler serves every entry. */
  #poll(entry, delay) {
    if (!entry.started) entry.started = Date.now();
    entry.delay = delay;
    entry.due = Date.now() + delay;
    this.polling.add(entry);
    this.#tick();
  }

  // With a thousand files in flight, a timer per file would flood the server: instead one
  // timer checks at most POLL_PARALLEL images at a time, the ones longest overdue first.
  #tick() {
    if (this.tickTimer || !this.polling.size) return;
    const next = Math.min(...[...this.polling].map((e) => e.due));
    this.tickTimer = window.setTimeout(() => {
      this.tickTimer = 0;
      const now = Date.now();
      const due = [...this.polling].filter((e) => e.due <= now).sort((a, b) => a.due - b.due);
      for (const entry of due.slice(0, Math.max(0, POLL_PARALLEL - this.polls))) {
        this.polling.delete(entry);
        this.polls += 1;
        this.#check(entry).finally(() => {
          this.polls -= 1;
          this.#tick();
        });
      }
      this.#tick();
    }, Math.max(50, next - Date.now()));
  }

  async #check(entry) {
    if (!this.entries.includes(entry)) return undefined;
    let next = Math.min(POLL_MAX_MS, entry.delay * 1.5);
    try {
      const img = await getImage(entry.id);
      if (img.status === "indexed") return this.#indexed(entry, img);
      if (img.status === "skipped") {
        this.#set(entry, "skipped", "", `near-duplicate of ${img.duplicate_of}`);
        entry.li.dataset.duplicateOf = img.duplicate_of || "";
        return this.#done();
      }
      if (img.status === "failed") {
        this.#set(entry, "failed", "", `${img.reason || "failed"}${img.message ? `: ${img.message}` : ""}`);
        entry.li.dataset.reason = img.reason || "";
        this.onFailure();
        return this.#done();
      }
    } catch (err) {
      const notFound = err instanceof ApiError && err.status === 404;
      if (notFound && Date.now() - entry.started > NOT_FOUND_GRACE_MS) {
        this.#set(entry, "failed", "", "The server no longer knows this image (not_found).");
        return this.#done();
      }
      if (!notFound) {
        entry.detail.textContent = `Status check failed, retrying: ${describeError(err)}`;
        next = POLL_MAX_MS;
      }
    }
    this.#poll(entry, next);
    return undefined;
  }

  #indexed(entry, img) {
    entry.thumbnailUrl = img.thumbnail_url || `/v1/images/${encodeURIComponent(entry.id)}/thumbnail`;
    this.#set(entry, "indexed", "", img.duplicate_of ? `near-duplicate of ${img.duplicate_of}` : null);
    if (img.duplicate_of) entry.li.dataset.duplicateOf = img.duplicate_of;
    const btn = entry.li.querySelector(".upload-similar");
    btn.hidden = false;
    this.#done();
  }

  #refuse(entry, code, message) {
    entry.li.dataset.reason = code;
    entry.progress.hidden = true;
    this.#set(entry, "refused", "", `${message} (${code})`);
    this.#done();
  }

  #done() {
    this.onProgress();
    this.#summary();
    if (this.entries.every((e) => SETTLED.includes(e.status))) this.onSettled();
  }

  #set(entry, status, extra = "", detail = null) {
    entry.status = status;
    entry.li.dataset.status = status;
    entry.state.textContent = `${STATUS_TEXT[status]}${extra ? ` ${extra}` : ""}`;
    if (detail !== null) entry.detail.textContent = detail;
    if (status !== "uploading" && status !== "waiting") entry.progress.hidden = true;
    if (status !== "uploading") this.#summary();
  }

  #row(file) {
    const li = document.createElement("li");
    li.className = "upload";
    li.dataset.filename = file.name;
    const thumb = document.createElement("img");
    thumb.className = "upload-thumb";
    thumb.alt = "";
    let preview = null;
    if (file.type.startsWith("image/") && file.size < 20e6) {
      preview = URL.createObjectURL(file);
      thumb.loading = "lazy"; // a thousand files must not decode a thousand photos at once
      thumb.decoding = "async";
      thumb.src = preview;
    }
    thumb.addEventListener("error", () => thumb.classList.add("none"), { once: true });
    if (!thumb.src) thumb.classList.add("none");
    const main = document.createElement("div");
    main.className = "upload-main";
    const name = document.createElement("span");
    name.className = "upload-name";
    name.textContent = file.name;
    name.title = file.name;
    const progress = document.createElement("progress");
    progress.max = 1;
    progress.value = 0;
    progress.setAttribute("aria-label", `Upload progress of ${file.name}`);
    const state = document.createElement("span");
    state.className = "upload-state";
    const detail = document.createElement("span");
    detail.className = "upload-detail";
    main.append(name, progress, state, detail);
    const similar = document.createElement("button");
    similar.type = "button";
    similar.className = "upload-similar secondary";
    similar.textContent = "Similar";
    similar.setAttribute("aria-label", `Find images similar to ${file.name}`);
    similar.hidden = true;
    li.append(thumb, main, similar);
    return { li, progress, state, detail, preview };
  }

  #summary() {
    const c = { waiting: 0, uploading: 0, queued: 0, indexed: 0, failed: 0, refused: 0, skipped: 0 };
    for (const e of this.entries) c[e.status] += 1;
    const busy = c.waiting + c.uploading + c.queued;
    const parts = [];
    if (c.indexed) parts.push(`${c.indexed} indexed`);
    if (c.failed + c.refused) parts.push(`${c.failed + c.refused} failed`);
    if (c.skipped) parts.push(`${c.skipped} skipped as duplicates`);
    if (c.uploading + c.waiting) parts.push(`${c.uploading + c.waiting} uploading`);
    if (c.queued) parts.push(`${c.queued} being indexed`);
    this.els.summary.textContent = parts.length ? `${parts.join(", ")}.` : "";
    // Clearing is offered only when nothing runs: rows must not vanish mid-run.
    this.els.clear.hidden = busy > 0 || this.entries.length === 0;
    this.#overall(busy);
  }

  /** One progress bar over the current run: settled of all, with the rate since it began. */
  #overall(busy) {
    const { overall, progress, counts } = this.els;
    if (!overall) return;
    const settled = this.entries.length - busy;
    if (busy > 0 && this.run === null) {
      this.run = { start: performance.now(), doneAtStart: settled };
    }
    if (this.run === null) {
      overall.hidden = true;
      return;
    }
    const total = this.entries.length - this.run.doneAtStart;
    const done = settled - this.run.doneAtStart;
    const seconds = (performance.now() - this.run.start) / 1000;
    const rate = seconds > 0.5 ? ` · ${(done / seconds).toFixed(1)} images/s` : "";
    overall.hidden = false;
    progress.max = Math.max(1, total);
    progress.value = done;
    overall.dataset.done = String(done);
    overall.dataset.total = String(total);
    counts.textContent = `${done} of ${total} done${rate}`;
    if (busy === 0) this.run = null; // the bar keeps the finished run's figures until the next
  }
}
