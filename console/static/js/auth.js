// Credentials: a session token from #token= (that session only), else an API key kept
// in sessionStorage (asked for once, when the gateway answers 401), else none (a
// gateway without keys, on loopback).

const KEY_ITEM = "claude-queue.api-key";
const TOKEN_ITEM = "claude-queue.session-token";

/** The claims of a session token (read, not verified: the gateway verifies). */
export function tokenClaims(token) {
  const parts = token.split(".");
  if (parts.length !== 3 || parts[0] !== "cq1") return null;
  try {
    const text = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(text);
    if (typeof claims.sid !== "string" || !Array.isArray(claims.scp)) return null;
    return { sessionId: claims.sid, scopes: claims.scp.map(String), expiresAt: Number(claims.exp) };
  } catch {
    return null;
  }
}

export class Credentials {
  constructor(storage, hash) {
    this.storage = storage;
    const match = /(?:^#|&)token=([^&]+)/.exec(hash);
    if (match) storage.setItem(TOKEN_ITEM, safeDecode(match[1]));
    this.token = storage.getItem(TOKEN_ITEM);
    this.claims = this.token ? tokenClaims(this.token) : null;
    this.apiKey = this.token ? null : storage.getItem(KEY_ITEM);
  }

  /** What goes after "Bearer ", or null. */
  bearer() {
    return this.token || this.apiKey || null;
  }

  /** The one session a token is for, or null when not limited to one. */
  get onlySession() {
    return this.claims ? this.claims.sessionId : null;
  }

  /** May the caller do this on a session? (A key, or no keys, may do everything.) */
  can(scope) {
    return this.claims ? this.claims.scopes.includes(scope) : true;
  }

  saveApiKey(key) {
    this.apiKey = key;
    this.storage.setItem(KEY_ITEM, key);
  }

  forget() {
    this.storage.removeItem(KEY_ITEM);
    this.storage.removeItem(TOKEN_ITEM);
    this.apiKey = null;
    this.token = null;
    this.claims = null;
  }

  describe() {
    if (this.claims) return `session token for ${this.claims.sessionId}`;
    if (this.apiKey) return "API key";
    return "";
  }
}

function safeDecode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text; // not percent-encoded after all: the gateway judges it
  }
}
