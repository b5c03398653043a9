// /ui/sessions/{id}: one session as a conversation, followed live.

import { cancelPanel, followUpForm, outcomeLine, requestCard, tickExpiries } from "./actions.js";
import { clear, el } from "./dom.js";
import { count, duration } from "./format.js";
import { Conversation } from "./model.js";
import { RowList } from "./rowlist.js";
import { statusBadge } from "./rows.js";
import { EventStream } from "./stream.js";

const POLL_MS = 2000;

function elapsedText(seconds) {
  const whole = Math.max(0, Math.round(seconds));
  return whole < 60 ? `${whole} s` : duration(whole);
}
const TICK_MS = 1000;

export function conversationPage(main, api, credentials, sessionId, onAuthError) {
  const conversation = new Conversation();
  const rows = new RowList(conversation);
  const state = el("span", { id: "session-state" }, statusBadge("…"));
  const live = el("span", { id: "live", class: "live", "aria-live": "polite" }, "connecting");
  const elapsed = el("span", { id: "elapsed" });
  const position = el("span", { id: "queue-position" });
  const events = el("span", { id: "event-count", class: "muted" });
  const problem = el("p", { id: "problem", class: "problem", role: "alert", hidden: true });
  const requests = el("div", { id: "requests", class: "requests", role: "region", "aria-label": "Pending permission requests", "aria-live": "polite" });
  const answered = outcomeLine("answer");
  const streaming = el("div", { id: "streaming", class: "streaming", "aria-live": "off", hidden: true });
  const follow = el("label", { class: "follow" }, el("input", { type: "checkbox", id: "follow", checked: true }), " Follow new events");
  let openIds = "";
  let detail = null;

  clear(main).append(
    el("h1", {}, "Session ", el("code", {}, sessionId)),
    el("p", { class: "bar" }, state, " ", live, " ", elapsed, " ", position, " ", events),
    problem, requests, answered, rows.element, streaming,
    credentials.can("submit") ? followUpForm(api, sessionId) : null,
    credentials.can("cancel") ? cancelPanel(api, sessionId) : null,
    follow,
  );

  function showProblem(text) {
    problem.hidden = !text;
    problem.textContent = text || "";
  }

  function redrawStatus() {
    const current = conversation.currentRun;
    const now = Date.now() / 1000;
    // The stream is fresher than the last poll: a run it saw start is running.
    let sessionState = detail ? detail.state : "idle";
    if (current) sessionState = current.startedTs ? "running" : "queued";
    state.replaceChildren(statusBadge(sessionState));
    if (current && current.startedTs) elapsed.textContent = `running for ${elapsedText(now - current.startedTs)}`;
    else if (current) elapsed.textContent = `queued for ${elapsedText(now - current.queuedTs)}`;
    else elapsed.textContent = "";
    const place = sessionState === "queued" && detail ? detail.queue_position : null;
    position.textContent = sessionState !== "queued" ? "" : typeof place === "number" ? `· queue position ${place + 1}` : "· waiting for its turn";
    events.textContent = `· ${count(conversation.seqs)} events`;
    tickExpiries(requests);
  }

  function redrawRequests() {
    const open = conversation.openRequests();
    const ids = open.map((row) => row.data.request_id).join(" ");
    if (ids === openIds) return;
    openIds = ids;
    requests.replaceChildren(...open.map((row) => requestCard(api, sessionId, row, credentials.can("approve"), answered)));
  }

  function redraw() {
    const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    rows.flush();
    const current = conversation.currentRun;
    streaming.hidden = !(current && current.streaming);
    streaming.textContent = current ? current.streaming : "";
    redrawRequests();
    redrawStatus();
    if (atBottom && document.getElementById("follow").checked) window.scrollTo(0, document.body.scrollHeight);
  }

  let scheduled = false;
  const stream = new EventStream({
    url: () => api.eventsUrl(sessionId),
    headers: () => api.headers(),
    onEvents(batch) {
      for (const envelope of batch) conversation.apply(envelope);
      if (!scheduled) {
        scheduled = true;
        requestAnimationFrame(() => {
          scheduled = false;
          redraw();
        });
      }
    },
    onState(streamState, text, status) {
      live.dataset.state = streamState;
      live.textContent = { connecting: "connecting…", live: "● live", reconnecting: "reconnecting…", failed: "not following" }[streamState] || streamState;
      if (streamState === "failed") {
        if (status === 401) onAuthError();
        showProblem(`Cannot follow this session: ${text}`);
      } else if (streamState === "live") {
        showProblem("");
      }
    },
  });

  async function poll() {
    try {
      detail = await api.session(sessionId);
      redrawStatus();
    } catch (error) {
      if (error.status === 401) {
        stop();
        onAuthError();
        return;
      }
      if (error.status !== 404) showProblem(`Cannot read this session: ${error.summary}`);
    }
  }

  const timers = [setInterval(poll, POLL_MS), setInterval(redrawStatus, TICK_MS)];
  function stop() {
    stream.stop();
    timers.forEach(clearInterval);
  }
  poll();
  stream.start();
  return stop;
}
