// Numbers and times as people read them.

export function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

export function cost(usd) {
  if (typeof usd !== "number" || !Number.isFinite(usd)) return "—";
  return usd < 0.01 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(2)}`;
}

export function count(n) {
  return typeof n === "number" && Number.isFinite(n) ? n.toLocaleString("en") : "—";
}

export function clock(ts) {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return "—";
  return new Date(ts * 1000).toLocaleString();
}

export function ago(ts, now = Date.now() / 1000) {
  if (typeof ts !== "number" || !Number.isFinite(ts)) return "—";
  const seconds = Math.max(0, now - ts);
  if (seconds < 5) return "just now";
  return `${duration(Math.round(seconds)).replace(/\.0 s$/, " s")} ago`;
}

export function shortId(id) {
  return typeof id === "string" ? id.slice(0, 8) : "—";
}
