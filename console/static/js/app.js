// The console's entry: credentials, then the page the path names.

import { Api } from "./api.js";
import { Credentials } from "./auth.js";
import { conversationPage } from "./conversation.js";
import { clear, el } from "./dom.js";
import { sessionsPage } from "./sessions.js";

const uiBase = new URL(".", document.baseURI); // <gateway>/ui/
const credentials = new Credentials(sessionStorage, location.hash);
const api = new Api(new URL("../", uiBase), credentials);
const main = document.getElementById("main");
let stopPage = () => {};

if (location.hash.includes("token=")) {
  // The token is kept for this tab (sessionStorage); out of the address bar and history.
  history.replaceState(null, "", location.pathname + location.search);
}

/** The session id in /ui/sessions/{id}, or null on the list. */
function routedSession() {
  const path = location.pathname.startsWith(uiBase.pathname) ? location.pathname.slice(uiBase.pathname.length) : "";
  if (!path.startsWith("sessions/")) return null;
  try {
    return decodeURIComponent(path.slice("sessions/".length));
  } catch {
    return path.slice("sessions/".length);
  }
}

function showWho() {
  const who = document.getElementById("who");
  who.textContent = credentials.describe();
  document.getElementById("sign-out").hidden = !credentials.bearer();
}

function askForKey(message) {
  stopPage();
  if (credentials.token) {
    clear(main).append(el("h1", {}, "Not allowed"), el("p", { role: "alert" }, "This session token is invalid or has expired. Ask for a new link."));
    return;
  }
  const input = el("input", { id: "api-key", type: "password", autocomplete: "off", required: true });
  const form = el("form", { class: "panel", "aria-label": "API key" },
    el("h1", {}, "API key"),
    el("p", {}, message || "This gateway needs an API key. It is kept in this tab only (sessionStorage)."),
    el("label", { for: "api-key" }, "Key"), input,
    el("button", { type: "submit" }, "Use key"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    credentials.saveApiKey(input.value.trim());
    showWho();
    render();
  });
  clear(main).append(form);
  input.focus();
}

function render() {
  stopPage();
  const sessionId = routedSession();
  const onAuthError = () => askForKey(credentials.apiKey ? "That key was refused. Try another one." : undefined);
  if (sessionId !== null) {
    const only = credentials.onlySession;
    if (only !== null && only !== sessionId) {
      clear(main).append(el("h1", {}, "Not allowed"), el("p", { role: "alert" }, `This link opens session ${only} only.`),
        el("a", { href: `sessions/${encodeURIComponent(only)}` }, "Open it"));
      return;
    }
    stopPage = conversationPage(main, api, credentials, sessionId, onAuthError);
  } else if (credentials.onlySession !== null) {
    location.replace(new URL(`sessions/${encodeURIComponent(credentials.onlySession)}`, uiBase));
  } else {
    stopPage = sessionsPage(main, api, onAuthError);
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  credentials.forget();
  showWho();
  location.replace(uiBase);
});
showWho();
render();
