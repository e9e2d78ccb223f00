// A transcript beside its audio: rendered in slices (a 2-hour meeting never blocks the
// page), the word being spoken highlighted, a click on a word seeks there.
import { h, clock } from "./ui.js";

const SLICE_MS = 8; // the most one rendering task may take before yielding
const COLOURS = 8;

export class TranscriptView {
  constructor(container, audio) {
    this.container = container;
    this.audio = audio;
    this.words = []; // {start, end, seg, el} in time order
    this.segEls = [];
    this.current = -1;
    this.currentSeg = -1;
    this.follow = true;
    this.hits = new Set();
    this.needle = "";
    this.generation = 0;
    container.addEventListener("click", (e) => this.onClick(e));
    const tick = () => { this.sync(); this.frame = requestAnimationFrame(tick); };
    audio.addEventListener("play", () => { cancelAnimationFrame(this.frame); tick(); });
    audio.addEventListener("pause", () => cancelAnimationFrame(this.frame));
    audio.addEventListener("seeked", () => this.sync(true));
    // Scrolling by hand stops following the audio until the next play or click.
    container.addEventListener("wheel", () => { this.follow = false; }, { passive: true });
    audio.addEventListener("play", () => { this.follow = true; });
  }

  show(doc) {
    const generation = ++this.generation;
    this.doc = doc;
    this.colour = new Map(doc.speakers.map((name, i) => [name, i % COLOURS]));
    this.words = [];
    this.segEls = new Array(doc.segments.length);
    this.hydrated = new Array(doc.segments.length).fill(false);
    if (this.near) this.near.disconnect();
    this.near = new IntersectionObserver((entries) => {
      for (const e of entries) if (e.isIntersecting) this.hydrate(Number(e.target.dataset.s));
    }, { root: this.container, rootMargin: "1200px 0px" });
    this.current = -1;
    this.currentSeg = -1;
    doc.segments.forEach((seg, s) => {
      const list = seg.words && seg.words.length ? seg.words : [{ start: seg.start, end: seg.end, text: seg.text }];
      seg._first = this.words.length;
      for (const w of list) this.words.push({ start: w.start, end: w.end, text: w.text.trim(), seg: s, el: null });
    });
    this.order = this.words.map((_, i) => i).sort((a, b) => this.words[a].start - this.words[b].start);
    this.container.replaceChildren();
    let next = 0;
    const slice = () => {
      if (generation !== this.generation) return; // a newer document replaced this one
      const until = performance.now() + SLICE_MS;
      const frag = document.createDocumentFragment();
      while (next < doc.segments.length && (performance.now() < until || next % 8)) {
        frag.append(this.segment(doc.segments[next], next));
        next += 1;
      }
      this.container.append(frag);
      if (next < doc.segments.length) setTimeout(slice, 0);
      else this.container.dispatchEvent(new CustomEvent("rendered"));
    };
    slice();
    if (!doc.segments.length) {
      this.container.append(h("p", { class: "muted pad" }, "No speech was found in this recording."));
    }
  }

  // A segment starts as plain text; its words become spans (clickable, highlighted)
  // when it comes near the view, so a long meeting keeps a small DOM.
  segment(seg, s) {
    const name = seg.speaker || "Speaker 1";
    const text = h("p", { class: "text" }, this.plain(s));
    const el = h("article", { class: `seg c${this.colour.get(name) ?? 0}`, "data-s": s },
      h("header", {},
        h("span", { class: "who" }, name),
        h("button", { class: "time", "data-t": seg.start, title: "Play from here" }, clock(seg.start))),
      text);
    if (this.hits.has(s)) el.classList.add("hit");
    this.segEls[s] = el;
    this.near.observe(el);
    return el;
  }

  range(s) {
    const last = s + 1 < this.doc.segments.length ? this.doc.segments[s + 1]._first : this.words.length;
    return [this.doc.segments[s]._first, last];
  }

