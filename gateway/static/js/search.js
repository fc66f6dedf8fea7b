// Search state: the current query, offset paging with next_offset, infinite scroll and the
// status line (time taken, candidates). The first page of an image or URL query sends the
// image; later pages reuse the code the server returned, so the image is encoded once.

import { ApiError, apiUrl, describeError, search } from "./api.js";
import { labelOf } from "./gallery.js";

const nf = new Intl.NumberFormat();

export class SearchController {
  constructor(els, { gallery, controls, getIndexCount }) {
    this.els = els;
    this.gallery = gallery;
    this.controls = controls;
    this.getIndexCount = getIndexCount;
    this.query = null; // {kind: "file"|"url"|"id"|"code"|"text", value, label, preview}
    this.pageBody = null; // JSON body for the next pages (without offset)
    this.nextOffset = null;
    this.loading = null; // promise of the request in flight
    this.abort = null;
    this.seq = 0;
    this.last = null;
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.loadMore();
    }, { rootMargin: "0px 0px 600px 0px" });
    this.observer.observe(els.more);
    els.moreButton.addEventListener("click", () => this.loadMore());
    this.gallery.hasMore = false;
  }

  /** Start a new search. query: {kind, value, label?, preview?}. */
  async run(query) {
    this.abort?.abort();
    const seq = ++this.seq;
    this.query = query;
    this.pageBody = null;
    this.nextOffset = null;
    this.gallery.hasMore = false;
    this.#showQuery(query);
    this.#setError(null);
    this.els.results.setAttribute("aria-busy", "true");
    this.#status("Searching…");
    this.els.moreButton.hidden = true;

    const { k, maxDistance, strategy, filter } = this.controls();
    const opts = { k };
    if (maxDistance !== null) opts.max_distance = maxDistance;
    if (strategy) opts.strategy = strategy;
    if (filter) opts.filter = filter;
    let body;
    if (query.kind === "file") {
      body = new FormData();
      body.append("file", query.value, query.value.name || "query");
      for (const [key, v] of Object.entries(opts)) {
        body.append(key, typeof v === "object" ? JSON.stringify(v) : String(v));
      }
    } else {
      body = { [query.kind]: query.value, ...opts };
    }
    this.abort = new AbortController();
    const p = search(body, { signal: this.abort.signal });
    this.loading = p;
    try {
      const data = await p;
      if (seq !== this.seq) return;
      this.gallery.clear();
      this.els.empty.hidden = true;
      this.#accept(data, opts, query);
      this.#reveal();
    } catch (err) {
      if (seq !== this.seq || err.name === "AbortError") return;
      this.gallery.clear();
      this.els.empty.hidden = true;
      this.#setError(err);
      this.#status("");
    } finally {
      if (seq === this.seq) {
        this.loading = null;
        this.els.results.removeAttribute("aria-busy");
      }
    }
  }

  /** Fetch the next page, if any; resolves when it is shown. */
  async loadMore() {
    if (this.loading) return this.loading.catch(() => {});
    if (this.nextOffset === null || !this.pageBody) return undefined;
    const seq = this.seq;
    const body = { ...this.pageBody, offset: this.nextOffset };
    this.els.moreButton.disabled = true;
    this.#status(`${this.#summary()} Loading more…`);
    this.abort = new AbortController();
    const p = search(body, { signal: this.abort.signal });
    this.loading = p;
    try {
      const data = await p;
      if (seq !== this.seq) return undefined;
      this.#setError(null);
      this.#accept(data, this.pageBody, this.query);
    } catch (err) {
      if (seq !== this.seq || err.name === "AbortError") return undefined;
      this.#setError(err, "Could not load more results");
      this.#status(this.#summary());
    } finally {
      if (seq === this.seq) this.loading = null;
      this.els.moreButton.disabled = false;
    }
    return undefined;
  }

  #accept(data, opts, query) {
    const results = Array.isArray(data.results) ? data.results : [];
    this.last = data;
    // words alone rank by label score: every distance is 0, which says nothing
    this.gallery.list.classList.toggle("by-words", data.strategy === "words");
    this.gallery.append(results);
    this.nextOffset = Number.isInteger(data.next_offset) ? data.next_offset : null;
    this.gallery.hasMore = this.nextOffset !== null;
    if (!this.pageBody) {
      const q = data.query || {};
      const base = { k: opts.k };
      if (opts.max_distance !== undefined) base.max_distance = opts.max_distance;
      if (opts.strategy) base.strategy = opts.strategy;
      if (opts.filter) base.filter = opts.filter;
      if (query.kind === "id") this.pageBody = { id: query.value, ...base };
      else if (q.code) this.pageBody = { code: q.code, ...(q.short ? { short: q.short } : {}), ...base };
      else if (query.kind === "text") this.pageBody = { text: query.value, ...base };
      else if (query.kind !== "file") this.pageBody = { [query.kind]: query.value, ...base };
      else this.nextOffset = null; // cannot page without re-sending: server gave no code
    }
    this.els.moreButton.hidden = this.nextOffset === null;
    if (this.gallery.items.length === 0) this.#showNoResults(opts);
    this.#status(this.#summary());
    // IntersectionObserver only reports changes: re-observe so a sentinel that is still
    // visible (short page, tall screen) triggers the next page too.
    if (this.nextOffset !== null) {
      this.observer.unobserve(this.els.more);
      this.observer.observe(this.els.more);
    }
  }

  /** Bring the results heading into view when a new search starts off-screen (phones,
   *  or "Similar" clicked far down the gallery). */
  #reveal() {
    const heading = this.els.results.querySelector("h2");
    const r = heading.getBoundingClientRect();
    if (r.top < 0 || r.bottom > window.innerHeight) {
      const smooth = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;
      heading.scrollIntoView({ block: "start", behavior: smooth ? "smooth" : "auto" });
    }
  }

  #summary() {
    const d = this.last;
    if (!d) return "";
    const shown = this.gallery.items.length;
    const total = Number.isFinite(d.total) ? d.total : shown;
    const parts = [`${nf.format(shown)} of ${nf.format(total)} results`];
    if (Number.isFinite(d.candidates)) parts.push(`${nf.format(d.candidates)} candidates`);
    if (Number.isFinite(d.took_ms)) parts.push(`${d.took_ms < 10 ? d.took_ms.toFixed(1) : Math.round(d.took_ms)} ms`);
    if (d.strategy) parts.push(d.strategy.replace("_", "-"));
    return `${parts.join(" · ")}.${d.hint ? ` ${d.hint}` : ""}`;
  }

  #status(text) {
    this.els.status.textContent = text;
  }

  #showNoResults(opts) {
    const empty = this.els.empty;
    const count = this.getIndexCount();
    let text;
    if (count === 0) text = "The index is empty: add images under “Add images”, then search again.";
    else if (opts.max_distance !== undefined) {
      text = `No images within distance ${opts.max_distance}. Try a larger maximum distance.`;
    } else text = "No similar images found.";
    if (this.last && this.last.strategy === "two_stage" && count !== 0) {
      text += " Two-stage search only looks at near neighbours: Strategy “Exact” ranks every image.";
    }
    const p = document.createElement("p");
    p.textContent = text;
    empty.replaceChildren(p);
    empty.hidden = false;
  }

  #setError(err, prefix = "Search failed") {
    const box = this.els.error;
    if (!err) {
      box.hidden = true;
      box.textContent = "";
      return;
    }
    box.textContent = `${prefix}: ${describeError(err)}`;
    box.dataset.code = err instanceof ApiError ? err.code : "error";
    box.hidden = false;
  }

  #showQuery(query) {
    const { figure, image, caption } = this.els.query;
    if (this.previewUrl) URL.revokeObjectURL(this.previewUrl);
    this.previewUrl = null;
    let src = query.preview || null;
    if (query.kind === "file") src = this.previewUrl = URL.createObjectURL(query.value);
    else if (query.kind === "url") src = query.value;
    figure.hidden = !src;
    // A URL the browser cannot load, or a file that is not an image: the caption alone,
    // not a broken-image icon.
    figure.classList.remove("broken");
    image.onerror = () => figure.classList.add("broken");
    if (src) image.src = query.kind === "id" ? apiUrl(src) : src;
    caption.textContent = query.label || (query.kind === "file" ? query.value.name || "Pasted image" : labelOf({ id: query.value, source: query.value }));
  }
}
