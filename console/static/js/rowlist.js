// The conversation's rows, windowed: only the last `limit` rows are in the DOM (a
// button shows earlier ones, a page at a time), so 10,000 events keep the page light.
// The page calls flush() once per animation frame, however many events arrived.

import { el } from "./dom.js";
import { renderRow } from "./rows.js";

export const PAGE_ROWS = 200;

export class RowList {
  constructor(conversation) {
    this.conversation = conversation;
    this.limit = PAGE_ROWS;
    this.from = 0; // rows[from, to) are rendered
    this.to = 0;
    this.nodes = new Map(); // row -> node
    this.earlier = el("button", { type: "button", class: "earlier", hidden: true, onclick: () => this.showEarlier() }, "");
    this.list = el("div", { class: "rows" });
    this.element = el("div", { class: "conversation" }, this.earlier, this.list);
  }

  showEarlier() {
    this.limit += PAGE_ROWS;
    this.flush();
  }

  flush() {
    const rows = this.conversation.rows;
    const length = rows.length;
    const start = Math.max(0, length - this.limit);
    for (let i = this.from; i < Math.min(start, this.to); i += 1) this.drop(rows[i]);
    if (start < this.from && this.to > this.from) {
      const before = document.createDocumentFragment();
      for (let i = start; i < this.from; i += 1) before.append(this.make(rows[i]));
      this.list.prepend(before);
    }
    const after = document.createDocumentFragment();
    for (let i = Math.max(this.to, start); i < length; i += 1) after.append(this.make(rows[i]));
    this.list.append(after);
    this.from = start;
    this.to = length;
    for (const row of this.conversation.dirty) {
      const old = this.nodes.get(row);
      if (old) {
        const open = old.tagName === "DETAILS" && old.open;
        const fresh = this.make(row);
        if (open) fresh.open = true;
        old.replaceWith(fresh);
      }
    }
    this.conversation.dirty.clear();
    this.earlier.hidden = start === 0;
    this.earlier.textContent = `Show earlier events (${start.toLocaleString("en")} hidden)`;
  }

  make(row) {
    const node = renderRow(row);
    this.nodes.set(row, node);
    return node;
  }

  drop(row) {
    const node = this.nodes.get(row);
    if (node) node.remove();
    this.nodes.delete(row);
  }
}
