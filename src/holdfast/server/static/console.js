// Holdfast console: live updates for the task page, and token login from a URL fragment.
// Everything inserted into the page is HTML rendered (and escaped) by the server.
"use strict";

function loginFromFragment() {
  const form = document.getElementById("login-form");
  if (!form || !location.hash.startsWith("#token=")) return;
  const token = decodeURIComponent(location.hash.slice("#token=".length));
  history.replaceState(null, "", location.pathname);
  document.getElementById("token").value = token;
  form.submit();
}

async function fetchFragment(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(url + ": " + response.status);
  return response.text();
}

function liveTask() {
  const body = document.body;
  const task = body.dataset.task;
  if (!task) return;
  const live = document.getElementById("live");
  const base = "/console/tasks/" + encodeURIComponent(task);
  let lastTurn = Number(body.dataset.lastTurn || "0");
  let busy = Promise.resolve();
  const serial = (job) => { busy = busy.then(job).catch((err) => console.warn(err)); };

  const refresh = (part, id) => serial(async () => {
    const html = await fetchFragment(base + "/fragment/" + part);
    const holder = document.getElementById(id);
    if (holder) holder.innerHTML = html;
  });
  const moreTurns = () => serial(async () => {
    const html = await fetchFragment(base + "/fragment/turns?after=" + lastTurn);
    const rows = document.getElementById("turn-rows");
    if (!rows || !html.trim()) return;
    rows.insertAdjacentHTML("beforeend", html);
    const all = rows.querySelectorAll("tr.turn");
    if (all.length) lastTurn = Number(all[all.length - 1].dataset.turn);
    body.dataset.lastTurn = String(lastTurn);
  });

  const source = new EventSource(base + "/events");
  source.onopen = () => { live.textContent = "live"; live.className = "live on"; };
  source.onerror = () => { live.textContent = "reconnecting…"; live.className = "live"; };
  source.addEventListener("turn", () => { moreTurns(); refresh("ws", "ws-panel"); });
  for (const kind of ["status", "approval_requested", "approval", "steer"]) {
    source.addEventListener(kind, () => refresh("status", "status-panel"));
  }
  source.addEventListener("rollover", () => refresh("ws", "ws-panel"));
  source.addEventListener("end", () => {
    source.close();
    refresh("status", "status-panel");
    moreTurns();
    refresh("ws", "ws-panel");
    serial(async () => { live.textContent = "finished"; live.className = "live done"; });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  loginFromFragment();
  liveTask();
});
