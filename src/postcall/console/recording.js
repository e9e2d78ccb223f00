// One recording: its transcription's live status, or the transcript beside the player,
// with speakers (rename), search, downloads, retry and delete.
import { api, download, ApiError } from "./api.js";
import { h, toast, duration, when, recordingTitle, statusLine } from "./ui.js";
import { TranscriptView } from "./transcript.js";

const FORMATS = ["txt", "srt", "vtt", "json"];

export function recordingView(root, id, { live }) {
  const enc = encodeURIComponent(id);
  let rec = null;
  let latest = null;
  let shownId = null;
  const audio = h("audio", { controls: true, preload: "metadata", class: "player" });
  const scroller = h("div", { class: "transcript", tabindex: 0, "aria-label": "Transcript" });
  const view = new TranscriptView(scroller, audio);
  const head = h("div", { class: "page-head" });
  const state = h("div");
  const speakers = h("ul", { class: "speakers" });
  const notes = h("div", { hidden: true });
  const hits = h("span", { class: "muted small" });
  let matches = [];
  let at = -1;
  const find = h("input", { type: "search", placeholder: "Search the transcript", "aria-label": "Search the transcript",
    oninput: debounce(() => {
      matches = view.search(find.value);
      at = -1;
      hits.textContent = find.value.trim() ? `${matches.length} ${matches.length === 1 ? "match" : "matches"}` : "";
      if (matches.length) step(1);
    }, 200),
    onkeydown: (e) => { if (e.key === "Enter") step(e.shiftKey ? -1 : 1); } });
  const step = (d) => {
    if (!matches.length) return;
    at = (at + d + matches.length) % matches.length;
    view.scrollTo(matches[at]);
    hits.textContent = `${at + 1} of ${matches.length}`;
  };
  const side = h("aside", { class: "side card" },
    audio,
    h("div", { class: "speed" }, "Speed",
      [1, 1.25, 1.5, 2].map((r) => h("button", { class: r === 1 ? "chip on" : "chip",
        onclick: (e) => {
          audio.playbackRate = r;
          for (const b of e.target.parentNode.querySelectorAll(".chip")) b.classList.toggle("on", b === e.target);
        } }, `${r}×`))),
    h("h3", {}, "Speakers"), speakers,
    notes,
    h("h3", {}, "Search"),
    h("div", { class: "find" }, find,
      h("button", { class: "icon", title: "Previous match", onclick: () => step(-1) }, "↑"),
      h("button", { class: "icon", title: "Next match", onclick: () => step(1) }, "↓")),
    hits,
    h("h3", {}, "Download"),
    h("div", { class: "downloads" }, FORMATS.map((f) => h("button", { class: "chip", "data-format": f,
      onclick: () => latest && download(`/v1/transcriptions/${latest.transcriptionId}/transcript?format=${f}`,
        `${id}.${f}`).catch((err) => toast(err.message, "error")) }, f.toUpperCase()))));
  const layout = h("div", { class: "reader", hidden: true }, side, h("div", { class: "card flush paper" }, scroller));

  root.replaceChildren(h("section", { class: "page wide" },
    h("a", { href: "#/", class: "back" }, "← Recordings"), head, state, layout));

  async function loadRecording() {
    try {
      rec = await api(`/v1/recordings/${enc}`);
    } catch (err) {
      head.replaceChildren(h("h1", {}, "Not found"));
      state.replaceChildren(h("p", { class: "muted" }, err instanceof ApiError && err.status === 404
        ? `There is no recording “${id}”.` : err.message));
      return false;
    }
    head.replaceChildren(
      h("div", {}, h("h1", {}, recordingTitle(rec)),
        h("div", { class: "muted small" }, h("span", { class: "mono" }, rec.id),
          ` · ${duration(rec.duration)} · added ${when(rec.createdAt)}`)),
      h("div", { class: "actions" },
        h("button", { class: "danger ghost", onclick: remove }, "Delete")));
    return true;
  }

  async function remove() {
    if (!confirm(`Delete “${recordingTitle(rec)}” with its transcripts? This cannot be undone.`)) return;
    try {
      await api(`/v1/recordings/${enc}`, { method: "DELETE" });
      toast("Recording deleted");
      location.hash = "#/";
    } catch (err) { toast(err.message, "error"); }
  }

  async function refresh() {
    const page = await api(`/v1/recordings/${enc}/transcriptions?limit=1`);
    latest = page.data[0] || null;
    if (!latest) return showState(h("div", { class: "card notice" },
      h("p", {}, "This recording has no transcript yet."),
      h("button", { class: "primary", onclick: () => transcribe() }, "Transcribe")));
    if (latest.status === "completed") {
      state.replaceChildren();
      if (shownId !== latest.transcriptionId) await showTranscript();
      return;
    }
    if (latest.status === "failed") {
      return showState(h("div", { class: "card notice failed" },
        h("p", {}, statusLine(latest)),
        h("p", {}, latest.error ? latest.error.message : "The transcription failed."),
        h("button", { class: "primary", onclick: retry }, "Retry")));
    }
    showState(h("div", { class: "card notice" }, h("p", {}, statusLine(latest)),
      h("p", { class: "muted small" }, "The transcript appears here when it is ready.")));
  }

  function showState(el) {
    layout.hidden = true;
    shownId = null;
    state.replaceChildren(el);
  }

  async function transcribe() {
    try {
      await api(`/v1/recordings/${enc}/transcribe`, { method: "POST", json: {} });
      await refresh();
    } catch (err) { toast(err.message, "error"); }
  }

  async function retry() {
    try {
      await api(`/v1/transcriptions/${latest.transcriptionId}/retry`, { method: "POST" });
      toast("Queued again");
      await refresh();
    } catch (err) { toast(err.message, "error"); }
  }

  async function showTranscript() {
    const tid = latest.transcriptionId;
    const [doc, link] = await Promise.all([
      api(`/v1/transcriptions/${tid}/transcript?format=json`),
      audio.src ? null : api(`/v1/recordings/${enc}/media_link`),
    ]);
    if (link) audio.src = link.url;
    shownId = tid;
    layout.hidden = false;
    view.show(doc);
    showSpeakers(doc);
    showVoiceprints(latest.voiceprints || []);
  }

  // What the job did with voiceprints (enrolled, updated, skipped and why, matched).
  function showVoiceprints(list) {
    notes.hidden = !list.length;
    notes.replaceChildren(h("h3", {}, "Voiceprints"), h("ul", { class: "vp-notes" },
      list.map((n) => h("li", {}, h("span", { class: `badge ${n.outcome}` }, n.outcome), " ",
        h("span", { class: "mono" }, n.participantId), h("div", { class: "muted small" }, n.message)))));
  }

  function showSpeakers(doc) {
    const names = doc.speakers.length ? doc.speakers : [];
    speakers.replaceChildren(...names.map((name, i) => {
      const label = h("span", { class: "name" }, name);
      const item = h("li", { class: `c${i % 8}` }, h("span", { class: "dot" }), label,
        h("button", { class: "icon", title: `Rename ${name}`, "aria-label": `Rename ${name}`,
          onclick: () => edit(item, label, name) }, "✎"));
      return item;
    }));
    if (!names.length) speakers.append(h("li", { class: "muted small" }, "No speakers"));
  }

  function edit(item, label, old) {
    const input = h("input", { type: "text", value: old, class: "rename", "aria-label": "New name" });
    let finished = false;
    const done = async (save) => {
      if (finished) return; // Enter, then the blur of the input leaving the page
      finished = true;
      const name = input.value.trim();
      if (input.isConnected) input.replaceWith(label);
      if (save && name && name !== old) await rename(old, name);
    };
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") done(true);
      if (e.key === "Escape") done(false);
    });
    input.addEventListener("blur", () => done(true));
    label.replaceWith(input);
    input.select();
  }

  // A speaker is one of the recording's participants (renamed there), or a label such
  // as "Speaker 2", named by a participant whose id is that label.
  async function rename(old, name) {
    const participants = Array.isArray(rec.metadata.participants) ? rec.metadata.participants.map((p) => ({ ...p })) : [];
    const known = participants.find((p) => p && p.name === old) || participants.find((p) => p && String(p.id) === old);
    if (known) known.name = name;
    else participants.push({ id: old, name });
    try {
      rec = await api(`/v1/recordings/${enc}`, { method: "PATCH", json: { metadata: { participants } } });
      shownId = null;
      await showTranscript();
      toast(`Renamed ${old} to ${name}`);
    } catch (err) { toast(err.message, "error"); }
  }

  loadRecording().then((ok) => {
    if (!ok) return;
    refresh().catch((err) => toast(err.message, "error"));
    live(async () => {
      if (latest && (latest.status === "queued" || latest.status === "processing")) await refresh();
    }, 2000);
  });
}

function debounce(fn, ms) {
  let timer;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}
