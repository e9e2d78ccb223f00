// The recordings list: search, upload by drag and drop, live status of each transcription.
import { api, upload, ApiError } from "./api.js";
import { h, toast, duration, when, recordingTitle, participantNames, statusLine } from "./ui.js";

const LANGUAGES = [
  ["", "Server default"], ["auto", "Detect"], ["en", "English"], ["de", "German"],
  ["es", "Spanish"], ["fr", "French"], ["it", "Italian"], ["nl", "Dutch"], ["pt", "Portuguese"],
];
const SPEAKERS = [
  ["auto", "Automatic"], ["diarize", "Tell voices apart"], ["none", "One speaker"],
];

export function listView(root, { live }) {
  const rows = new Map(); // recording id -> {rec, latest, el}
  let cursor = null;
  let query = "";

  const search = h("input", {
    type: "search", placeholder: "Search by name, id or participant", class: "search",
    "aria-label": "Search recordings",
    oninput: (e) => { query = e.target.value.trim().toLowerCase(); filter(); },
  });
  const body = h("tbody");
  const more = h("button", { class: "ghost", hidden: true, onclick: () => load() }, "Load more");
  const empty = h("p", { class: "muted empty", hidden: true });
  const table = h("table", { class: "recordings" },
    h("thead", {}, h("tr", {}, h("th", {}, "Recording"), h("th", {}, "Length"),
      h("th", {}, "Added"), h("th", {}, "Transcript"))),
    body);

  root.replaceChildren(
    h("section", { class: "page" },
      h("div", { class: "page-head" }, h("h1", {}, "Recordings"), search),
      uploader(async (rec) => { await addRow(rec, true); }),
      h("div", { class: "card flush" }, table, empty),
      h("div", { class: "center" }, more)));

  function filter() {
    let shown = 0;
    for (const row of rows.values()) {
      const haystack = [row.rec.id, row.rec.filename, recordingTitle(row.rec), ...participantNames(row.rec)]
        .join(" ").toLowerCase();
      row.el.hidden = Boolean(query) && !haystack.includes(query);
      if (!row.el.hidden) shown += 1;
    }
    empty.hidden = shown > 0;
    empty.replaceChildren(rows.size === 0
      ? "No recordings yet: drop one above to transcribe it."
      : h("span", {}, "Nothing matches. ",
          h("a", { href: `#/recordings/${encodeURIComponent(search.value.trim())}` },
            `Open recording “${search.value.trim()}”`)));
  }

  function rowFor(rec) {
    const status = h("td", { class: "status-cell" }, statusLine(undefined));
    const el = h("tr", { class: "row", tabindex: 0, "data-id": rec.id,
      onclick: () => { location.hash = `#/recordings/${encodeURIComponent(rec.id)}`; },
      onkeydown: (e) => { if (e.key === "Enter") el.click(); } },
      h("td", {}, h("div", { class: "title" }, recordingTitle(rec)),
        h("div", { class: "muted small mono" }, rec.id,
          participantNames(rec).length ? h("span", { class: "people" }, ` · ${participantNames(rec).join(", ")}`) : null)),
      h("td", {}, duration(rec.duration)),
      h("td", {}, when(rec.createdAt)),
      status);
    return { rec, latest: undefined, el, status };
  }

  async function refresh(row) {
    try {
      const page = await api(`/v1/recordings/${encodeURIComponent(row.rec.id)}/transcriptions?limit=1`);
      row.latest = page.data[0] || null;
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) { row.el.remove(); rows.delete(row.rec.id); return; }
      row.latest = undefined;
    }
    row.status.replaceChildren(statusLine(row.latest));
  }

  async function addRow(rec, first = false) {
    if (rows.has(rec.id)) return;
    const row = rowFor(rec);
    rows.set(rec.id, row);
    if (first) body.prepend(row.el); else body.append(row.el);
    filter();
    await refresh(row);
  }

  async function load() {
    more.disabled = true;
    try {
      const q = new URLSearchParams({ limit: "50" });
      if (cursor) q.set("cursor", cursor);
      const page = await api(`/v1/recordings?${q}`);
      cursor = page.nextCursor;
      await Promise.all(page.data.map((rec) => addRow(rec)));
      more.hidden = !cursor;
    } catch (err) {
      toast(err.message, "error");
    } finally {
      more.disabled = false;
      filter();
    }
  }

  // Live status: rows whose transcription is queued or processing are asked again.
  live(async () => {
    const busy = [...rows.values()].filter((r) => r.latest && !["completed", "failed"].includes(r.latest.status));
    await Promise.all(busy.map(refresh));
  }, 2000);

  load();
}

function uploader(onCreated) {
  const file = h("input", { type: "file", accept: "audio/*,video/*", hidden: true,
    onchange: () => file.files[0] && send(file.files[0]) });
  const names = h("input", { type: "text", name: "participants", placeholder: "Alice, Bob",
    "aria-label": "Participants" });
  const id = h("input", { type: "text", name: "id", placeholder: "optional", "aria-label": "Recording id" });
  const lang = h("select", { name: "language", "aria-label": "Language" },
    LANGUAGES.map(([v, label]) => h("option", { value: v }, label)));
  const mode = h("select", { name: "speakers", "aria-label": "Speakers" },
    SPEAKERS.map(([v, label]) => h("option", { value: v }, label)));
  const progress = h("div", { class: "bar wide", hidden: true }, h("span", { style: "width:0%" }));
  const note = h("span", { class: "muted small" });
  const zone = h("div", { class: "drop", tabindex: 0, role: "button",
    "aria-label": "Drop a recording here or choose a file",
    onclick: () => file.click(),
    onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); file.click(); } },
    ondragover: (e) => { e.preventDefault(); zone.classList.add("over"); },
    ondragleave: () => zone.classList.remove("over"),
    ondrop: (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]);
    } },
    h("div", { class: "drop-icon", "aria-hidden": "true" }, "⤒"),
    h("div", {}, h("strong", {}, "Drop a recording here"), " or ", h("span", { class: "linkish" }, "choose a file")),
    h("div", { class: "muted small" }, "Audio or video: wav, mp3, m4a, ogg, webm, mp4…"),
    progress, note);

  async function send(f) {
    const participants = names.value.split(",").map((n) => n.trim()).filter(Boolean)
      .map((name, i) => ({ id: String(i + 1), name }));
    const form = new FormData();
    form.append("file", f, f.name);
    if (participants.length) form.append("metadata", JSON.stringify({ participants }));
    if (id.value.trim()) form.append("id", id.value.trim());
    progress.hidden = false;
    note.textContent = `Uploading ${f.name}…`;
    try {
      const rec = await upload("/v1/recordings", form, (p) => {
        progress.firstChild.style.width = `${Math.round(p * 100)}%`;
      });
      const body = { speakers: { mode: mode.value } };
      if (lang.value) body.language = lang.value;
      await api(`/v1/recordings/${encodeURIComponent(rec.id)}/transcribe`, { method: "POST", json: body });
      note.textContent = `${f.name}: uploaded, transcription queued.`;
      id.value = "";
      await onCreated(rec);
    } catch (err) {
      note.textContent = "";
      toast(`${f.name}: ${err.message}`, "error");
    } finally {
      progress.hidden = true;
      progress.firstChild.style.width = "0%";
      file.value = "";
    }
  }

  return h("div", { class: "card upload" }, zone,
    h("div", { class: "fields" },
      h("label", {}, "Participants", names),
      h("label", {}, "Recording id", id),
      h("label", {}, "Language", lang),
      h("label", {}, "Speakers", mode)),
    file);
}
