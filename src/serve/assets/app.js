// seedpool serve: the little the pages need beyond HTML. Everything works without it;
// it adds tag completion in the gallery's form and a live "fetch these" progress bar.
"use strict";

function completeTags() {
  const input = document.getElementById("tags");
  const list = document.getElementById("tag-list");
  if (!input || !list) return;
  let pending = null;
  input.addEventListener("input", () => {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      const words = input.value.split(/\s+/);
      const last = (words[words.length - 1] || "").replace(/^-/, "");
      if (last.length < 2) return;
      const response = await fetch("/api/tags?prefix=" + encodeURIComponent(last));
      if (!response.ok) return;
      const names = await response.json();
      const head = words.slice(0, -1).join(" ");
      list.replaceChildren(...names.map((t) => {
        const option = document.createElement("option");
        const name = t.category === "alias" ? t.name.split(" → ")[1] : t.name;
        option.value = (head ? head + " " : "") + name;
        option.label = t.category + (t.items ? " · " + t.items : "");
        return option;
      }));
    }, 150);
  });
}

function followFetch() {
  const bar = document.getElementById("fetch-progress");
  const state = document.getElementById("fetch-state");
  if (!bar || !state) return;
  // A page rendered while a fetch ran shows its bar: it reloads when that fetch ends,
  // however soon.
  let wasRunning = !bar.hidden;
  const poll = async () => {
    const response = await fetch("/api/fetch");
    if (!response.ok) return;
    const s = await response.json();
    bar.hidden = !s.running;
    bar.max = Math.max(s.total, 1);
    bar.value = s.have;
    state.textContent = summary(s);
    if (s.running) {
      wasRunning = true;
      setTimeout(poll, 500);
    } else if (wasRunning && s.finished) {
      // The shards are in the pool: show the view again with its pictures.
      location.reload();
    }
  };
  poll();
}

function summary(s) {
  if (s.error) return "fetch failed: " + s.error;
  if (s.running) return "fetching " + s.shards + " shards: " + s.verified + " of " + s.shards + " checked";
  if (s.finished) return "fetched " + s.shards + " shards; the view is up to date";
  return "";
}

document.addEventListener("DOMContentLoaded", () => {
  completeTags();
  followFetch();
});
