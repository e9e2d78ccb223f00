// The tenant's voiceprints: enrol one from a speech sample, list them (never their
// embeddings), delete one, or forget a participant (all of their voiceprints).
import { api, upload } from "./api.js";
import { h, toast, when } from "./ui.js";

export function voiceprintsView(root) {
  const rows = new Map(); // voiceprint id -> {vp, el}
  let cursor = null;

  const body = h("tbody");
  const more = h("button", { class: "ghost", hidden: true, onclick: () => load() }, "Load more");
  const empty = h("p", { class: "muted empty", hidden: true },
    "No voiceprints yet: enrol one from a sample above, or transcribe a recording with separate streams and ",
    h("code", {}, "enroll_voiceprints"), ".");
  const table = h("table", { class: "recordings voiceprints" },
    h("thead", {}, h("tr", {}, h("th", {}, "Name"), h("th", {}, "Participant"), h("th", {}, "Speech"),
      h("th", {}, "Source"), h("th", {}, "Model"), h("th", {}, "Updated"), h("th", {}, h("span", { class: "sr" }, "Actions")))),
    body);

  root.replaceChildren(
    h("section", { class: "page" },
      h("div", { class: "page-head" }, h("h1", {}, "Voiceprints")),
      enrolForm((vp) => { addRow(vp, true); }),
      h("div", { class: "card flush" }, table, empty),
      h("div", { class: "center" }, more)));

  function rowFor(vp) {
    const el = h("tr", { "data-id": vp.id },
      h("td", { class: "title" }, vp.name),
      h("td", { class: "mono" }, vp.participantId),
      h("td", {}, `${Number(vp.seconds).toFixed(1)} s`),
      h("td", {}, vp.source),
      h("td", { class: "muted small mono" }, vp.model),
      h("td", {}, when(vp.updatedAt)),
      h("td", {}, h("div", { class: "actions" },
        h("button", { class: "danger ghost", "aria-label": `Delete the voiceprint of ${vp.name}`,
          onclick: () => remove(vp) }, "Delete"),
        h("button", { class: "ghost", "aria-label": `Forget participant ${vp.participantId}`,
          title: "Delete every voiceprint of this participant", onclick: () => forget(vp.participantId) }, "Forget"))));
    return { vp, el };
  }

  function addRow(vp, first = false) {
    const old = rows.get(vp.id);
    if (old) old.el.remove(); // refined: shown again with its new figures
    const row = rowFor(vp);
    rows.set(vp.id, row);
    if (first) body.prepend(row.el); else body.append(row.el);
    empty.hidden = rows.size > 0;
  }

  function drop(ids) {
    for (const id of ids) {
      rows.get(id)?.el.remove();
      rows.delete(id);
    }
    empty.hidden = rows.size > 0;
  }

  async function remove(vp) {
    if (!confirm(`Delete the voiceprint of “${vp.name}” (participant ${vp.participantId})? This cannot be undone.`)) return;
    try {
      await api(`/v1/voiceprints/${encodeURIComponent(vp.id)}`, { method: "DELETE" });
      drop([vp.id]);
      toast("Voiceprint deleted");
    } catch (err) { toast(err.message, "error"); }
  }

  async function forget(participantId) {
    if (!confirm(`Forget participant “${participantId}”: delete every voiceprint of theirs? This cannot be undone.`)) return;
    try {
      const q = new URLSearchParams({ participant_id: participantId });
      const { deleted } = await api(`/v1/voiceprints?${q}`, { method: "DELETE" });
      drop([...rows.values()].filter((r) => r.vp.participantId === participantId).map((r) => r.vp.id));
      toast(`Participant ${participantId} forgotten: ${deleted} ${deleted === 1 ? "voiceprint" : "voiceprints"} deleted`);
    } catch (err) { toast(err.message, "error"); }
  }

  async function load() {
    more.disabled = true;
    try {
      const q = new URLSearchParams({ limit: "50" });
      if (cursor) q.set("cursor", cursor);
      const page = await api(`/v1/voiceprints?${q}`);
      cursor = page.nextCursor;
      for (const vp of page.data) if (!rows.has(vp.id)) addRow(vp);
      more.hidden = !cursor;
    } catch (err) {
      toast(err.message, "error");
    } finally {
      more.disabled = false;
      empty.hidden = rows.size > 0;
    }
  }

  load();
}

function enrolForm(onEnrolled) {
  const participant = h("input", { type: "text", name: "participant_id", required: true, maxlength: 256,
    placeholder: "u1", autocomplete: "off" });
  const name = h("input", { type: "text", name: "name", required: true, maxlength: 256,
    placeholder: "Alice", autocomplete: "off" });
  const file = h("input", { type: "file", name: "file", accept: "audio/*,video/*", required: true });
  const submit = h("button", { class: "primary", type: "submit" }, "Enrol");
  const progress = h("div", { class: "bar wide", hidden: true }, h("span", { style: "width:0%" }));
  const error = h("p", { class: "error", role: "alert", hidden: true });

  const form = h("form", { class: "card enrol", onsubmit: async (e) => {
    e.preventDefault();
    const data = new FormData();
    data.append("participant_id", participant.value.trim());
    data.append("name", name.value.trim());
    data.append("file", file.files[0], file.files[0].name);
    error.hidden = true;
    submit.disabled = true;
    submit.textContent = "Enrolling…";
    progress.hidden = false;
    try {
      const vp = await upload("/v1/voiceprints", data, (p) => {
        progress.firstChild.style.width = `${Math.round(p * 100)}%`;
      });
      toast(`${vp.name}: voiceprint enrolled from ${Number(vp.seconds).toFixed(1)} s of speech`);
      form.reset();
      onEnrolled(vp);
      participant.focus();
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
    } finally {
      submit.disabled = false;
      submit.textContent = "Enrol";
      progress.hidden = true;
      progress.firstChild.style.width = "0%";
    }
  } },
  h("h2", {}, "Enrol from a sample"),
  h("p", { class: "muted small" }, "A clean recording of one person speaking (at least a few seconds of speech). ",
    "Only its voiceprint is kept, never the sample."),
  h("div", { class: "fields" },
    h("label", {}, "Participant id", participant),
    h("label", {}, "Name", name),
    h("label", { class: "span" }, "Speech sample", file)),
  error, progress,
  h("div", {}, submit));
  return form;
}
