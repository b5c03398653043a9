// A session's events over Server-Sent Events, read with fetch (so the credential goes
// in a header, never in the URL). On a lost connection it reconnects with
// Last-Event-ID: the last seq it delivered; an event at or below that seq is a
// duplicate and is dropped, so the page sees every seq once, in order.

const RETRY_FIRST_MS = 500;
const RETRY_MAX_MS = 10000;
const FINAL_STATUSES = new Set([401, 403, 404, 422]); // retrying cannot help

export class EventStream {
  /**
   * @param {object} options
   * @param {() => URL} options.url the stream's URL
   * @param {() => object} options.headers request headers (credentials)
   * @param {(envelopes: object[]) => void} options.onEvents each batch, in seq order
   * @param {(state: string, detail?: string) => void} options.onState
   *   connecting, live, reconnecting, failed
   */
  constructor({ url, headers, onEvents, onState }) {
    this.url = url;
    this.headers = headers;
    this.onEvents = onEvents;
    this.onState = onState;
    this.lastSeq = 0;
    this.duplicates = 0;
    this.stopped = false;
    this.controller = null;
  }

  start() {
    this.loop();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  /** Drop the connection (as a network loss would); the loop reconnects. */
  interrupt() {
    if (this.controller) this.controller.abort();
  }

  async loop() {
    let retryMs = RETRY_FIRST_MS;
    this.onState("connecting");
    while (!this.stopped) {
      this.controller = new AbortController();
      const headers = { Accept: "text/event-stream", ...this.headers() };
      if (this.lastSeq > 0) headers["Last-Event-ID"] = String(this.lastSeq);
      try {
        const response = await fetch(this.url(), {
          headers,
          cache: "no-store",
          signal: this.controller.signal,
        });
        if (!response.ok) {
          const detail = await errorText(response);
          if (FINAL_STATUSES.has(response.status)) {
            this.onState("failed", detail, response.status);
            return;
          }
          throw new Error(detail);
        }
        this.onState("live");
        retryMs = RETRY_FIRST_MS;
        await this.read(response.body);
      } catch (error) {
        if (this.stopped) return;
        this.onState("reconnecting", error && error.message ? error.message : String(error));
      }
      if (this.stopped) return;
      this.onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, retryMs));
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new FrameParser();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      const batch = [];
      for (const data of parser.push(value)) {
        let envelope;
        try {
          envelope = JSON.parse(data);
        } catch {
          continue; // not an envelope: nothing to show
        }
        if (typeof envelope.seq !== "number") continue;
        if (envelope.seq <= this.lastSeq) {
          this.duplicates += 1;
          continue;
        }
        this.lastSeq = envelope.seq;
        batch.push(envelope);
      }
      if (batch.length) this.onEvents(batch);
    }
  }
}

/** SSE framing: text in, each frame's data out (comments and heartbeats skipped). */
export class FrameParser {
  constructor() {
    this.buffer = "";
  }

  *push(text) {
    this.buffer += text;
    // A frame ends at a blank line (\r\n, \n or \r line ends). Scanned once, cut once.
    const boundary = /\r\n\r\n|\n\n|\r\r|\r\n\n|\n\r\n/g;
    const frames = [];
    let start = 0;
    for (let match = boundary.exec(this.buffer); match; match = boundary.exec(this.buffer)) {
      frames.push(this.buffer.slice(start, match.index));
      start = match.index + match[0].length;
    }
    this.buffer = this.buffer.slice(start);
    for (const frame of frames) {
      const data = [];
      for (const line of frame.split(/\r\n|\r|\n/)) {
        if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
      }
      if (data.length) yield data.join("\n");
    }
  }
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return `${response.status} ${body.error.code}: ${body.error.message}`;
  } catch {
    // not the gateway's error shape
  }
  return `${response.status} ${response.statusText}`;
}
