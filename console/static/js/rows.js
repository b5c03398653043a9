// One row of a conversation as DOM (built from text only; see dom.js).

import { el, pretty } from "./dom.js";
import { clock, cost, count, duration, shortId } from "./format.js";
import { renderMarkdown } from "./markdown.js";

const RESULT_PREVIEW_CHARS = 20000; // a longer tool result is cut (the rest is in the log)

export function renderRow(row) {
  const node = RENDERERS[row.kind](row);
  node.dataset.seq = String(row.seq);
  if (row.block !== undefined) node.dataset.block = String(row.block);
  node.classList.add("row", `row-${row.kind}`);
  return node;
}

export function statusBadge(status) {
  return el("span", { class: `badge status-${String(status).replace(/[^a-z_]/g, "")}` }, String(status));
}

const RENDERERS = {
  run(row) {
    const run = row.run;
    return el(
      "section",
      { "aria-label": `Run ${shortId(run.runId)}` },
      el("h2", { class: "run-title" }, "Run ", el("code", {}, shortId(run.runId)), " ", statusBadge(run.status),
        run.profile ? el("span", { class: "muted" }, ` profile ${run.profile}`) : null,
        run.warm ? el("span", { class: "muted" }, " warm") : null),
      el("div", { class: "prompt" },
        el("span", { class: "label" }, "Prompt"),
        el("p", { class: "prompt-text" }, run.prompt ?? "(not recorded)")),
    );
  },
  text(row) {
    if (row.role === "user") return el("div", { class: "user-text" }, el("span", { class: "label" }, "User"), el("p", {}, row.text));
    return el("div", { class: "answer" }, renderMarkdown(row.text));
  },
  thinking(row) {
    return el("details", { class: "thinking" }, el("summary", {}, "Thinking"), el("p", { class: "pre" }, row.text));
  },
  tool(row) {
    const result = row.result;
    const state = result ? (result.isError ? "error" : "done") : "waiting";
    return el(
      "details",
      { class: `tool tool-${state}` },
      el("summary", {}, el("span", { class: "label" }, "Tool"), " ", el("code", {}, row.name),
        " ", el("span", { class: "muted" }, result ? (result.isError ? "failed" : "result") : "no result yet")),
      el("h3", { class: "sub" }, "Input"),
      el("pre", { class: "code" }, pretty(row.input ?? {})),
      result ? [el("h3", { class: "sub" }, result.isError ? "Error" : "Result"), el("pre", { class: "code" }, resultText(result.content))] : null,
    );
  },
  tool_result(row) {
    return el("details", { class: "tool" }, el("summary", {}, "Tool result"), el("pre", { class: "code" }, resultText(row.result.content)));
  },
  note(row) {
    return el("div", { class: `note note-${row.level}`, role: row.level === "error" ? "alert" : null },
      el("strong", {}, row.title), row.detail ? el("span", { class: row.mono ? "mono" : "" }, ` ${row.detail}`) : null);
  },
  request(row) {
    const data = row.data;
    const decision = row.decision;
    const open = !decision && !row.run.finished;
    return el("div", { class: `request ${open ? "request-open" : ""}` },
      el("strong", {}, "Permission request: "), el("code", {}, String(data.tool_name ?? "?")),
      data.description ? el("span", {}, ` ${data.description}`) : null,
      el("pre", { class: "code" }, pretty(data.input ?? {})),
      decision
        ? el("p", { class: `decision decision-${decision.behavior === "allow" ? "allow" : "deny"}` },
            `${decision.behavior === "allow" ? "Allowed" : "Denied"} by ${decision.decided_by ?? "?"} (${decision.reason ?? "answered"})`,
            decision.message ? `: ${decision.message}` : "")
        : el("p", { class: "muted" }, open ? `Waiting for an answer (expires ${clock(data.expires_at)})` : "Not answered"));
  },
  result(row) {
    const data = row.data;
    const usage = data.usage && typeof data.usage === "object" ? data.usage : {};
    return el("div", { class: `stats ${data.is_error ? "stats-error" : ""}` },
      el("strong", {}, data.is_error ? "Result (error)" : "Result"),
      ` · ${count(data.num_turns)} turns · ${count(usage.input_tokens)} tokens in / ${count(usage.output_tokens)} out · ${cost(data.total_cost_usd)} · ${duration((data.duration_ms ?? NaN) / 1000)}`,
      data.is_error && data.result ? el("p", {}, String(data.result)) : null);
  },
  finished(row) {
    const data = row.data;
    return el("div", { class: "finished" }, el("strong", {}, "Finished "), statusBadge(data.status ?? "?"),
      ` after ${duration(data.duration_s)}`,
      data.exit_code !== null && data.exit_code !== undefined ? ` · exit ${data.exit_code}` : "",
      data.kept_warm ? " · kept warm" : "",
      data.reason ? el("span", { class: "muted" }, ` · ${data.reason}`) : null,
      data.stderr_tail ? el("pre", { class: "code" }, String(data.stderr_tail)) : null);
  },
};

function resultText(content) {
  let text;
  if (Array.isArray(content)) {
    text = content.map((part) => (part && part.type === "text" ? String(part.text ?? "") : pretty(part))).join("\n");
  } else {
    text = pretty(content ?? "");
  }
  return text.length > RESULT_PREVIEW_CHARS ? `${text.slice(0, RESULT_PREVIEW_CHARS)}\n… (${text.length - RESULT_PREVIEW_CHARS} more characters)` : text;
}
