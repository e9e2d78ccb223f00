// The console: sign-in, then the recordings list, one recording or the voiceprints
// (hash routes).
import { api, session, ApiError } from "./api.js";
import { h } from "./ui.js";
import { listView } from "./list.js";
import { recordingView } from "./recording.js";
import { voiceprintsView } from "./voiceprints.js";

const root = document.getElementById("view");
const signOut = document.getElementById("sign-out");
let timers = [];

// A poller that belongs to the current view (stopped when the route changes); one
// run at a time, never overlapping.
function live(fn, every) {
  let busy = false;
  const id = setInterval(async () => {
    if (busy || document.hidden) return;
    busy = true;
    try { await fn(); } catch { /* shown by the next successful poll */ } finally { busy = false; }
  }, every);
  timers.push(id);
}

function stopTimers() {
  for (const id of timers) clearInterval(id);
  timers = [];
}

async function authorised() {
  try {
    await api("/v1/recordings?limit=1");
    return true;
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return false;
    throw err;
  }
}

function signIn(message) {
  stopTimers();
  const key = h("input", { type: "password", name: "key", autocomplete: "current-password",
    placeholder: "pc_…", required: true, "aria-label": "API key" });
  const error = h("p", { class: "error", hidden: !message }, message || "");
  const form = h("form", { class: "card signin", onsubmit: async (e) => {
    e.preventDefault();
    session.key = key.value.trim();
    if (await authorised()) route();
    else { session.key = null; error.hidden = false; error.textContent = "That key is not valid on this server."; }
  } },
  h("h1", {}, "Sign in"),
  h("p", { class: "muted" }, "This postcall server needs an API key (",
    h("code", {}, "postcall keys create"), "). It is kept in this tab only."),
  h("label", {}, "API key", key), error,
  h("button", { class: "primary", type: "submit" }, "Sign in"));
  root.replaceChildren(h("section", { class: "page narrow" }, form));
  key.focus();
}

async function route() {
  stopTimers();
  let ok;
  try {
    ok = await authorised();
  } catch (err) {
    root.replaceChildren(h("p", { class: "error pad" }, `The server does not answer: ${err.message}`));
    return;
  }
  if (!ok) return signIn(session.key ? "That key is no longer valid." : "");
  signOut.hidden = !session.key;
  const match = location.hash.match(/^#\/recordings\/(.+)$/);
  const voiceprints = location.hash === "#/voiceprints";
  for (const a of document.querySelectorAll(".topnav a[data-nav]")) {
    const current = a.dataset.nav === (voiceprints ? "voiceprints" : "recordings");
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (match) recordingView(root, decodeURIComponent(match[1]), { live });
  else if (voiceprints) voiceprintsView(root);
  else listView(root, { live });
}

signOut.addEventListener("click", () => { session.key = null; signOut.hidden = true; signIn(""); });
window.addEventListener("hashchange", route);
route();
