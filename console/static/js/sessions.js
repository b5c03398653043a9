// /ui/: the session list, with a filter, refreshed every few seconds.

import { clear, el } from "./dom.js";
import { ago, clock, cost, count, duration } from "./format.js";
import { statusBadge } from "./rows.js";

const POLL_MS = 2000;

export function sessionsPage(main, api, onAuthError) {
  const filter = el("input", { id: "filter", type: "search", placeholder: "session id contains…", autocomplete: "off" });
  const stateFilter = el("select", { id: "state-filter" },
    el("option", { value: "" }, "any state"),
    el("option", { value: "running" }, "running"),
    el("option", { value: "queued" }, "queued"),
    el("option", { value: "idle" }, "idle"));
  const body = el("tbody", { id: "sessions" });
  const status = el("p", { id: "list-status", class: "muted", role: "status" }, "Loading…");
  const rows = new Map(); // session id -> tr
  let sessions = [];

  clear(main).append(
    el("h1", {}, "Sessions"),
    el("div", { class: "inline filters" }, el("label", { for: "filter" }, "Filter"), filter, el("label", { for: "state-filter" }, "State"), stateFilter),
    el("div", { class: "table-wrap" },
      el("table", {},
        el("thead", {}, el("tr", {}, ...["Session", "State", "Last activity", "Last run", "Duration", "Cost", "Events"].map((h) => el("th", { scope: "col" }, h)))),
        body)),
    status,
  );

  function row(session) {
    let tr = rows.get(session.session_id);
    if (!tr) {
      const link = el("a", { href: `sessions/${encodeURIComponent(session.session_id)}` }, session.session_id);
      tr = el("tr", { "data-session": session.session_id }, el("th", { scope: "row" }, link), ...Array.from({ length: 6 }, () => el("td")));
      rows.set(session.session_id, tr);
    }
    const cells = tr.children;
    const last = session.last_run || {};
    cells[1].replaceChildren(statusBadge(session.state));
    cells[2].textContent = ago(session.last_activity);
    cells[2].title = clock(session.last_activity);
    cells[3].replaceChildren(last.status ? statusBadge(last.status) : "—");
    cells[4].textContent = duration(last.duration_s);
    cells[5].textContent = cost(last.cost_usd);
    cells[6].textContent = count(session.events);
    return tr;
  }

  function redraw() {
    const text = filter.value.trim().toLowerCase();
    const wanted = stateFilter.value;
    const shown = sessions.filter((s) => (!text || s.session_id.toLowerCase().includes(text)) && (!wanted || s.state === wanted));
    const trs = shown.map(row);
    const current = [...body.children];
    if (trs.length !== current.length || trs.some((tr, i) => tr !== current[i])) body.replaceChildren(...trs);
    status.textContent = `${shown.length} of ${sessions.length} sessions · updated ${new Date().toLocaleTimeString()}`;
  }

  async function poll() {
    try {
      sessions = (await api.sessions()).sessions;
      redraw();
    } catch (error) {
      if (error.status === 401) {
        stop();
        onAuthError();
        return;
      }
      status.textContent = `Cannot list sessions: ${error.summary}`;
    }
  }

  filter.addEventListener("input", redraw);
  stateFilter.addEventListener("change", redraw);
  const timer = setInterval(poll, POLL_MS);
  function stop() {
    clearInterval(timer);
  }
  poll();
  return stop;
}