  plain(s) {
    const [first, last] = this.range(s);
    const parts = [];
    for (let i = first; i < last; i++) parts.push(this.words[i].text);
    return parts.join(" ");
  }

  hydrate(s) {
    const el = this.segEls[s];
    if (!el || this.hydrated[s]) return;
    this.hydrated[s] = true;
    this.near.unobserve(el);
    const [first, last] = this.range(s);
    const frag = document.createDocumentFragment();
    const needle = this.needle;
    for (let i = first; i < last; i++) {
      const w = this.words[i];
      const span = document.createElement("span");
      span.className = i === this.current ? "w now" : "w";
      if (needle && this.hits.has(s) && w.text.toLowerCase().includes(needle)) span.classList.add("match");
      span.dataset.i = i;
      span.textContent = w.text;
      w.el = span;
      frag.append(span, " ");
    }
    el.querySelector(".text").replaceChildren(frag);
  }

  onClick(e) {
    const word = e.target.closest(".w");
    const time = e.target.closest(".time");
    let t = null;
    if (word) t = this.words[Number(word.dataset.i)].start;
    else if (time) t = Number(time.dataset.t);
    if (t === null) return;
    this.follow = true;
    this.audio.currentTime = t;
    this.sync(true);
    if (this.audio.paused) this.audio.play().catch(() => { /* no autoplay: the user presses play */ });
  }

  // Highlight the word at the audio's time: a binary search, and DOM changes only when
  // the word changes.
  sync(jump = false) {
    const t = this.audio.currentTime;
    const order = this.order || [];
    let lo = 0, hi = order.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.words[order[mid]].start <= t + 0.01) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    const index = found < 0 ? -1 : order[found];
    if (index === this.current && !jump) return;
    const previous = this.words[this.current];
    if (previous && previous.el) previous.el.classList.remove("now");
    this.current = index;
    const word = this.words[index];
    if (!word) return;
    this.hydrate(word.seg);
    if (word.el) word.el.classList.add("now");
    if (word.seg !== this.currentSeg) {
      const old = this.segEls[this.currentSeg];
      if (old) old.classList.remove("active");
      this.currentSeg = word.seg;
      const segEl = this.segEls[word.seg];
      if (segEl) {
        segEl.classList.add("active");
        if (this.follow) this.reveal(segEl);
      }
    }
  }

  reveal(el) {
    const box = this.container.getBoundingClientRect();
    const r = el.getBoundingClientRect();
    if (r.top < box.top + 40 || r.bottom > box.bottom - 40) {
      // Smooth only nearby: a smooth jump across an hour would lay out all between.
      const far = Math.abs(r.top - box.top) > 2 * box.height;
      el.scrollIntoView({ block: "center", behavior: far ? "auto" : "smooth" });
    }
  }

  // Mark the segments and words containing ``query``; returns the matching segment indexes.
  search(query) {
    for (const s of this.hits) this.segEls[s] && this.segEls[s].classList.remove("hit");
    for (const el of this.container.querySelectorAll(".w.match")) el.classList.remove("match");
    this.hits = new Set();
    const q = query.trim().toLowerCase();
    this.needle = q.split(/\s+/)[0];
    if (!q) return [];
    this.doc.segments.forEach((seg, s) => {
      if (seg.text.toLowerCase().includes(q) || (seg.speaker || "").toLowerCase().includes(q)) this.hits.add(s);
    });
    for (const s of this.hits) {
      const el = this.segEls[s];
      if (!el) continue;
      el.classList.add("hit");
      if (!this.hydrated[s]) continue;
      const [first, last] = this.range(s);
      for (let i = first; i < last; i++) {
        const w = this.words[i];
        if (w.el && w.text.toLowerCase().includes(this.needle)) w.el.classList.add("match");
      }
    }
    return [...this.hits];
  }

  scrollTo(s) {
    const el = this.segEls[s];
    if (el) { this.follow = false; this.hydrate(s); el.scrollIntoView({ block: "center" }); }
  }
}
