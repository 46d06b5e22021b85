// Renders /v1/openapi.json as a reference page, from this origin only (no CDN).
"use strict";
document.addEventListener("DOMContentLoaded", async () => {
  const spec = await (await fetch("/v1/openapi.json")).json();
  const root = document.getElementById("ops");
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  const byTag = {};
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) (byTag[(op.tags || ["other"])[0]] ||= []).push([method, path, op]);
  }
  for (const [tag, ops] of Object.entries(byTag)) {
    const card = el("section", undefined, "card");
    card.append(el("h2", tag));
    const table = el("table", undefined, "table");
    for (const [method, path, op] of ops) {
      const tr = el("tr");
      tr.append(el("td", method.toUpperCase()), el("td", path), el("td", op.summary || ""));
      const params = (op.parameters || []).filter((p) => p.in === "query").map((p) => p.name);
      tr.append(el("td", params.length ? `?${params.join("&")}` : "", "muted"));
      const body = op.requestBody && op.requestBody.content ? Object.keys(op.requestBody.content).join(", ") : "";
      tr.append(el("td", body, "muted"));
      table.append(tr);
    }
    card.append(table);
    root.append(card);
  }
});
