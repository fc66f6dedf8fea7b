// Filter chips: "search within a subset". Each chip is one clause of the search's `filter`
// (docs/API.md); chips on the same keyword field are any-of, different fields are AND.

const FIELDS = {
  album: { label: "Album", kind: "keyword" },
  tags: { label: "Tag", kind: "keyword" },
  labels: { label: "Label", kind: "keyword" },
  format: { label: "Format", kind: "keyword" },
  source: { label: "Source", kind: "keyword" },
  taken_from: { field: "taken_at", op: "gte", label: "Taken from", kind: "date" },
  taken_until: { field: "taken_at", op: "lte", label: "Taken until", kind: "date" },
  min_width: { field: "width", op: "gte", label: "Min. width", kind: "number" },
  min_height: { field: "height", op: "gte", label: "Min. height", kind: "number" },
};

export class FilterChips {
  constructor({ form, field, value, list }, onChange) {
    this.chips = []; // { key, value }
    this.list = list;
    this.onChange = onChange;
    for (const [key, f] of Object.entries(FIELDS)) {
      const opt = document.createElement("option");
      opt.value = key;
      opt.textContent = f.label;
      field.append(opt);
    }
    const syncType = () => {
      const kind = FIELDS[field.value].kind;
      value.type = kind === "number" ? "number" : kind === "date" ? "date" : "text";
    };
    field.addEventListener("change", syncType);
    syncType();
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const v = value.value.trim();
      if (!v) return;
      this.add(field.value, v);
      value.value = "";
    });
  }

  add(key, value) {
    const f = FIELDS[key];
    if (f.kind !== "keyword") this.chips = this.chips.filter((c) => c.key !== key); // one bound each
    if (!this.chips.some((c) => c.key === key && c.value === value)) this.chips.push({ key, value });
    this.render();
    this.onChange();
  }

  render() {
    this.list.replaceChildren();
    for (const chip of this.chips) {
      const li = document.createElement("li");
      li.className = "chip";
      li.dataset.key = chip.key;
      li.dataset.value = chip.value;
      li.append(`${FIELDS[chip.key].label}: ${chip.value}`);
      const x = document.createElement("button");
      x.type = "button";
      x.className = "chip-remove";
      x.textContent = "✕";
      x.setAttribute("aria-label", `Remove filter ${FIELDS[chip.key].label} ${chip.value}`);
      x.addEventListener("click", () => {
        this.chips = this.chips.filter((c) => c !== chip);
        this.render();
        this.onChange();
      });
      li.append(x);
      this.list.append(li);
    }
  }

  /** The search's `filter` object, or null without chips. */
  value() {
    if (!this.chips.length) return null;
    const out = {};
    for (const { key, value } of this.chips) {
      const f = FIELDS[key];
      const name = f.field || key;
      if (f.kind === "keyword") {
        out[name] = [...(out[name] || []), value];
      } else {
        const v = f.kind === "number" ? Number(value) : value;
        out[name] = { ...(out[name] || {}), [f.op]: v };
      }
    }
    return out;
  }
}
