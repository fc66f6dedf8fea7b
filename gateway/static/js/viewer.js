// Large view of one result in a modal <dialog>: Esc closes (native), arrows browse.

import { apiUrl } from "./api.js";
import { labelOf } from "./gallery.js";

// metadata fields that hold a moment, as unix seconds (docs/API.md)
const DATE_FIELDS = new Set(["ingested_at", "taken_at"]);

function formatDate(seconds) {
  const d = new Date(seconds * 1000);
  return Number.isNaN(d.getTime()) ? String(seconds) : d.toLocaleString();
}

export class Viewer {
  constructor(dialog, { gallery, onSimilar, loadMore }) {
    this.dialog = dialog;
    this.gallery = gallery;
    this.onSimilar = onSimilar;
    this.loadMore = loadMore;
    this.index = -1;
    this.img = dialog.querySelector("#viewer-image");
    this.title = dialog.querySelector("#viewer-title");
    this.meta = dialog.querySelector("#viewer-meta");
    this.prev = dialog.querySelector("#viewer-prev");
    this.next = dialog.querySelector("#viewer-next");
    this.prev.addEventListener("click", () => this.step(-1));
    this.next.addEventListener("click", () => this.step(+1));
    dialog.querySelector("#viewer-similar").addEventListener("click", () => {
      const item = this.gallery.items[this.index];
      this.dialog.close();
      if (item) this.onSimilar(item);
    });
    dialog.addEventListener("keydown", (ev) => {
      if (ev.key === "ArrowRight") {
        ev.preventDefault();
        this.step(+1);
      } else if (ev.key === "ArrowLeft") {
        ev.preventDefault();
        this.step(-1);
      }
    });
    // A click on the backdrop (the dialog element itself, outside its content) closes.
    dialog.addEventListener("click", (ev) => {
      if (ev.target === dialog) dialog.close();
    });
    dialog.addEventListener("close", () => {
      if (this.index >= 0) this.gallery.focusIndex(this.index);
    });
  }

  get isOpen() {
    return this.dialog.open;
  }

  open(index) {
    this.show(index);
    if (!this.dialog.open) this.dialog.showModal();
  }

  async step(dir) {
    let target = this.index + dir;
    if (target >= this.gallery.items.length && dir > 0) await this.loadMore();
    target = Math.max(0, Math.min(target, this.gallery.items.length - 1));
    if (target !== this.index) this.show(target);
  }

  show(index) {
    const item = this.gallery.items[index];
    if (!item) return;
    this.index = index;
    this.dialog.dataset.id = item.id;
    // The stored preview sized for this view; the server redirects to the thumbnail where
    // there is none (distributed mode, small images, imported codes).
    this.img.src = apiUrl(`/v1/images/${encodeURIComponent(item.id)}/preview`);
    this.img.alt = `Result ${index + 1}: ${labelOf(item)}`;
    this.title.textContent = `${index + 1}. ${labelOf(item)}`;
    const rows = [];
    if (!this.gallery.list.classList.contains("by-words")) {
      rows.push(["Distance", `${item.distance} bits`]);
    }
    rows.push(["Id", item.id]);
    if (item.source) rows.push(["Source", item.source]);
    const labels = (item.metadata && Array.isArray(item.metadata.labels)) ? item.metadata.labels : [];
    if (labels.length) {
      // the model's top ImageNet classes, with their scores
      rows.push(["Labels", labels.map((l) => `${l.name} ${Math.round(100 * l.score)}%`).join(", ")]);
    }
    for (const [k, v] of Object.entries(item.metadata || {})) {
      if (v === null || v === undefined || typeof v === "object") continue;
      // dates arrive as unix seconds: a person reads a date
      rows.push([k, DATE_FIELDS.has(k) && typeof v === "number" ? formatDate(v) : String(v)]);
    }
    this.meta.replaceChildren(
      ...rows.flatMap(([k, v]) => {
        const dt = document.createElement("dt");
        dt.textContent = k;
        const dd = document.createElement("dd");
        if (k === "Source" && /^https?:\/\//i.test(v)) {
          const a = document.createElement("a");
          a.href = v;
          a.rel = "noopener noreferrer";
          a.target = "_blank";
          a.textContent = v;
          dd.append(a);
        } else {
          dd.textContent = v;
        }
        return [dt, dd];
      }),
    );
    this.prev.disabled = index === 0;
    this.next.disabled = index === this.gallery.items.length - 1 && !this.gallery.hasMore;
  }
}
