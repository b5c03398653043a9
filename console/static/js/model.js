// A session's envelopes folded into what the page shows: runs, and a flat list of rows
// (a run's header, each content block, tool calls with their results, notes, permission
// requests, stats). Pure data: no DOM here.

export class Conversation {
  constructor() {
    this.rows = [];
    this.dirty = new Set(); // rows changed after they were added
    this.runs = new Map(); // run_id -> run
    this.tools = new Map(); // tool_use_id -> tool row
    this.requests = new Map(); // request_id -> request row
    this.lastSeq = 0;
    this.seqs = 0; // envelopes applied
  }

  get currentRun() {
    let last = null;
    for (const run of this.runs.values()) if (!run.finished) last = last || run;
    return last;
  }

  get lastRun() {
    let last = null;
    for (const run of this.runs.values()) last = run;
    return last;
  }

  /** Requests nobody decided yet, of runs still going, soonest expiry first. */
  openRequests() {
    return [...this.requests.values()]
      .filter((row) => !row.decision && !row.run.finished)
      .sort((a, b) => (a.data.expires_at || 0) - (b.data.expires_at || 0));
  }

  add(row) {
    this.rows.push(row);
    return row;
  }

  touch(row) {
    if (row) this.dirty.add(row);
  }

  run(envelope) {
    let run = this.runs.get(envelope.run_id);
    if (!run) {
      run = { runId: envelope.run_id, status: "queued", queuedTs: envelope.ts, streaming: "" };
      this.runs.set(envelope.run_id, run);
      run.header = this.add({ kind: "run", seq: envelope.seq, run });
    }
    return run;
  }

  apply(envelope) {
    this.lastSeq = envelope.seq;
    this.seqs += 1;
    const run = this.run(envelope);
    const data = envelope.data && typeof envelope.data === "object" ? envelope.data : {};
    const base = { seq: envelope.seq, ts: envelope.ts, run };
    switch (envelope.type) {
      case "queued":
        run.prompt = typeof data.prompt === "string" ? data.prompt : null;
        run.profile = data.profile;
        run.queuedTs = envelope.ts;
        this.touch(run.header);
        break;
      case "started":
        run.status = "running";
        run.startedTs = envelope.ts;
        run.worker = data.worker;
        run.warm = Boolean(data.warm);
        this.touch(run.header);
        break;
      case "init":
        this.add({ ...base, kind: "note", level: "info", title: "CLI started", detail: `model ${data.model || "?"} · cwd ${data.cwd || "?"}` });
        break;
      case "message":
        this.message(base, data);
        break;
      case "stream_event":
        this.streamEvent(run, data);
        break;
      case "result":
        run.result = data;
        this.add({ ...base, kind: "result", data });
        break;
      case "error":
        this.add({ ...base, kind: "note", level: "error", title: `Error: ${data.code || "unknown"}`, detail: data.message || "" });
        break;
      case "retry":
        this.add({ ...base, kind: "note", level: "warn", title: `Retry ${data.attempt ?? "?"} of ${data.max_retries ?? "?"}`, detail: [data.error_status, data.error, data.retry_delay_ms != null ? `in ${data.retry_delay_ms} ms` : null].filter((x) => x !== null && x !== undefined).join(" · ") });
        break;
      case "rate_limit":
        this.add({ ...base, kind: "note", level: "warn", title: `Rate limit: ${data.status || "?"}`, detail: data.limit_type || "" });
        break;
      case "interrupted":
        this.add({ ...base, kind: "note", level: "warn", title: "Interrupted", detail: data.reason || "" });
        break;
      case "text":
        this.add({ ...base, kind: "note", level: "info", title: "Output line", detail: data.text || "", mono: true });
        break;
      case "permission_request": {
        const row = this.add({ ...base, kind: "request", data, decision: null });
        this.requests.set(data.request_id, row);
        break;
      }
      case "permission_decision": {
        const row = this.requests.get(data.request_id);
        if (row) {
          row.decision = data;
          this.touch(row);
        } else {
          this.add({ ...base, kind: "note", level: "info", title: "Permission decision", detail: `${data.behavior} (${data.reason || ""})` });
        }
        break;
      }
      case "finished":
        run.finished = data;
        run.status = String(data.status || "finished");
        run.finishedTs = envelope.ts;
        run.streaming = "";
        this.add({ ...base, kind: "finished", data });
        for (const row of this.requests.values()) if (row.run === run) this.touch(row);
        this.touch(run.header);
        break;
      default:
        this.add({ ...base, kind: "note", level: "info", title: `Event ${String(envelope.type)}`, detail: JSON.stringify(data) });
    }
  }

  message(base, data) {
    const role = data.role === "user" ? "user" : "assistant";
    if (role === "assistant") base.run.streaming = "";
    const content = Array.isArray(data.content) ? data.content : [{ type: "text", text: String(data.content ?? "") }];
    content.forEach((block, index) => {
      const at = { ...base, block: index, role };
      const type = block && block.type;
      if (type === "text") {
        this.add({ ...at, kind: "text", text: String(block.text ?? "") });
      } else if (type === "thinking" || type === "redacted_thinking") {
        this.add({ ...at, kind: "thinking", text: type === "thinking" ? String(block.thinking ?? "") : "(redacted)" });
      } else if (type === "tool_use" || type === "server_tool_use") {
        const row = this.add({ ...at, kind: "tool", name: String(block.name ?? "?"), input: block.input, toolUseId: block.id, result: null });
        if (typeof block.id === "string") this.tools.set(block.id, row);
      } else if (type === "tool_result") {
        const row = this.tools.get(block.tool_use_id);
        const result = { seq: base.seq, content: block.content, isError: Boolean(block.is_error) };
        if (row && !row.result) {
          row.result = result;
          this.touch(row);
        } else {
          this.add({ ...at, kind: "tool_result", result });
        }
      } else {
        this.add({ ...at, kind: "note", level: "info", title: `Block ${String(type)}`, detail: JSON.stringify(block) });
      }
    });
  }

  streamEvent(run, data) {
    const event = data.event;
    if (!event || event.type !== "content_block_delta" || !event.delta) return;
    if (event.delta.type === "text_delta" && typeof event.delta.text === "string") {
      run.streaming += event.delta.text;
    }
  }
}
