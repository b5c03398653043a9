// What a person can do on a session: a follow-up prompt, cancel (soft or hard), and
// answer a permission request. Every action says what became of it.

import { el, pretty } from "./dom.js";
import { clock } from "./format.js";

/** A status line that says how an action went. */
export function outcomeLine(name) {
  return el("p", { class: "outcome", role: "status", "aria-live": "polite", "data-outcome": name });
}

function report(line, ok, text) {
  line.textContent = text;
  line.classList.toggle("outcome-ok", ok);
  line.classList.toggle("outcome-bad", !ok);
}

async function attempt(line, button, action, describe) {
  button.disabled = true;
  report(line, true, "Sending…");
  try {
    const answer = await action();
    const [ok, text] = describe(answer);
    report(line, ok, text);
  } catch (error) {
    report(line, false, `Failed: ${error.summary || error.message}`);
  } finally {
    button.disabled = false;
  }
}

export function followUpForm(api, sessionId) {
  const prompt = el("textarea", { id: "prompt", name: "prompt", rows: 3, required: true });
  const onBusy = el("select", { id: "on-busy", name: "on_busy" },
    el("option", { value: "enqueue" }, "wait behind it (enqueue)"),
    el("option", { value: "reject" }, "refuse (reject)"),
    el("option", { value: "interrupt" }, "cancel it first (interrupt)"));
  const profile = el("input", { id: "profile", name: "profile", type: "text", placeholder: "default", autocomplete: "off" });
  const send = el("button", { type: "submit" }, "Send");
  const line = outcomeLine("submit");
  const form = el("form", { class: "panel", "aria-label": "Follow-up prompt" },
    el("h2", {}, "Follow-up"),
    el("label", { for: "prompt" }, "Prompt"), prompt,
    el("div", { class: "inline" },
      el("label", { for: "on-busy" }, "If a run is pending"), onBusy,
      el("label", { for: "profile" }, "Profile"), profile),
    send, line);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { prompt: prompt.value, on_busy: onBusy.value };
    if (profile.value.trim()) body.profile = profile.value.trim();
    attempt(line, send, () => api.submit(sessionId, body), (answer) => {
      prompt.value = "";
      return [true, `Queued run ${answer.run_id} (event ${answer.seq})`];
    });
  });
  return form;
}

const CANCEL_TEXT = {
  cancelled_running: "Cancelled the running run",
  cancelled_queued: "Cancelled a queued run",
  already_finished: "The run had already finished",
  nothing_to_cancel: "Nothing to cancel",
  owner_unreachable: "The worker did not confirm in time",
};

export function cancelPanel(api, sessionId) {
  const grace = el("input", { id: "grace", type: "number", min: 0, max: 600, step: 1, value: 10, inputmode: "numeric" });
  const soft = el("button", { type: "button", id: "cancel-soft" }, "Soft cancel");
  const hard = el("button", { type: "button", id: "cancel-hard", class: "danger" }, "Cancel now");
  const line = outcomeLine("cancel");
  const run = (button, graceS) => attempt(line, button,
    () => api.cancel(sessionId, { wait: true, grace_s: graceS }),
    (answer) => [answer.outcome !== "owner_unreachable", `${CANCEL_TEXT[answer.outcome] || answer.outcome}${answer.run_id ? ` (${answer.run_id})` : ""}`]);
  soft.addEventListener("click", () => run(soft, Math.max(0, Number(grace.value) || 0)));
  hard.addEventListener("click", () => run(hard, 0));
  return el("div", { class: "panel", role: "group", "aria-label": "Cancel" },
    el("h2", {}, "Cancel"),
    el("div", { class: "inline" }, el("label", { for: "grace" }, "Grace (s)"), grace, soft, hard),
    el("p", { class: "muted small" }, "Soft: the turn is asked to end and killed only after the grace period. Now: the process tree is killed at once."),
    line);
}

const ANSWER_TEXT = {
  delivered: "Delivered to the run",
  already_decided: "Too late: it was already decided",
  unknown_request: "The run has no such request",
  run_not_running: "The run is no longer running",
};

/** A card for one open permission request: tool, input, expiry, Allow / Deny. The
 * outcome goes to `line`, which outlives the card (it goes once the request is decided). */
export function requestCard(api, sessionId, row, canAnswer, line) {
  const data = row.data;
  const id = `msg-${String(data.request_id).replace(/[^\w-]/g, "")}`;
  const message = el("input", { id, type: "text", autocomplete: "off", placeholder: "optional" });
  const allow = el("button", { type: "button", class: "allow" }, "Allow");
  const deny = el("button", { type: "button", class: "danger" }, "Deny");
  const answer = (button, allowIt) => attempt(line, button, () => {
    const body = { allow: allowIt, run_id: row.run.runId };
    if (message.value.trim()) body.message = message.value.trim();
    return api.answer(sessionId, data.request_id, body);
  }, (result) => [result.outcome === "delivered", `${allowIt ? "Allow" : "Deny"}: ${ANSWER_TEXT[result.outcome] || result.outcome}`]);
  allow.addEventListener("click", () => answer(allow, true));
  deny.addEventListener("click", () => answer(deny, false));
  const left = el("span", { class: "expiry", "data-expires": String(data.expires_at) }, "");
  return el("section", { class: "request-card", role: "region", "aria-label": `Permission request for ${data.tool_name}`, "data-request": String(data.request_id) },
    el("h2", {}, "Claude asks to use ", el("code", {}, String(data.tool_name ?? "?"))),
    data.description ? el("p", {}, String(data.description)) : null,
    el("pre", { class: "code" }, pretty(data.input ?? {})),
    el("p", { class: "muted" }, `Expires ${clock(data.expires_at)} `, left),
    canAnswer
      ? el("div", { class: "inline" }, el("label", { for: id }, "Message"), message, allow, deny)
      : el("p", { class: "muted" }, "Your credential may not answer requests."));
}

/** Update every card's time left. */
export function tickExpiries(root, now = Date.now() / 1000) {
  for (const node of root.querySelectorAll(".expiry")) {
    const left = Number(node.dataset.expires) - now;
    node.textContent = Number.isFinite(left) ? (left > 0 ? `(in ${Math.ceil(left)} s)` : "(expired)") : "";
  }
}
