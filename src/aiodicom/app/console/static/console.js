// aiodicom console: the only script (CSP: script-src 'self'; no inline code).
"use strict";

function csrf() {
  return document.body.dataset.csrf || "";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (cls) td.className = cls;
  return td;
}

async function abortAssociation(id) {
  const response = await fetch(`/api/associations/${id}/abort`, {
    method: "POST", credentials: "same-origin",
    headers: {"X-CSRF-Token": csrf(), "Content-Type": "application/json"}, body: "{}",
  });
  if (!response.ok) alert((await response.json()).error || "not aborted");
  refreshAssociations();
}

async function refreshAssociations() {
  const table = document.getElementById("associations");
  if (!table) return;
  let data;
  try {
    const response = await fetch("/api/associations", {credentials: "same-origin"});
    if (!response.ok) return;
    data = await response.json();
  } catch (e) {
    return;
  }
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const a of data.associations) {
    const tr = document.createElement("tr");
    tr.dataset.id = a.id;
    tr.append(cell(a.id), cell(a.peer), cell(a.calling_ae, "ae"), cell(a.subject),
              cell(a.organization), cell(a.since), cell(a.bytes_received), cell(a.operations));
    const td = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Abort";
    button.addEventListener("click", () => abortAssociation(a.id));
    td.append(button);
    tr.append(td);
    body.append(tr);
  }
  const stamp = document.getElementById("refreshed");
  if (stamp) stamp.textContent = `Last refresh ${new Date().toISOString().slice(11, 19)} UTC.`;
}

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form.revoke")) {
    form.addEventListener("submit", (event) => {
      if (!confirm("Revoke this certificate? Servers refuse it within seconds.")) {
        event.preventDefault();
      }
    });
  }
  if (document.getElementById("associations")) {
    refreshAssociations();
    setInterval(refreshAssociations, 2000);
  }
});
