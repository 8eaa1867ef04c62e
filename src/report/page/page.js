// The live page of a redis-move run: applies the state the server pushes (server-sent
// events), counts running durations, and sends gate decisions and sign-offs with the
// token the terminal printed. Nothing is fetched but this server's own paths.
"use strict";
const $ = (id) => document.getElementById(id);
// For tests and the curious: how many updates arrived, and when each step was first
// seen finished (milliseconds since the epoch, this browser's clock).
window.redisMove = { updates: 0, finishedSeen: {}, state: null };
let gate = null;

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + "s";
  const m = Math.floor(s / 60);
  if (m < 60) return m + "m" + String(s % 60).padStart(2, "0") + "s";
  return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
}

function tick() {
  for (const el of document.querySelectorAll("[data-since]")) {
    el.textContent = duration(Date.now() - Number(el.dataset.since));
  }
}

function text(el, value) {
  el.textContent = value == null ? "" : String(value);
}

function renderGate(g) {
  gate = g;
  const box = $("gate");
  if (!g) {
    box.hidden = true;
    return;
  }
  const changed = box.hidden || box.dataset.gate !== g.id;
  box.hidden = false;
  box.dataset.gate = g.id;
  text($("gate-id"), g.id);
  text($("gate-question"), g.question);
  $("gate-stopped").hidden = !g.stopped;
  const evidence = $("gate-evidence");
  evidence.replaceChildren(...g.evidence.map((line) => {
    const li = document.createElement("li");
    li.textContent = line;
    return li;
  }));
  $("gate-evidence-box").hidden = g.evidence.length === 0;
  const roles = $("gate-roles");
  roles.replaceChildren(...g.roles.map((role, index) => {
    const div = document.createElement("div");
    div.className = "role";
    const signed = g.signed.find((s) => s.role === role);
    if (signed) {
      div.innerHTML = '<span class="signed">&#10003;</span> ';
      div.append("sign-off " + role + ": " + signed.who);
    } else {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "sign";
      button.dataset.role = role;
      button.textContent = "Sign off as " + role;
      button.addEventListener("click", () => send("api/signoff", { role }));
      div.append(button, " sign-off " + role + ": not yet");
    }
    return div;
  }));
  $("go").textContent = g.manual ? "Done" : "Go";
  $("nogo").textContent = g.manual ? "Abort" : "No-go";
  if (changed) {
    const answer = $("answer");
    answer.textContent = "";
    answer.className = "";
  }
}

function apply(state) {
  window.redisMove.updates += 1;
  window.redisMove.state = state;
  $("header").innerHTML = state.header;
  $("steps").innerHTML = state.steps;
  $("charts").innerHTML = state.charts;
  $("charts-box").hidden = state.charts === "";
  const log = $("log");
  const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  log.innerHTML = state.log;
  if (atEnd) log.scrollTop = log.scrollHeight;
  const now = Date.now();
  for (const row of document.querySelectorAll("tr[data-step]")) {
    const status = row.dataset.status;
    if (status !== "pending" && status !== "running" && !(row.dataset.step in window.redisMove.finishedSeen)) {
      window.redisMove.finishedSeen[row.dataset.step] = now;
    }
  }
  renderGate(state.gate);
  document.title = "redis-move: " + state.run_id + " (" + state.status + ")";
  tick();
}

async function send(path, extra) {
  const answer = $("answer");
  const who = $("who").value.trim();
  const token = $("token").value.trim();
  if (!gate) return;
  if (!who || !token) {
    answer.className = "refused";
    answer.textContent = "Give your name and the token the terminal printed.";
    return;
  }
  sessionStorage.setItem("redis-move-token", token);
  localStorage.setItem("redis-move-name", who);
  answer.className = "";
  answer.textContent = "sending…";
  try {
    const response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ gate: gate.id, name: who, token }, extra)),
    });
    const body = await response.json().catch(() => ({ error: response.statusText }));
    answer.className = response.ok ? "accepted" : "refused";
    answer.textContent = response.ok ? body.message : "Refused: " + (body.error || response.status);
  } catch (error) {
    answer.className = "refused";
    answer.textContent = "Not sent: " + error;
  }
}

$("go").addEventListener("click", () => send("api/decide", { decision: "go" }));
$("nogo").addEventListener("click", () => send("api/decide", { decision: "no-go" }));
$("token").value = sessionStorage.getItem("redis-move-token") || "";
$("who").value = localStorage.getItem("redis-move-name") || "";

const source = new EventSource("events");
source.onopen = () => text($("connection"), "live");
source.onmessage = (event) => {
  text($("connection"), "live");
  apply(JSON.parse(event.data));
};
source.onerror = () => {
  const ended = window.redisMove.state && window.redisMove.state.ended;
  text($("connection"), ended ? "the run has ended" : "reconnecting…");
};
setInterval(tick, 1000);
