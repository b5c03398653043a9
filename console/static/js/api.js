// The gateway's public HTTP API (README: HTTP gateway), nothing more.

export class ApiError extends Error {
  constructor(status, code, message, fields) {
    super(message);
    this.status = status;
    this.code = code;
    this.fields = fields || null;
  }

  /** One line for people: the code and the gateway's message. */
  get summary() {
    return this.status ? `${this.status} ${this.code}: ${this.message}` : this.message;
  }
}

export class Api {
  constructor(root, credentials) {
    this.root = root; // the gateway's root URL (the console is at <root>ui/)
    this.credentials = credentials;
  }

  headers(extra = {}) {
    const headers = { ...extra };
    const bearer = this.credentials.bearer();
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    return headers;
  }

  url(path) {
    return new URL(path, this.root);
  }

  sessionPath(sessionId, rest = "") {
    return `v1/sessions/${encodeURIComponent(sessionId)}${rest}`;
  }

  async request(method, path, body) {
    const init = { method, cache: "no-store", headers: this.headers() };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(this.url(path), init);
    } catch (error) {
      throw new ApiError(0, "network", `the gateway did not answer (${error.message})`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const detail = (data && data.error) || {};
      throw new ApiError(
        response.status,
        String(detail.code || `http_${response.status}`),
        String(detail.message || response.statusText || "request failed"),
        detail.fields,
      );
    }
    return data;
  }

  sessions(limit = 200) {
    return this.request("GET", `v1/sessions?limit=${limit}`);
  }

  session(sessionId) {
    return this.request("GET", this.sessionPath(sessionId));
  }

  submit(sessionId, body) {
    return this.request("POST", this.sessionPath(sessionId, "/runs"), body);
  }

  cancel(sessionId, body) {
    return this.request("POST", this.sessionPath(sessionId, "/cancel"), body);
  }

  answer(sessionId, requestId, body) {
    const path = this.sessionPath(sessionId, `/permissions/${encodeURIComponent(requestId)}`);
    return this.request("POST", path, body);
  }

  eventsUrl(sessionId) {
    return this.url(this.sessionPath(sessionId, "/events"));
  }
}
