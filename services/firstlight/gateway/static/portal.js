// Firstlight Portal: one small script, no dependencies. It calls the /v1 API with the session
// cookie and the page's CSRF token, and writes user strings with textContent only (never HTML).
"use strict";
(function () {
  const meta = (n) => (document.querySelector(`meta[name="${n}"]`) || {}).content || "";
  const CSRF = meta("csrf-token");
  const APP = meta("app-id");
  const $ = (sel, root) => (root || document).querySelector(sel);
  const enc = encodeURIComponent;
  const appPath = (p) => `/v1/apps/${enc(APP)}${p}`;

  // Bidirectional-override and other invisible format characters (a "gnp.exe" shown as
  // "exe.png") are shown as visible code points instead of being obeyed.
  const INVISIBLE = /[\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;
  function textNode(value) {
    const s = String(value);
    if (!INVISIBLE.test(s)) return document.createTextNode(s);
    INVISIBLE.lastIndex = 0;
    const span = document.createElement("span");
    let last = 0;
    for (const m of s.matchAll(INVISIBLE)) {
      span.append(document.createTextNode(s.slice(last, m.index)));
      const mark = document.createElement("span");
      mark.className = "ctl";
      mark.textContent = `[U+${m[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}]`;
      span.append(mark);
      last = m.index + m[0].length;
    }
    span.append(document.createTextNode(s.slice(last)));
    return span;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "text") e.append(textNode(v));
      else if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "href" || k === "src") e.setAttribute(k, safeUrl(v));
      else e.setAttribute(k, String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : textNode(c));
    return e;
  }
  // Only same-origin relative URLs are ever put into href/src.
  function safeUrl(u) {
    u = String(u);
    return u.startsWith("/") && !u.startsWith("//") ? u : "#";
  }

  function flash(msg, kind) {
    const f = $("#flash");
    if (!f) return;
    f.textContent = msg || "";
    f.className = msg ? (kind || "info") : "";
  }

  async function api(method, path, body) {
    const opts = { method, credentials: "same-origin", headers: { "X-CSRF-Token": CSRF, Accept: "application/json" } };
    if (body instanceof FormData) opts.body = body;
    else if (body !== undefined) {
      opts.body = JSON.stringify(body);
      opts.headers["Content-Type"] = "application/json";
    }
    const r = await fetch(path, opts);
    if (r.status === 401) {
      location.href = "/portal/sign-in";
      throw new Error("signed out");
    }
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const msg = (data.error && data.error.message) || r.statusText;
      flash(msg, "error");
      throw new Error(msg);
    }
    return data;
  }

  const thumb = (id) => appPath(`/inputs/${enc(id)}/thumbnail`);
  const inputPage = (id) => `/portal/apps/${enc(APP)}/inputs/${enc(id)}`;
  const splitName = (s) => (s || "").replace("SPLIT_", "").replace("UNSPECIFIED", "").toLowerCase();
  const fmt = (x, d = 3) => (typeof x === "number" ? x.toFixed(d) : x === undefined ? "" : String(x));

  function tile(hit, opts) {
    const caption = el("figcaption", {});
    const concepts = hit.concepts || [];
    caption.append(el("span", { class: "concepts", text: concepts.length ? concepts.join(", ") : "unlabeled" }));
    if (hit.score !== undefined) caption.append(el("span", { class: "score", text: fmt(hit.score, 2) }));
    const img = el("img", { src: thumb(hit.input_id || hit.id), alt: "", loading: "lazy", width: 160, height: 160 });
    const fig = el("figure", { class: "tile", "data-id": hit.input_id || hit.id, tabindex: opts && opts.selectable ? -1 : undefined });
    if (opts && opts.selectable) fig.append(img, caption);
    else fig.append(el("a", { href: inputPage(hit.input_id || hit.id), title: hit.input_id || hit.id }, img), caption);
    return fig;
  }

  // A video frame (a search hit's video_id/video_t, or an input's metadata): its video and time
  // as mm:ss.s, linking to the video's page (all its frames, this one marked).
  function clock(t) {
    const tenths = Math.round(Math.max(0, Number(t) || 0) * 10);
    const h = Math.floor(tenths / 36000), m = Math.floor((tenths % 36000) / 600), s = tenths % 600;
    const out = `${String(m).padStart(2, "0")}:${String(Math.floor(s / 10)).padStart(2, "0")}.${s % 10}`;
    return h ? `${h}:${out}` : out;
  }
  function videoOf(x) {
    if (x.video_id) return { id: x.video_id, t: Number(x.video_t) || 0 };
    const md = x.metadata || {};
    return md.video_id ? { id: md.video_id, t: Number(md.video_t) || 0 } : null;
  }
  function videoLink(v) {
    return el("a", { class: "video", href: `/portal/apps/${enc(APP)}/videos/${enc(v.id)}?t=${v.t}`, title: `all frames of video ${v.id}`, text: `▶ ${v.id} · ${clock(v.t)}` });
  }
  function withVideo(fig, hit) {
    const v = videoOf(hit);
    if (v) $("figcaption", fig).append(videoLink(v));
    return fig;
  }

  // -- gallery ---------------------------------------------------------------------------------------
  async function gallery() {
    const grid = $("#grid"), sentinel = $("#sentinel"), count = $("#gallery-count");
    const params = new URLSearchParams(location.search);
    const sel = { concept: $("#filter-concept"), labeled: $("#filter-labeled"), split: $("#filter-split"), dataset_id: $("#filter-dataset"), dataset_version: $("#filter-dataset-version") };
    // A model's stored pool predictions (ScorePool) replace the listing when a model is chosen;
    // the label and split filters then apply to them too (one query in curation).
    const pred = { model: $("#filter-model"), version: $("#filter-version"), predicted: $("#filter-predicted"), min_score: $("#filter-min"), max_score: $("#filter-max"), order: $("#filter-order") };
    const concepts = await api("GET", appPath("/concepts"));
    for (const c of concepts.concepts || []) sel.concept.append(el("option", { value: c.name, text: `${c.name} (${c.input_count})` }));
    const models = ((await api("GET", appPath("/models")).catch(() => ({}))).models || []).filter((m) => m.id !== "general");
    for (const m of models) pred.model.append(el("option", { value: m.id, text: m.id }));
    async function modelConcepts() {
      pred.predicted.replaceChildren(el("option", { value: "", text: "any" }));
      if (!pred.model.value) return;
      const m = await api("GET", appPath(`/models/${enc(pred.model.value)}`)).catch(() => null);
      for (const c of (m && m.model.concepts) || []) pred.predicted.append(el("option", { value: c, text: c }));
    }
    for (const k of Object.keys(sel)) if (params.get(k)) sel[k].value = params.get(k);
    if (params.get("model")) { pred.model.value = params.get("model"); await modelConcepts(); }
    // A confusion-matrix cell (evaluation page): exactly the inputs of true X predicted as Y.
    if (!params.get("eval_model")) for (const k of Object.keys(pred)) if (k !== "model" && params.get(k)) pred[k].value = params.get(k);
    const cell = params.get("eval_model") ? { model: params.get("eval_model"), version: params.get("eval_version") || "serving", split: params.get("split") || "validation", true: params.get("true") || "", predicted: params.get("predicted") || "" } : null;
    let token = "", done = false, loading = false, generation = 0;
    const caption = (p) => ({ input_id: p.input_id, concepts: [`→ ${p.predicted_concept}`], score: p.score });
    async function more() {
      if (done || loading) return;
      loading = true;
      const gen = generation;
      const q = new URLSearchParams({ page_size: "60" });
      if (token) q.set("page_token", token);
      try {
        let page;
        if (cell) {
          const r = await api("GET", appPath(`/models/${enc(cell.model)}/versions/${enc(cell.version)}/evaluations/${enc(cell.split)}/inputs?` + new URLSearchParams({ true: cell.true, predicted: cell.predicted })));
          const note = $("#cell-note");
          note.hidden = false;
          note.textContent = `${r.count} ${cell.split} inputs of ${cell.model} v${r.version} with true concept ${cell.true || "any"} predicted as ${cell.predicted || "any"}.`;
          page = { inputs: r.inputs.map((p) => ({ input_id: p.input_id, concepts: [`${p.true_concept} → ${p.predicted_concept}`], score: p.score })), total_size: r.count };
        } else if (pred.model.value) {
          q.set("model_id", pred.model.value);
          for (const [k, f] of [["model_version", pred.version], ["concept", pred.predicted], ["min_score", pred.min_score], ["max_score", pred.max_score], ["order", pred.order]]) if (f.value) q.set(k, f.value);
          for (const [k, f] of [["label", sel.concept], ["labeled", sel.labeled], ["split", sel.split]]) if (f.value) q.set(k, f.value);
          const r = await fetch(appPath(`/curation/predictions?${q}`), { credentials: "same-origin", headers: { Accept: "application/json" } });
          const body = await r.json().catch(() => ({}));
          if (r.status === 404) {  // this model has not scored the pool yet: say what to do, not an error
            $("#score-state").textContent = `${pred.model.value} has no stored predictions${pred.version.value ? ` for v${pred.version.value}` : ""} yet: press "Score the pool".`;
            page = { inputs: [], total_size: 0 };
          } else if (!r.ok) {
            throw new Error(flash((body.error && body.error.message) || r.statusText, "error") || (body.error && body.error.message) || r.statusText);
          } else {
            page = { inputs: body.predictions.map(caption), total_size: body.total_size, next_page_token: body.next_page_token };
            $("#score-state").textContent = `predictions of v${body.model_version}`;
          }
        } else {
          for (const k of Object.keys(sel)) if (sel[k].value.trim()) q.set(k, sel[k].value.trim());
          // a bucket of the data-quality page's histogram links here with its metric's range
          for (const k of ["quality_metric", "quality_min", "quality_max"]) if (params.get(k)) q.set(k, params.get(k));
          page = await api("GET", appPath(`/inputs?${q}`));
        }
        if (gen !== generation) return;
        for (const inp of page.inputs || []) grid.append(tile(inp));
        count.textContent = `${page.total_size} input${page.total_size === 1 ? "" : "s"}` + (page.dataset_version ? ` of ${sel.dataset_id.value.trim()}, version ${page.dataset_version}` : "");
        token = page.next_page_token || "";
        done = !token;
        sentinel.textContent = done ? (grid.children.length ? "" : "No inputs match.") : "…";
      } finally {
        loading = false;
      }
      if (!done && sentinel.getBoundingClientRect().top < innerHeight + 600) more();
    }
    function reset() {
      generation++;
      grid.replaceChildren();
      token = "";
      done = false;
      loading = false;
      const q = new URLSearchParams();
      for (const k of Object.keys(sel)) if (sel[k].value) q.set(k, sel[k].value);
      for (const k of Object.keys(pred)) if (pred.model.value && pred[k].value) q.set(k, pred[k].value);
      history.replaceState(null, "", `?${q}`);
      more();
    }
    for (const s of Object.values(sel)) s.addEventListener("change", reset);
    $("#gallery-filters").addEventListener("submit", (ev) => { ev.preventDefault(); reset(); });  // Enter in the dataset fields
    pred.model.addEventListener("change", async () => { await modelConcepts(); reset(); });
    for (const k of ["version", "predicted", "min_score", "max_score", "order"]) pred[k].addEventListener("change", reset);
    $("#score-pool").addEventListener("click", async () => {
      if (!pred.model.value) return flash("Choose the model to score with.", "error");
      let job = await api("POST", appPath("/curation/score-pool"), { model_id: pred.model.value, model_version: pred.version.value.trim(), unlabeled_only: $("#score-unlabeled").checked });
      const bar = $("#score-progress");
      bar.hidden = false;
      while (job.state === "running") {
        bar.value = job.progress;
        $("#score-state").textContent = `scoring with ${job.model_id} v${job.model_version}: ${job.scored} of ${job.total}`;
        await new Promise((r) => setTimeout(r, 500));
        job = await api("GET", appPath(`/curation/score-pool/${enc(job.id)}`));
      }
      bar.hidden = true;
      $("#score-state").textContent = job.state === "succeeded" ? `scored ${job.total} inputs with ${job.model_id} v${job.model_version}` : `scoring failed: ${job.error}`;
      pred.version.value = job.model_version;
      reset();
    });
    new IntersectionObserver((es) => es.some((e) => e.isIntersecting) && more(), { rootMargin: "600px" }).observe(sentinel);
    $("#upload-folder").addEventListener("change", (ev) => { $("#upload-files").webkitdirectory = ev.target.checked; });
    $("#upload-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const files = [...$("#upload-files").files];
      if (!files.length) return flash("Choose images first.", "error");
      // A folder: files in <folder>/<concept>/... are labeled <concept> (like `firstlight upload`).
      const groups = new Map();
      for (const f of files) {
        const parts = (f.webkitRelativePath || f.name).split("/");
        const concept = parts.length > 2 ? parts[1] : $("#upload-concepts").value;
        if (!groups.has(concept)) groups.set(concept, []);
        groups.get(concept).push(f);
      }
      let stored = 0;
      const refused = [];
      for (const [concept, group] of groups) {
        for (let i = 0; i < group.length; i += 100) {
          const fd = new FormData();
          for (const f of group.slice(i, i + 100)) fd.append("file", f, f.webkitRelativePath || f.name);
          fd.append("concepts", concept);
          const r = await api("POST", appPath("/inputs"), fd);
          stored += r.input_ids.length;
          refused.push(...r.failures.map((x) => `${x.filename}: ${x.message}`));
          flash(`Uploading… ${stored} of ${files.length}`);
        }
      }
      flash(`Uploaded ${stored} of ${files.length}` + (refused.length ? `; refused: ${refused.join("; ")}` : ""), refused.length ? "error" : "info");
      reset();
    });
    more();
  }

  // -- input page ------------------------------------------------------------------------------------
  async function inputView() {
    const id = $("#input-root").dataset.inputId;
    const stage = $("#stage");
    let inp;
    async function load() {
      inp = await api("GET", appPath(`/inputs/${enc(id)}`));
      $("#input-title").textContent = id;
      const ul = $("#input-concepts");
      ul.replaceChildren();
      const who = new Map((inp.label_records || []).map((r) => [r.concept, r]));
      for (const c of inp.concepts) {
        const r = who.get(c);
        const by = r && r.labeled_by ? `by ${r.labeled_by} · ${(r.labeled_at || "").replace("T", " ").slice(0, 19)} UTC` : "with the upload";
        ul.append(el("li", { title: `labeled ${by}` }, el("a", { href: `/portal/apps/${enc(APP)}/gallery?concept=${enc(c)}`, text: c }),
          el("span", { class: "by muted", text: ` ${by}` }),
          el("button", { class: "x", title: `remove ${c}`, text: "×", onclick: () => annotate({ remove_concepts: [c] }) })));
      }
      if (!inp.concepts.length) ul.append(el("li", { class: "muted", text: "unlabeled" }));
      const rl = $("#input-regions");
      rl.replaceChildren();
      for (const b of stage.querySelectorAll(".box")) b.remove();
      (inp.regions || []).forEach((r, n) => {
        rl.append(el("li", { text: `${r.concept} (${[r.box.x0, r.box.y0, r.box.x1, r.box.y1].map((v) => fmt(v, 2)).join(", ")})` }));
        const box = el("div", { class: "box", title: r.concept }, el("span", { text: r.concept }));
        Object.assign(box.style, { left: `${r.box.x0 * 100}%`, top: `${r.box.y0 * 100}%`, width: `${(r.box.x1 - r.box.x0) * 100}%`, height: `${(r.box.y1 - r.box.y0) * 100}%` });
        stage.append(box);
      });
      const md = $("#metadata");
      md.replaceChildren();
      const rows = { split: splitName(inp.split) || "none", size: `${inp.width}×${inp.height} ${inp.format}`, created: inp.created_at, ...inp.metadata };
      for (const [k, v] of Object.entries(rows)) md.append(el("tr", {}, el("th", { text: k }), el("td", { text: v })));
      const v = videoOf(inp);
      let line = $("#input-video");
      if (v && !line) $("#input-title").after((line = el("p", { id: "input-video", class: "muted" })));
      if (v) line.replaceChildren("Frame of ", videoLink(v));
    }
    async function annotate(change) {
      await api("POST", appPath("/annotations"), { annotations: [Object.assign({ input_id: id }, change)] });
      await load();
    }
    $("#add-concept").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const c = $("#new-concept").value.trim();
      if (!c) return;
      $("#new-concept").value = "";
      annotate(pendingBox ? { add_regions: [{ concept: c, box: pendingBox }] } : { add_concepts: [c] });
      pendingBox = null;
      const d = $("#drawing");
      if (d) d.remove();
    });
    // Drawing a box: drag on the image, then name it.
    let start = null, pendingBox = null;
    const rel = (ev) => {
      const r = $("#full-image").getBoundingClientRect();
      return [Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width)), Math.min(1, Math.max(0, (ev.clientY - r.top) / r.height))];
    };
    stage.addEventListener("mousedown", (ev) => {
      ev.preventDefault();
      start = rel(ev);
      let d = $("#drawing");
      if (!d) stage.append((d = el("div", { id: "drawing", class: "box drawing" })));
    });
    stage.addEventListener("mousemove", (ev) => {
      if (!start) return;
      const p = rel(ev), d = $("#drawing");
      Object.assign(d.style, { left: `${Math.min(start[0], p[0]) * 100}%`, top: `${Math.min(start[1], p[1]) * 100}%`, width: `${Math.abs(p[0] - start[0]) * 100}%`, height: `${Math.abs(p[1] - start[1]) * 100}%` });
    });
    stage.addEventListener("mouseup", (ev) => {
      if (!start) return;
      const p = rel(ev);
      const b = [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.max(start[0], p[0]), Math.max(start[1], p[1])];
      start = null;
      if (b[2] - b[0] < 0.01 || b[3] - b[1] < 0.01) { pendingBox = null; const d = $("#drawing"); if (d) d.remove(); return; }
      pendingBox = b;
      $("#new-concept").placeholder = "concept of the new box";
      $("#new-concept").focus();
    });
    await load();
    api("POST", appPath(`/inputs/${enc(id)}/predict`), { model_id: "general", top_k: 5 }).then((p) => {
      const ol = $("#predictions");
      for (const c of (p.predictions[0] || { concepts: [] }).concepts) ol.append(el("li", { text: `${c.name} ${fmt(c.score, 2)}` }));
    }).catch(() => {});
    api("POST", appPath("/search/image"), { input_id: id, page_size: 13 }).then((r) => {
      const g = $("#neighbours");
      for (const h of r.hits.filter((h) => h.input_id !== id).slice(0, 12)) g.append(withVideo(tile(h), h));
    }).catch(() => {});
    explainView(id);
  }

  // A PNG the API returned as base64, shown through a blob: URL this page made (never a URL
  // from the data; safeUrl() keeps src same-origin for everything else).
  function pngImage(b64, attrs) {
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const img = el("img", attrs);
    img.src = URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
    return img;
  }

  // "Why this prediction": ExplainPrediction of a chosen model on this input.
  async function explainView(id) {
    const select = $("#explain-model");
    const list = await api("GET", appPath("/models")).catch(() => ({ models: [] }));
    const ids = (list.models || []).map((m) => m.id).filter((m) => m !== "general");
    if (ids.length) select.replaceChildren(...ids.map((m) => el("option", { value: m, text: m })));
    $("#explain-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (!select.value) return flash("Train a model first (Models page).", "error");
      const state = $("#explain-state"), out = $("#explanation");
      state.textContent = "explaining…";
      out.replaceChildren();
      let r;
      try {
        r = await api("POST", appPath(`/models/${enc(select.value)}/versions/serving/explain`), { input_id: id, top_k: Number($("#explain-top").value) || 3 });
      } finally { state.textContent = ""; }
      state.textContent = `${select.value} v${r.model_version} (${r.method})`;
      for (const c of r.concepts) {
        const over = pngImage(c.overlay_png, { class: "overlay", alt: `saliency of ${c.concept}` });
        const fig = el("figure", { class: "explain-map" }, over, el("figcaption", { text: `${c.concept} ${fmt(c.score, 2)}` }));
        const near = el("div", { class: "grid evidence" }, ...c.evidence.map((e) => tile({ input_id: e.input_id, concepts: e.concepts, score: e.similarity })));
        out.append(el("div", { class: "explain-row", "data-concept": c.concept }, fig,
          el("div", {}, el("h3", { text: `Nearest labeled training examples of ${c.concept}` }), c.evidence.length ? near : el("p", { class: "muted", text: "none" }))));
      }
    });
  }

  // -- search, untick, bulk label --------------------------------------------------------------------
  function search() {
    const results = $("#results");
    let hits = [], selected = new Set(), anchor = -1, focus = -1;
    function render() {
      results.replaceChildren();
      hits.forEach((h, i) => {
        const t = withVideo(tile(h, { selectable: true }), h);
        t.dataset.index = i;
        t.classList.toggle("selected", selected.has(h.input_id));
        t.setAttribute("aria-checked", selected.has(h.input_id) ? "true" : "false");
        t.setAttribute("role", "checkbox");
        t.append(el("a", { class: "open", href: inputPage(h.input_id), title: "open", text: "open" }),
          el("button", { class: "similar", title: "search by this image", text: "similar", onclick: (ev) => { ev.stopPropagation(); run({ input_id: h.input_id }); } }));
        results.append(t);
      });
      updateCount();
    }
    function updateCount() {
      $("#selection-count").textContent = `${selected.size} of ${hits.length} selected`;
      for (const t of results.children) {
        const on = selected.has(hits[t.dataset.index].input_id);
        t.classList.toggle("selected", on);
        t.setAttribute("aria-checked", on ? "true" : "false");
        t.classList.toggle("focus", Number(t.dataset.index) === focus);
      }
    }
    function toggle(i, shift) {
      const id = hits[i].input_id;
      if (shift && anchor >= 0) {
        const on = selected.has(hits[anchor].input_id);
        for (let k = Math.min(anchor, i); k <= Math.max(anchor, i); k++) on ? selected.add(hits[k].input_id) : selected.delete(hits[k].input_id);
      } else {
        selected.has(id) ? selected.delete(id) : selected.add(id);
        anchor = i;
      }
      focus = i;
      updateCount();
    }
    results.addEventListener("click", (ev) => {
      if (ev.target.closest("a, button")) return;
      const t = ev.target.closest(".tile");
      if (!t) return;
      ev.preventDefault();
      toggle(Number(t.dataset.index), ev.shiftKey);
    });
    results.addEventListener("keydown", (ev) => {
      if (!hits.length) return;
      const cols = Math.max(1, Math.round(results.clientWidth / (results.firstElementChild.getBoundingClientRect().width + 8)));
      const moves = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols };
      if (ev.key in moves) {
        focus = Math.min(hits.length - 1, Math.max(0, (focus < 0 ? 0 : focus + moves[ev.key])));
        if (ev.shiftKey) toggle(focus, true);
        updateCount();
        results.children[focus].scrollIntoView({ block: "nearest" });
      } else if (ev.key === " ") toggle(Math.max(focus, 0), ev.shiftKey);
      else if (ev.key === "a") { hits.forEach((h) => selected.add(h.input_id)); updateCount(); }
      else if (ev.key === "n") { selected.clear(); updateCount(); }
      else if (ev.key === "s" && focus >= 0) run({ input_id: hits[focus].input_id });
      else return;
      ev.preventDefault();
    });
    async function run(query) {
      const body = { page_size: Number($("#search-size").value), filter: { labeled: $("#search-unlabeled").checked ? "unlabeled" : "" } };
      let r;
      if (query.input_id) {
        r = await api("POST", appPath("/search/image"), Object.assign(body, { input_id: query.input_id }));
        $("#search-info").textContent = `Similar to ${query.input_id}`;
      } else {
        r = await api("POST", appPath("/search/text"), Object.assign(body, { text: query.text }));
        const read = (r.interpreted_as || []).slice(0, 3).map((c) => `${c.name} (${fmt(c.score, 2)})`).join(", ");
        $("#search-info").textContent = read ? `Read as: ${read}` : "";
        if (!$("#bulk-concept").value) $("#bulk-concept").value = query.text;
      }
      hits = r.hits || [];
      selected = new Set(hits.map((h) => h.input_id));
      anchor = -1;
      focus = -1;
      render();
      flash(hits.length ? "" : "No results.");
      results.focus();
    }
    $("#search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const text = $("#search-text").value.trim();
      if (text) run({ text });
    });
    $("#bulk-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const concept = $("#bulk-concept").value.trim();
      if (!concept) return flash("Name the concept to apply.", "error");
      if (!selected.size) return flash("Nothing selected.", "error");
      const ids = hits.map((h) => h.input_id).filter((id) => selected.has(id));
      const r = await api("POST", appPath("/annotations/bulk"), { input_ids: ids, add_concepts: [concept] });
      for (const h of hits) if (selected.has(h.input_id) && !h.concepts.includes(concept)) h.concepts.push(concept);
      render();
      flash(`Labeled ${r.input_ids.length} inputs "${concept}".`);
    });
    const q = new URLSearchParams(location.search);
    if (q.get("q")) { $("#search-text").value = q.get("q"); run({ text: q.get("q") }); }
    else if (q.get("like")) run({ input_id: q.get("like") });
  }

  // -- labeling queue --------------------------------------------------------------------------------
  async function queue() {
    // Three sources, one image at a time. The stream queue and the stored pool scores (by
    // uncertainty; score the pool first) hand out leases (LeaseQueueItem): two browsers never get
    // the same item, and a reload shows this browser's item again until it is labeled or the
    // lease ends. The suggestions source walks the strategy's batch in this browser alone.
    let policy = null, concepts = [], item = null, skipped = [], undo = [], pool = [];
    const params = new URLSearchParams(location.search);
    const source = $("#queue-source"), modelSel = $("#queue-model");
    if (params.get("source")) source.value = params.get("source");
    try { policy = await api("GET", appPath("/curation/policy")); } catch (e) { flash(""); }
    const models = ((await api("GET", appPath("/models")).catch(() => ({}))).models || []).filter((m) => m.id !== "general");
    for (const m of models) modelSel.append(el("option", { value: m.id, text: m.id }));
    modelSel.value = params.get("model") || (policy ? policy.model_id : "") || (models[0] || {}).id || "";
    async function setup() {
      if (source.value === "stream" && !policy) flash("No curation policy yet: set one on the Curation page.", "error");
      const modelId = source.value === "stream" ? (policy ? policy.model_id : "") : modelSel.value;
      modelSel.disabled = source.value === "stream";
      concepts = modelId ? (await api("GET", appPath(`/models/${enc(modelId)}`))).model.concepts : [];
      const keys = $("#queue-keys");
      keys.replaceChildren();
      concepts.slice(0, 9).forEach((c, i) => keys.append(el("li", {}, el("kbd", { text: String(i + 1) }), " ", el("span", { text: c }))));
      pool = [];
      skipped = [];
      if (source.value === "suggest" && modelId) {
        const r = await api("POST", appPath("/curation/suggestions"), { model_id: modelId, strategy: "margin", batch_size: 50 });
        pool = r.suggestions.map((x) => ({ input_id: x.input_id, predicted_concept: x.predicted_concept, score: x.score, strategy: r.strategy }));
      }
      history.replaceState(null, "", `?${new URLSearchParams({ source: source.value, model: modelSel.value })}`);
      await next();
    }
    async function next(release) {
      if (source.value === "stream" || source.value === "scores") {
        // Labeled items are excluded but not released: curation sees the label a moment later (an
        // event), and until then the lease keeps them from other labelers.
        const from = source.value === "scores" ? { model_id: modelSel.value } : {};
        const r = await api("POST", appPath("/curation/queue/lease"), { release_input_id: release || "", exclude_input_ids: [...skipped, ...undo.map((h) => h.id)].slice(-500), ...from });
        item = r.item;
        $("#queue-lease").textContent = item ? `leased to you until ${(r.lease_expires_at || "").slice(11, 19)} UTC` + (r.leased_to_others ? ` · ${r.leased_to_others} with other labelers` : "")
          : r.leased_to_others ? `${r.leased_to_others} waiting items are with other labelers` : "";
      } else {
        item = null;
        while (pool.length) {  // the first still unlabeled and not skipped (labels may have come meanwhile)
          const cand = pool[0];
          const inp = skipped.includes(cand.input_id) ? null : await api("GET", appPath(`/inputs/${enc(cand.input_id)}`)).catch(() => null);
          if (inp && !inp.concepts.length) { item = cand; break; }
          pool.shift();
        }
        $("#queue-lease").textContent = `up to ${pool.length} left in this batch (labeled ones are skipped; suggestions are not leased: one labeler)`;
      }
      show();
    }
    async function refresh() {
      const page = await api("GET", appPath("/curation/queue?state=queued&page_size=1")).catch(() => ({}));
      const s = page.stats || {};
      const rounds = (await api("GET", appPath("/curation/rounds"))).rounds || [];
      const last = rounds[0];
      const every = policy ? policy.retrain_after_labels : 0;
      const since = (s.labeled || 0) - (last ? last.total_labels : 0);
      const t = $("#queue-stats");
      t.replaceChildren();
      const rows = { waiting: s.queued, "labels spent": s.labeled, "next retrain in": every ? `${Math.max(0, every - since)} labels` : "never (no retrain policy)", screened: s.screened };
      for (const [k, v] of Object.entries(rows)) t.append(el("tr", {}, el("th", { text: k }), el("td", { text: v === undefined ? "" : v })));
      $("#queue-round").textContent = last ? `Round ${last.round}: ${last.candidate_version} ${last.promoted ? "promoted" : "not promoted"} — ${last.note}` : "none yet";
    }
    function show() {
      $("#queue-empty").hidden = !!item;
      $("#queue-image").hidden = !item;
      if (!item) { $("#queue-item").textContent = ""; return; }
      $("#queue-image").src = appPath(`/inputs/${enc(item.input_id)}/image?view=browser`);  // HEIC: a JPEG of it
      $("#queue-item").textContent = `${item.input_id} · model guesses ${item.predicted_concept} · uncertainty ${fmt(item.score, 2)} (${item.strategy})`;
    }
    let busy = false;
    document.addEventListener("keydown", async (ev) => {
      if (ev.target.matches("input, textarea, select") || busy) return;
      busy = true;
      try {
        if (ev.key >= "1" && ev.key <= "9" && item) {
          const c = concepts[Number(ev.key) - 1];
          if (!c) return;
          await api("POST", appPath("/annotations"), { annotations: [{ input_id: item.input_id, add_concepts: [c] }] });
          undo.push({ id: item.input_id, concept: c });
          flash(`${item.input_id} → ${c}`);
          await next();
          refresh();
        } else if (ev.key === "x" && item) {
          skipped.push(item.input_id);
          await next(item.input_id);
        } else if (ev.key === "u" && undo.length) {
          const h = undo.pop();
          await api("POST", appPath("/annotations"), { annotations: [{ input_id: h.id, remove_concepts: [h.concept] }] });
          flash(`Undid ${h.id} → ${h.concept}`);
          if (source.value === "suggest") pool.unshift({ input_id: h.id, predicted_concept: "?", score: 0, strategy: "undone" });
          await next();
          await refresh();
        } else if (ev.key === "r") { await next(); await refresh(); }
      } finally { busy = false; }
    });
    source.addEventListener("change", setup);
    modelSel.addEventListener("change", setup);
    await setup();
    await refresh();
  }

  // -- datasets, training, evaluation ----------------------------------------------------------------
  async function models() {
    $("#dataset-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const split = { train_fraction: Number($("#ds-train").value), validation_fraction: Number($("#ds-val").value), test_fraction: Number($("#ds-test").value) };
      const concepts = $("#dataset-concepts").value.split(",").map((x) => x.trim()).filter(Boolean);
      const d = await api("POST", appPath("/datasets"), { id: $("#dataset-id").value.trim(), concepts, split });
      const t = el("table", { class: "table" }, el("tr", {}, ...["concept", "train", "validation", "test"].map((h) => el("th", { text: h }))));
      for (const c of d.counts) t.append(el("tr", {}, ...[c.concept, c.train, c.validation, c.test].map((v) => el("td", { text: v }))));
      const out = [el("p", { text: `Dataset ${d.id} version ${d.version.slice(0, 12)}` }), t];
      if (d.health && d.health.status) {  // the health check recorded with the version
        const bad = (d.health.checks || []).filter((c) => c.status === "fail" || c.status === "warn");
        const words = `Health check: ${d.health.status}` + (bad.length ? ` (${bad.map((c) => `${c.name}: ${c.message}`).join("; ")})` : "") + (d.health.error ? ` (${d.health.error})` : "");
        out.push(el("p", { id: "dataset-health", class: d.health.status === "fail" ? "error" : "muted", text: words }),
          el("a", { href: `/portal/apps/${enc(APP)}/quality?run=1&dataset=${enc(d.id)}`, text: "open its data-quality page" }));
      }
      $("#dataset-result").replaceChildren(...out);
      $("#train-dataset").value = d.id;
    });
    $("#train-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const id = $("#model-id").value.trim();
      let concepts = $("#model-concepts").value.split(",").map((s) => s.trim()).filter(Boolean);
      if (!concepts.length) concepts = ((await api("GET", appPath("/concepts"))).concepts || []).map((c) => c.name);
      const settings = {};
      for (const kv of $("#train-settings").value.split(/[,\s]+/).filter(Boolean)) { const [k, ...v] = kv.split("="); settings[k] = v.join("="); }
      try { await api("POST", appPath("/models"), { id, template: $("#model-template").value, concepts }); }
      catch (e) { if (!/exist/i.test(e.message)) throw e; flash(""); }
      const job = await api("POST", appPath(`/models/${enc(id)}/train`), { dataset_id: $("#train-dataset").value.trim(), settings });
      location.href = `/portal/apps/${enc(APP)}/jobs/${enc(job.id)}`;
    });
    const tbody = $("#models-table tbody");
    const list = await api("GET", appPath("/models"));
    for (const m of list.models || []) {
      if (m.id === "general") continue;
      const v = await api("GET", appPath(`/models/${enc(m.id)}`)).catch(() => null);
      for (const ver of (v && v.versions) || []) {
        const link = el("a", { href: `/portal/apps/${enc(APP)}/models/${enc(m.id)}/versions/${enc(ver.version)}/evaluation`, text: "evaluation" });
        const cmp = v.versions.length > 1 ? el("a", { class: "compare", href: `/portal/apps/${enc(APP)}/models/${enc(m.id)}/compare?b=${enc(ver.version)}`, text: "compare" }) : null;
        tbody.append(el("tr", {}, ...[m.id, ver.version, ver.serving ? "yes" : "", fmt(ver.validation_metrics.accuracy), fmt(ver.validation_metrics.macro_f1), ver.promotion_note].map((x) => el("td", { text: x })), el("td", {}, link, cmp ? " · " : null, cmp)));
      }
    }
    if (!tbody.children.length) tbody.append(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No trained models yet." })));
  }

  function job() {
    const id = $("#job-root").dataset.jobId;
    const tbody = $("#job-steps tbody");
    const src = new EventSource(appPath(`/jobs/${enc(id)}/events`));
    src.addEventListener("progress", (ev) => {
      const p = JSON.parse(ev.data);
      $("#job-progress").value = p.progress;
      $("#job-state").textContent = `${p.state.replace("JOB_STATE_", "").toLowerCase()} · ${p.stage} · ${Math.round(p.progress * 100)}%` + (p.eta_seconds ? ` · ETA ${Math.round(p.eta_seconds)} s` : "");
      const metrics = Object.entries(p.metrics || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
      tbody.append(el("tr", {}, ...[p.stage, `${Math.round(p.progress * 100)}%`, p.num_epochs ? `${p.epoch}/${p.num_epochs}` : "", p.loss ? fmt(p.loss) : "", metrics, p.message].map((x) => el("td", { text: x }))));
    });
    src.addEventListener("end", (ev) => {
      src.close();
      const j = JSON.parse(ev.data);
      const done = $("#job-done");
      done.hidden = false;
      done.replaceChildren(el("b", { text: j.state.replace("JOB_STATE_", "").toLowerCase() }), " ");
      if (j.version) done.append(el("a", { id: "job-evaluation", href: `/portal/apps/${enc(APP)}/models/${enc(j.model_id)}/versions/${enc(j.version)}/evaluation`, text: `evaluation of ${j.model_id} ${j.version}` }));
      if (j.error) done.append(el("span", { class: "error", text: j.error }));
      $("#job-progress").value = 1;
    });
    src.addEventListener("error", (ev) => { if (ev.data) flash(JSON.parse(ev.data).message, "error"); src.close(); });
  }

  async function evaluation() {
    const root = $("#eval-root");
    const { modelId, version, split } = root.dataset;
    const ev = await api("GET", appPath(`/models/${enc(modelId)}/versions/${enc(version)}/evaluations/${enc(split)}`));
    $("#eval-title").textContent = `${modelId} ${ev.version} on ${split} (${ev.count} inputs)`;
    const m = $("#eval-metrics");
    for (const [k, v] of Object.entries(ev.metrics)) m.append(el("tr", {}, el("th", { text: k }), el("td", { text: fmt(v) })));
    const tb = $("#eval-concepts tbody");
    for (const c of ev.concepts) tb.append(el("tr", {}, ...[c.concept, fmt(c.precision), fmt(c.recall), fmt(c.f1), c.support].map((x) => el("td", { text: x }))));
    const order = ev.concept_order, n = order.length, cm = ev.confusion_matrix;
    const max = Math.max(1, ...cm);
    const exact = (ev.predictions || []).length > 0;
    api("GET", appPath(`/models/${enc(modelId)}`)).then((m) => {
      const serving = m.model.serving_version;
      $("#promote").disabled = serving === ev.version;
      $("#promote-state").textContent = serving === ev.version ? "This version serves." : serving ? `v${serving} serves now.` : "No version serves yet.";
    }).catch(() => {});
    $("#promote-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const reason = $("#promote-reason").value.trim();
      try {
        const r = await api("POST", appPath(`/models/${enc(modelId)}/versions/${enc(ev.version)}/promote`), { override_reason: reason });
        $("#promote-state").textContent = r.note;
        $("#promote").disabled = true;
        flash(`${modelId} v${ev.version} now serves (before: ${r.previous_version ? "v" + r.previous_version : "none"}).`);
      } catch (err) { $("#promote-state").textContent = err.message; }
    });
    const table = $("#confusion");
    table.append(el("tr", {}, el("th", { text: "true \\ predicted" }), ...order.map((c) => el("th", { text: c }))));
    for (let i = 0; i < n; i++) {
      const row = el("tr", {}, el("th", { text: order[i] }));
      for (let j = 0; j < n; j++) {
        const v = cm[i * n + j];
        // Heads report each input's prediction: a cell opens exactly its inputs. Otherwise (deep
        // or multi-label models) it opens its row: every true-concept input of the split.
        const href = exact ? `/portal/apps/${enc(APP)}/gallery?` + new URLSearchParams({ eval_model: modelId, eval_version: ev.version, split, true: order[i], predicted: order[j] })
          : `/portal/apps/${enc(APP)}/gallery?concept=${enc(order[i])}&split=${enc(split)}`;
        const a = el("a", { href, title: `${v} × true ${order[i]}, predicted ${order[j]}` + (exact ? "" : ` (opens every true ${order[i]} input of the split)`), text: v, class: "cell" });
        const td = el("td", { class: i === j ? "diag" : v ? "off" : "" }, a);
        td.style.setProperty("--w", String(v / max));
        row.append(td);
      }
      table.append(row);
    }
  }

  // -- curation --------------------------------------------------------------------------------------
  async function curation() {
    async function showPolicy() {
      try {
        const p = await api("GET", appPath("/curation/policy"));
        $("#policy-state").textContent = `Current: model ${p.model_id}, ${p.strategy} ≥ ${Number(p.threshold.toPrecision(3))}, budget ${p.budget || "∞"}, ${p.max_per_minute || "∞"}/min, retrain after ${p.retrain_after_labels || "never"}${p.dataset_id ? ` on ${p.dataset_id}` : ""}`;
        $("#policy-model").value = p.model_id;
        $("#policy-threshold").value = Number(p.threshold.toPrecision(3));
        $("#policy-budget").value = p.budget;
        $("#policy-rate").value = p.max_per_minute;
        $("#policy-retrain").value = p.retrain_after_labels;
        $("#policy-dataset").value = p.dataset_id;
      } catch (e) { flash(""); $("#policy-state").textContent = "No policy yet."; }
    }
    $("#policy-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      await api("PUT", appPath("/curation/policy"), {
        model_id: $("#policy-model").value.trim(), threshold: Number($("#policy-threshold").value), budget: Number($("#policy-budget").value),
        max_per_minute: Number($("#policy-rate").value), retrain_after_labels: Number($("#policy-retrain").value), dataset_id: $("#policy-dataset").value.trim(),
      });
      flash("Policy saved.");
      showPolicy();
    });
    $("#label-errors-run").addEventListener("click", async () => {
      const r = await api("GET", appPath("/curation/label-errors?max_results=50"));
      const tb = $("#label-errors tbody");
      tb.replaceChildren();
      for (const e of r.errors) {
        const accept = el("button", { text: `relabel ${e.suggested_concept}`, onclick: async () => {
          await api("POST", appPath("/annotations"), { annotations: [{ input_id: e.input_id, add_concepts: [e.suggested_concept], remove_concepts: [e.given_concept] }] });
          accept.disabled = true; accept.textContent = "relabeled";
        } });
        tb.append(el("tr", {}, el("td", {}, el("img", { src: thumb(e.input_id), alt: "", width: 48, height: 48 })),
          el("td", {}, el("a", { href: inputPage(e.input_id), text: e.input_id })), el("td", { text: e.given_concept }), el("td", { text: e.suggested_concept }),
          el("td", { text: fmt(e.score, 2) }), el("td", {}, accept)));
      }
      if (!r.errors.length) tb.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: `No suspects among ${r.examined} labeled inputs.` })));
    });
    // The rounds, their learning curve and the drift report are rendered by the gateway (portal.py).
    showPolicy();
  }

  // -- embedding map --------------------------------------------------------------------------------
  const SVG_NS = "http://www.w3.org/2000/svg";
  function svgEl(tag, attrs) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, k === "href" ? safeUrl(v) : String(v));
    return e;
  }
  // tab10, then tab20's light shades; gray is kept for "no label" groups.
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#393b79", "#637939"];
  const GRAY = "#b0b4ba";

  async function embeddingMap() {
    try {
      await drawMap();
    } catch (e) { // api() flashed it too; the state line says why the map is empty
      $("#map-state").textContent = `No map: ${e.message}`;
      $("#map-state").className = "error";
    }
  }

  async function drawMap() {
    const card = $("#map-card");
    const { color, model, modelVersion, dataset, method } = card.dataset;
    const state = $("#map-state"), bar = $("#map-progress");
    if (color === "prediction" && !model) {
      state.textContent = "Colour by prediction needs a model: pick one above.";
      return;
    }
    let job = await api("POST", appPath("/map"), { method });
    while (job.state === "running") {
      bar.value = job.progress;
      state.textContent = `computing the ${method} map · ${job.stage} · ${Math.round(job.progress * 100)}%` + (job.points ? ` · ${job.points} inputs` : "");
      await new Promise((r) => setTimeout(r, 400));
      job = await api("GET", appPath(`/map/jobs/${enc(job.id)}`));
    }
    if (job.state !== "succeeded") {
      state.textContent = `The map failed: ${job.error}`;
      state.className = "error";
      return;
    }
    bar.value = 1;
    const params = { method, page_size: "5000" };
    if (color === "prediction") Object.assign(params, { model_id: model }, modelVersion ? { model_version: modelVersion } : {});
    if (color === "split" && dataset) params.dataset_id = dataset;
    const points = [];
    let token = "", page;
    do {
      page = await api("GET", appPath(`/map/points?${new URLSearchParams(token ? { ...params, page_token: token } : params)}`));
      points.push(...page.points);
      token = page.next_page_token;
      state.textContent = `reading the map · ${points.length} of ${page.total_size} points`;
    } while (token);
    const none = { concept: "unlabeled", split: dataset ? "not in the dataset" : "no split", prediction: "no prediction" }[color];
    const labelOf = (p) => color === "concept" ? (p.concepts.length === 1 ? p.concepts[0] : p.concepts.length ? "several concepts" : none)
      : color === "split" ? (splitName(p.split) || none) : (p.predicted_concept || none);
    const groups = new Map();
    for (const p of points) {
      const k = labelOf(p);
      if (!groups.has(k)) groups.set(k, []);
      groups.get(k).push(p);
    }
    const grayish = new Set([none, "several concepts"]);
    const names = [...groups.keys()].sort((a, b) => (grayish.has(a) - grayish.has(b)) || groups.get(b).length - groups.get(a).length || a.localeCompare(b));
    // Colours follow the app's concept list (then the other names in order), not the counts: a
    // concept keeps its colour when the map is coloured by prediction instead.
    const known = color === "split" ? ["train", "validation", "test"]
      : ((await api("GET", appPath("/concepts")).catch(() => ({}))).concepts || []).map((c) => c.name).sort((a, b) => a.localeCompare(b));
    const coloured = [...known, ...names.filter((n) => !grayish.has(n) && !known.includes(n)).sort((a, b) => a.localeCompare(b))];
    const colourOf = new Map(names.map((n) => [n, grayish.has(n) ? GRAY : PALETTE[coloured.indexOf(n) % PALETTE.length]]));
    const svg = $("#map");
    svg.replaceChildren();
    const W = 640, pad = 14, r = points.length > 5000 ? 2 : points.length > 1000 ? 3 : 4.5;
    const px = (v) => pad + ((v + 1) / 2) * (W - 2 * pad);
    // gray groups first, so labeled points are drawn on top of them
    for (const n of [...names].reverse()) {
      const g = svgEl("g", { fill: colourOf.get(n), "data-label": n });
      for (const p of groups.get(n)) {
        const a = svgEl("a", { href: inputPage(p.input_id), class: "pt", "data-id": p.input_id });
        const c = svgEl("circle", { cx: px(p.x).toFixed(1), cy: px(-p.y).toFixed(1), r });
        const t = svgEl("title");
        t.textContent = `${p.input_id} · ${n}` + (p.predicted_concept ? ` (${fmt(p.score, 2)})` : "");
        c.append(t);
        a.append(c);
        g.append(a);
      }
      svg.append(g);
    }
    const legend = $("#map-legend");
    legend.replaceChildren();
    for (const n of names) {
      const sw = svgEl("svg", { width: 12, height: 12, viewBox: "0 0 12 12" });
      sw.append(svgEl("circle", { cx: 6, cy: 6, r: 5, fill: colourOf.get(n) }));
      legend.append(el("li", { "data-label": n }, sw, el("span", { text: n }), el("span", { class: "muted", text: `(${groups.get(n).length})` })));
    }
    const source = page.predictions_source ? ` · predictions of ${model} v${page.model_version} (${page.predictions_source})` : "";
    const ds = page.dataset_version ? ` · splits of ${dataset} version ${page.dataset_version}` : "";
    state.textContent = `${points.length} inputs · ${method}, ${job.cached ? "cached" : "computed now"} · coloured by ${color}${source}${ds}`;
    card.dataset.ready = "1";
  }

  const pages = { gallery, input: inputView, search, queue, models, job, evaluation, curation, map: embeddingMap };
  document.addEventListener("DOMContentLoaded", () => {
    const page = pages[document.body.dataset.page];
    if (page) Promise.resolve(page()).catch((e) => flash(e.message, "error"));
  });
})();
