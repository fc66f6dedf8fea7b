// Duplicates view: groups of near-duplicate images (GET /v1/duplicates), each side by side
// with the suggested keeper first, and a delete button per image (DELETE /v1/images/{id},
// sent with the API key like every other write).

import { apiUrl, describeError, request } from "./api.js";

const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

export class DuplicatesView {
  constructor(ui, { onDeleted } = {}) {
    this.ui = ui; // { form, distance, status, error, list, moreButton }
    this.onDeleted = onDeleted || (() => {});
    this.nextOffset = null;
    this.distance = 8;
    ui.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      if (!ui.form.checkValidity()) {
        ui.form.reportValidity();
        return;
      }
      this.load(false);
    });
    ui.moreButton.addEventListener("click", () => this.load(true));
  }

  async load(more) {
    const ui = this.ui;
    if (!more) {
      this.distance = Number.parseInt(ui.distance.value, 10);
      this.nextOffset = 0;
      ui.list.replaceChildren();
    }
    ui.error.hidden = true;
    ui.status.textContent = "Looking for near-duplicates…";
    ui.moreButton.hidden = true;
    let body;
    try {
      body = await request("GET", `v1/duplicates?max_distance=${this.distance}&offset=${this.nextOffset}&limit=20`);
    } catch (err) {
      ui.status.textContent = "";
      ui.error.textContent = describeError(err);
      ui.error.hidden = false;
      return;
    }
    for (const g of body.groups) ui.list.append(this.group(g));
    this.nextOffset = body.next_offset;
    ui.moreButton.hidden = body.next_offset === null;
    ui.status.textContent = body.total === 0
      ? `No near-duplicates within ${body.max_distance} bits.`
      : `${body.total} group${body.total === 1 ? "" : "s"}, ${body.images} images within ${body.max_distance} bits (${Math.round(body.took_ms)} ms).`;
  }

  group(g) {
    const li = el("li", "dup-group");
    li.dataset.keeper = g.keeper;
    const head = el("p", "dup-head", `${g.members.length} images`);
    li.append(head);
    const row = el("div", "dup-row");
    for (const m of g.members) row.append(this.member(m, g, li));
    li.append(row);
    return li;
  }

  member(m, g, groupEl) {
    const fig = el("figure", "dup-member");
    fig.dataset.id = m.id;
    const img = el("img");
    img.src = apiUrl(m.thumbnail_url || `/v1/images/${encodeURIComponent(m.id)}/thumbnail`);
    img.alt = m.source || m.id;
    img.loading = "lazy";
    fig.append(img);
    const cap = el("figcaption");
    const meta = m.metadata || {};
    const size = meta.width && meta.height ? `${meta.width}×${meta.height}` : "";
    if (m.id === g.keeper) cap.append(el("strong", "dup-keep", "Keep"));
    else cap.append(el("span", "dup-distance", `${m.distance} bits`));
    cap.append(el("span", "dup-id", m.source || m.id));
    if (size) cap.append(el("span", "dup-size", size));
    const del = el("button", "secondary dup-delete", "Delete");
    del.type = "button";
    del.setAttribute("aria-label", `Delete ${m.source || m.id}`);
    del.addEventListener("click", () => this.remove(m.id, fig, groupEl, del));
    cap.append(del);
    fig.append(cap);
    return fig;
  }

  async remove(id, fig, groupEl, button) {
    button.disabled = true;
    try {
      await request("DELETE", `v1/images/${encodeURIComponent(id)}`);
    } catch (err) {
      button.disabled = false;
      this.ui.error.textContent = describeError(err);
      this.ui.error.hidden = false;
      return;
    }
    fig.remove();
    if (groupEl.querySelectorAll(".dup-member").length < 2) groupEl.remove();
    else groupEl.querySelector(".dup-head").textContent = `${groupEl.querySelectorAll(".dup-member").length} images`;
    this.ui.status.textContent = `Deleted ${id}.`;
    this.onDeleted(id);
  }
}
