// Justified gallery: rows of equal height, each tile as wide as its aspect ratio asks
// (row breaking in layout.js). This module renders tiles, learns each aspect ratio (from
// metadata width/height, else from the loaded thumbnail), lays the rows out again when the
// width changes, and moves focus between tiles with the arrow keys.

import { apiUrl } from "./api.js";
import { justify } from "./layout.js";

const DEFAULT_ASPECT = 4 / 3;

function aspectOf(result) {
  const m = result.metadata || {};
  const w = Number(m.width ?? result.width);
  const h = Number(m.height ?? result.height);
  return w > 0 && h > 0 ? w / h : DEFAULT_ASPECT;
}

export function labelOf(result) {
  const src = typeof result.source === "string" && result.source ? result.source : "";
  const name = src ? src.split(/[\\/]/).filter(Boolean).pop() || src : "";
  return name || `image ${String(result.id).slice(0, 12)}`;
}

export class Gallery {
  /** @param {HTMLUListElement} list */
  constructor(list, { onOpen, onSimilar }) {
    this.list = list;
    this.items = [];
    this.aspects = [];
    this.onOpen = onOpen;
    this.onSimilar = onSimilar;
    this.frame = 0;
    this.lastWidth = 0;
    list.addEventListener("click", (ev) => this.#click(ev));
    list.addEventListener("keydown", (ev) => this.#keydown(ev));
    new ResizeObserver(() => {
      if (this.list.clientWidth !== this.lastWidth) this.#schedule();
    }).observe(list);
  }

  clear() {
    this.items = [];
    this.aspects = [];
    this.list.replaceChildren();
    this.list.hidden = true;
  }

  #schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => this.layout());
  }

  /** Size every tile; a full re-layout is cheap (arithmetic plus two style writes each). */
  layout() {
    this.frame = 0;
    const width = this.list.clientWidth;
    this.lastWidth = width;
    if (!width || !this.items.length) return;
    const css = getComputedStyle(this.list);
    const target = Number.parseFloat(css.getPropertyValue("--row")) || 170;
    const gap = Number.parseFloat(css.columnGap) || 0;
    // Half a pixel of slack so sub-pixel rounding never wraps the last tile of a row.
    const boxes = justify(this.aspects, width - 0.5, target, gap);
    const tiles = this.list.children;
    for (let i = 0; i < boxes.length; i++) {
      tiles[i].style.width = `${Math.floor(boxes[i].width * 100) / 100}px`;
      tiles[i].style.height = `${Math.floor(boxes[i].height * 100) / 100}px`;
    }
  }

  /** Append one page of results. */
  append(results) {
    const frag = document.createDocumentFragment();
    for (const r of results) {
      const index = this.items.length;
      this.items.push(r);
      this.aspects.push(aspectOf(r));
      frag.append(this.#tile(r, index));
    }
    this.list.append(frag);
    this.list.hidden = this.items.length === 0;
    this.layout();
  }

  tileButton(index) {
    return this.list.children[index]?.querySelector(".tile-open") ?? null;
  }

  focusIndex(index) {
    const btn = this.tileButton(Math.max(0, Math.min(index, this.items.length - 1)));
    if (btn) {
      btn.focus();
      btn.scrollIntoView({ block: "nearest" });
    }
  }

  #tile(r, index) {
    const li = document.createElement("li");
    li.className = "tile";
    li.dataset.id = r.id;
    li.dataset.distance = String(r.distance);
    li.dataset.index = String(index);
    const label = labelOf(r);

    const open = document.createElement("button");
    open.type = "button";
    open.className = "tile-open";
    open.setAttribute("aria-label", `Result ${index + 1}: ${label}, distance ${r.distance}. Open large view`);
    const img = document.createElement("img");
    img.alt = "";
    img.loading = "lazy";
    img.decoding = "async";
    img.addEventListener("load", () => {
      if (!img.naturalWidth || !img.naturalHeight || this.items[index] !== r) return;
      const ar = img.naturalWidth / img.naturalHeight;
      if (Math.abs(ar - this.aspects[index]) > 0.01) {
        this.aspects[index] = ar;
        this.#schedule();
      }
    });
    img.addEventListener("error", () => li.classList.add("broken"), { once: true });
    img.src = apiUrl(r.thumbnail_url || `/v1/images/${encodeURIComponent(r.id)}/thumbnail`);
    open.append(img);

    const dist = document.createElement("span");
    dist.className = "tile-distance";
    dist.title = "Hamming distance (bits)";
    dist.textContent = String(r.distance);
    dist.setAttribute("aria-hidden", "true");

    const similar = document.createElement("button");
    similar.type = "button";
    similar.className = "tile-similar";
    similar.textContent = "Similar";
    similar.setAttribute("aria-label", `Find images similar to result ${index + 1}: ${label}`);

    li.append(open, dist, similar);
    return li;
  }

  #indexOf(el) {
    const li = el.closest(".tile");
    return li ? Number(li.dataset.index) : -1;
  }

  #click(ev) {
    const btn = ev.target.closest("button");
    if (!btn) return;
    const i = this.#indexOf(btn);
    if (i < 0) return;
    if (btn.classList.contains("tile-similar")) this.onSimilar(this.items[i], i);
    else if (btn.classList.contains("tile-open")) this.onOpen(i);
  }

  #keydown(ev) {
    if (ev.altKey || ev.ctrlKey || ev.metaKey) return;
    const i = this.#indexOf(ev.target);
    if (i < 0) return;
    let next = -1;
    switch (ev.key) {
      case "ArrowRight": next = i + 1; break;
      case "ArrowLeft": next = i - 1; break;
      case "ArrowDown": next = this.#vertical(i, +1); break;
      case "ArrowUp": next = this.#vertical(i, -1); break;
      case "Home": next = 0; break;
      case "End": next = this.items.length - 1; break;
      default: return;
    }
    ev.preventDefault();
    if (next >= 0 && next < this.items.length) this.focusIndex(next);
  }

  /** The tile in the next/previous visual row whose centre is nearest horizontally. */
  #vertical(i, dir) {
    const tiles = this.list.children;
    const here = tiles[i].getBoundingClientRect();
    const cx = here.left + here.width / 2;
    let rowTop = null;
    let best = -1;
    let bestDx = Infinity;
    for (let j = i + dir; j >= 0 && j < tiles.length; j += dir) {
      const r = tiles[j].getBoundingClientRect();
      if (Math.abs(r.top - here.top) < 2) continue; // same row
      if (rowTop === null) rowTop = r.top;
      else if (Math.abs(r.top - rowTop) >= 2) break; // went past the adjacent row
      const dx = Math.abs(r.left + r.width / 2 - cx);
      if (dx < bestDx) {
        bestDx = dx;
        best = j;
      }
    }
    return best;
  }
}
