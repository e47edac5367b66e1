"""The review page served at ``/review``: one item at a time, answered through the API.

Plain HTML and a little JavaScript. The API key is typed once and kept in the tab's
sessionStorage; every request sends it as a Bearer token, the image included (fetched as a
blob from ``/v1/review/{item}/image``, the proxied thumbnail). Keys: ``y`` confirm, ``n``
reject, ``1``-``9`` pick that label of the score list instead.
"""

from __future__ import annotations

REVIEW_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>tagfleet review</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; max-width: 60rem; }
#image { max-width: 512px; max-height: 512px; border: 1px solid #ccc; display: block; }
#scores li.proposal { font-weight: bold; }
button { margin-right: .5rem; }
.muted { color: #666; }
</style>
</head>
<body>
<h1>Review</h1>
<form id="login">
  <label>API key <input id="key" type="password" autocomplete="off" size="60"></label>
  <button id="start" type="submit">Start</button>
</form>
<p id="status" class="muted">Enter an API key with the label scope.</p>
<section id="card" hidden>
  <p><span class="muted">item</span> <span id="item"></span> &middot;
     <span class="muted">function</span> <span id="function"></span> &middot;
     <span class="muted">reason</span> <span id="reason"></span></p>
  <p id="asset" class="muted"></p>
  <img id="image" alt="the asset under review">
  <p>Proposal: <strong id="proposal"></strong> (<span id="score"></span>)</p>
  <ol id="scores"></ol>
  <p>
    <button id="confirm" type="button">Confirm (y)</button>
    <button id="reject" type="button">Reject (n)</button>
    <span class="muted">1-9: pick that label instead</span>
  </p>
</section>
<script>
"use strict";
let key = sessionStorage.getItem("tagfleet-key") || "";
let current = null;
let labels = [];
const $ = (id) => document.getElementById(id);
const say = (text) => { $("status").textContent = text; };

async function api(path, options) {
  const opts = Object.assign({}, options || {});
  opts.headers = Object.assign({"Authorization": "Bearer " + key}, opts.headers || {});
  const response = await fetch(path, opts);
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = JSON.stringify((await response.json()).detail); } catch (e) {}
    throw new Error(response.status + " " + detail);
  }
  return response;
}

async function next() {
  current = null;
  $("card").hidden = true;
  say("Loading...");
  const page = await (await api("/v1/review?limit=1")).json();
  if (!page.items.length) { say("The queue is empty."); return; }
  show(page.items[0]);
  const blob = await (await api("/v1/review/" + current.item + "/image")).blob();
  $("image").src = URL.createObjectURL(blob);
}

function show(item) {
  current = item;
  $("item").textContent = item.item;
  $("function").textContent = item.function;
  $("reason").textContent = item.reason;
  $("asset").textContent = item.asset_id;
  $("proposal").textContent = item.label === null ? "(none)" : item.label;
  $("score").textContent = item.score === null ? "-" : item.score.toFixed(3);
  labels = Object.entries(item.scores || {}).sort((a, b) => b[1] - a[1]).map((e) => e[0]);
  const list = $("scores");
  list.replaceChildren();
  labels.forEach((label, i) => {
    const li = document.createElement("li");
    li.textContent = label + " " + item.scores[label].toFixed(3);
    li.dataset.label = label;
    if (label === item.label) li.className = "proposal";
    if (i < 9) li.title = "press " + (i + 1);
    li.addEventListener("click", () => answer({action: "relabel", label: label}));
    list.appendChild(li);
  });
  $("card").hidden = false;
  say("Item " + item.item + ": confirm, reject or pick a label.");
}

async function answer(body) {
  if (!current) return;
  const item = current;
  current = null;
  try {
    await api("/v1/review/" + item.item, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body),
    });
    say("Answered item " + item.item + ".");
    await next();
  } catch (e) { current = item; say("Not saved: " + e.message); }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  key = $("key").value.trim();
  sessionStorage.setItem("tagfleet-key", key);
  next().catch((e) => say("Error: " + e.message));
});
$("confirm").addEventListener("click", () => answer({action: "confirm"}));
$("reject").addEventListener("click", () => answer({action: "reject"}));
document.addEventListener("keydown", (event) => {
  if (!current || event.target.tagName === "INPUT") return;
  if (event.key === "y") answer({action: "confirm"});
  else if (event.key === "n") answer({action: "reject"});
  else if (/^[1-9]$/.test(event.key) && labels[Number(event.key) - 1] !== undefined) {
    answer({action: "relabel", label: labels[Number(event.key) - 1]});
  }
});
if (key) { $("key").value = key; next().catch((e) => say("Error: " + e.message)); }
</script>
</body>
</html>
"""
