// Small DOM and formatting helpers shared by the views.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name in el && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function toast(message, kind = "info") {
  const el = h("div", { class: `toast ${kind}` }, message);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return hh ? `${hh}:${two(mm)}:${two(ss)}` : `${mm}:${two(ss)}`;
}

export function duration(seconds) {
  const s = Math.round(Number(seconds) || 0);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60 ? `${s % 60} s` : ""}`.trim();
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

export function eta(seconds) {
  if (seconds === null || seconds === undefined) return null;
  if (seconds < 10) return "done in a few seconds";
  if (seconds < 90) return `about ${Math.round(seconds / 5) * 5} s left`;
  if (seconds < 5400) return `about ${Math.round(seconds / 60)} min left`;
  return `about ${(seconds / 3600).toFixed(1)} h left`;
}

export function when(iso) {
  const d = new Date(iso);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay
    ? `today ${d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}`
    : d.toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
}

export function recordingTitle(rec) {
  const title = rec.metadata && typeof rec.metadata.title === "string" ? rec.metadata.title : "";
  return title || rec.filename || rec.id;
}

export function participantNames(rec) {
  const list = rec.metadata && Array.isArray(rec.metadata.participants) ? rec.metadata.participants : [];
  return list.map((p) => p && p.name).filter((n) => typeof n === "string" && n);
}

// A transcription's status as a badge, with its progress and place in the queue.
export function statusLine(t) {
  if (!t) return h("span", { class: "badge none" }, "not transcribed");
  const parts = [h("span", { class: `badge ${t.status}` }, t.status)];
  if (t.status === "queued" || t.status === "processing") {
    const pct = Math.round((t.progress || 0) * 100);
    parts.push(h("span", { class: "bar", title: `${pct}%` }, h("span", { style: `width:${pct}%` })));
    const facts = [];
    if (t.queuePosition) facts.push(`#${t.queuePosition} in queue`);
    else if (t.status === "processing") facts.push(`${pct}%`);
    const left = eta(t.etaSeconds);
    if (left) facts.push(left);
    if (facts.length) parts.push(h("span", { class: "muted small" }, facts.join(" · ")));
  }
  if (t.status === "failed" && t.error) parts.push(h("span", { class: "muted small" }, t.error.code));
  return h("span", { class: "status" }, parts);
}
