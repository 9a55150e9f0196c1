// facebank review console. Every action is a call of the JSON API with the key
// typed in the header; nothing is cached beyond the page. Text from the catalog
// is only ever set as textContent, never parsed as HTML.
"use strict";

const PAGE = 48;
const view = document.getElementById("view");
const state = { key: sessionStorage.getItem("facebank.key") || "", tokens: {}, selected: new Set(), urls: [] };

// ---- the API --------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status; this.code = e.code || ""; this.reason = e.reason || "";
  }
}

function auth(extra) {
  const h = Object.assign({}, extra || {});
  if (state.key) h.Authorization = "Bearer " + state.key;
  return h;
}

async function answer(r) {
  const text = await r.text();
  let body = {};
  try { body = text ? JSON.parse(text) : {}; } catch (_) { body = { error: { message: text } }; }
  if (!r.ok) throw new ApiError(r.status, body);
  return body;
}

async function call(service, method, body) {
  const r = await fetch(`/v1/${service}/${method}`, { method: "POST", headers: auth({ "Content-Type": "application/json" }), body: JSON.stringify(body || {}) });
  return answer(r);
}

// A call whose answers stream, one JSON object per line.
async function stream(service, method, body, onItem) {
  const r = await fetch(`/v1/${service}/${method}`, { method: "POST", headers: auth({ "Content-Type": "application/json" }), body: JSON.stringify(body) });
  if (!r.ok) return answer(r);
  const reader = r.body.getReader(), decoder = new TextDecoder();
  let rest = "";
  for (;;) {
    const { value, done } = await reader.read();
    rest += decoder.decode(value || new Uint8Array(), { stream: !done });
    const lines = rest.split("\n");
    rest = lines.pop();
    for (const line of lines) if (line.trim()) onItem(JSON.parse(line));
    if (done) break;
  }
}

// ---- small DOM helpers ----------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "class") node.className = v;
    else if (k === "style") Object.assign(node.style, v); // CSSOM: allowed by the page's CSP, unlike style attributes
    else if (v !== false && v !== undefined && v !== null) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

const enc = encodeURIComponent;

function show(...nodes) {
  for (const u of state.urls) URL.revokeObjectURL(u);
  state.urls = [];
  thumbs.disconnect();
  view.replaceChildren(...nodes);
  view.dataset.route = location.hash; // which page is on screen (tests wait on it)
  for (const img of view.querySelectorAll("img.thumb[data-src]")) thumbs.observe(img);
}

function message(id, text) {
  const box = document.getElementById(id);
  box.textContent = text || "";
  box.hidden = !text;
}

function failed(err) {
  let text = err.message || String(err);
  if (err.status === 401) text += " (type an API key at the top right)";
  message("error", text);
}

function confirmAction(text) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

// Run an action, report its error, re-render on success.
async function act(fn, notice) {
  message("error", "");
  try {
    await fn();
    await render();
    message("notice", notice || "");
  } catch (err) { failed(err); }
}

// ---- thumbnails: fetched with the key when they scroll into view -----------

const thumbs = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    const img = entry.target;
    thumbs.unobserve(img);
    fetch(img.dataset.src, { headers: auth() }).then(async (r) => {
      if (!r.ok) { img.classList.add("nocrop"); img.title = r.status === 412 ? "no crop kept for this face" : `HTTP ${r.status}`; return; }
      const url = URL.createObjectURL(await r.blob());
      state.urls.push(url);
      img.src = url;
      img.classList.add("loaded");
    }).catch(() => img.classList.add("nocrop"));
  }
}, { rootMargin: "200px" });

function thumb(collection, faceId) {
  return el("img", { class: "thumb", alt: `face ${faceId}`, "data-src": `/v1/collections/${enc(collection)}/faces/${faceId}/crop.jpg` });
}

function thumbGrid(collection, ids) {
  const shown = ids.slice(0, 4);
  return el("div", { class: shown.length === 1 ? "thumbs one" : "thumbs" }, shown.map((id) => thumb(collection, id)));
}

function pick(id) {
  const box = el("input", { type: "checkbox", "data-pick": id, onchange: () => { box.checked ? state.selected.add(id) : state.selected.delete(id); box.closest(".card").classList.toggle("selected", box.checked); } });
  box.checked = state.selected.has(id);
  return el("label", { class: "pick" }, box);
}

// ---- pages ------------------------------------------------------------------

async function collectionsPage() {
  const { collections = [] } = await call("Collections", "ListCollections", {});
  const rows = collections.map((c) => el("tr", { "data-collection": c.name },
    el("td", {}, el("a", { href: `#/c/${enc(c.name)}` }, c.name)),
    el("td", {}, c.stats.identities), el("td", {}, c.stats.faces), el("td", {}, c.stats.unassigned),
    el("td", {}, el("a", { href: `#/c/${enc(c.name)}/clusters` }, `${c.stats.clusters} clusters`)),
    el("td", {}, c.keep_crops ? "kept" : "off"), el("td", {}, c.model_id)));
  show(el("h1", {}, "Collections"),
    el("table", {}, el("tr", {}, ["name", "identities", "faces", "unassigned", "clusters", "crops", "model"].map((h) => el("th", {}, h))), rows));
}

async function identitiesPage(collection) {
  const stack = state.tokens[collection] || (state.tokens[collection] = [""]);
  const token = stack[stack.length - 1];
  const { identities = [], next_page_token: next } = await call("Identities", "ListIdentities", { collection, page_size: PAGE, page_token: token });
  const cards = identities.map((i) => el("a", { class: "card", href: `#/c/${enc(collection)}/i/${enc(i.id)}`, "data-identity": i.id },
    thumbGrid(collection, (i.faces || []).map((f) => f.face_id)),
    el("div", { class: "title" }, i.display_name || i.id), el("div", { class: "meta", title: i.id }, `${i.id} · ${i.face_count} faces`)));
  const pager = el("div", { class: "pager" },
    el("button", { id: "prev", disabled: stack.length === 1, onclick: () => { stack.pop(); render(); } }, "Previous"),
    el("span", {}, `page ${stack.length}`),
    el("button", { id: "next", disabled: !next, onclick: () => { stack.push(next); render(); } }, "Next"));
  show(el("h1", {}, collection, " ", el("small", {}, "identities")),
    el("div", { class: "toolbar" }, el("a", { href: `#/c/${enc(collection)}/clusters` }, "Clusters"), el("a", { href: "#/" }, "All collections")),
    cards.length ? el("div", { class: "grid" }, cards) : el("p", {}, "No identities yet."), pager);
}

function faceCard(collection, f, extra) {
  const q = (f.detection && f.detection.quality) || {};
  return el("div", { class: "card", "data-face": f.face_id }, thumbGrid(collection, [f.face_id]),
    el("div", { class: "meta", title: f.source_ref || "" }, f.source_ref || "no source"),
    el("div", { class: "meta" }, `quality ${q.passed ? "passed" : "failed"} · ${Math.round(q.face_size || 0)} px · det ${(f.detection ? f.detection.detection_score : 0).toFixed(2)}`),
    extra || null);
}

async function identityPage(collection, id) {
  const who = await call("Identities", "GetIdentity", { collection, identity_id: id });
  const faces = (who.faces || []).map((f) => faceCard(collection, f, el("button", {
    class: "delete-face", onclick: async () => {
      if (await confirmAction(`Delete face ${f.face_id} from ${who.display_name || who.id}? Its embedding and crop are erased.`))
        act(() => call("Identities", "DeleteFace", { collection, face_id: f.face_id }), `Face ${f.face_id} deleted.`);
    } }, "Delete face")));
  const forget = el("button", { id: "forget", class: "danger", onclick: async () => {
    if (!(await confirmAction(`Forget ${who.display_name || who.id}? Every face, crop, name and metadata of this person is erased for good.`))) return;
    message("error", "");
    try {
      const receipt = await call("Identities", "Forget", { collection, identity_id: id });
      const v = receipt.verification || {};
      show(el("h1", {}, "Forgotten"),
        el("p", { id: "forget-summary" }, `Receipt ${receipt.sequence}: ${Object.entries(receipt.removed || {}).map(([k, n]) => `${n} ${k}`).join(", ")}; verification ${v.passed ? "passed" : "FAILED"} (${v.method}).`),
        el("pre", { class: "receipt", id: "receipt" }, JSON.stringify(receipt, null, 2)),
        el("a", { href: `#/c/${enc(collection)}` }, "Back to the identities"));
    } catch (err) { failed(err); }
  } }, "Forget this person");
  const meta = Object.entries(who.metadata || {}).map(([k, v]) => `${k}=${v}`).join(", ");
  show(el("h1", {}, who.display_name || who.id, " ", el("small", {}, `${who.id} · ${who.face_count} faces`)),
    el("div", { class: "toolbar" }, el("a", { href: `#/c/${enc(collection)}` }, "Identities"), meta ? el("span", {}, meta) : null, forget),
    el("div", { class: "grid" }, faces));
}

async function clustersPage(collection, page) {
  const { clusters = [] } = await call("Clusters", "ListClusters", { collection });
  const start = page * PAGE, shown = clusters.slice(start, start + PAGE);
  const cards = shown.map((c) => el("div", { class: "card", "data-cluster": c.cluster_id }, pick(c.cluster_id),
    el("a", { href: `#/c/${enc(collection)}/k/${c.cluster_id}` }, thumbGrid(collection, c.representatives || []),
      el("div", { class: "title" }, c.identity_id || `cluster ${c.cluster_id}`)),
    el("div", { class: "meta" }, `${c.size} faces`)));
  const merge = el("button", { id: "merge", class: "primary", onclick: () => {
    const chosen = clusters.filter((c) => state.selected.has(c.cluster_id)).map((c) => c.cluster_id);
    if (chosen.length < 2) return message("error", "Select two or more clusters to merge (the largest keeps its id).");
    act(() => call("Clusters", "MergeClusters", { collection, into: chosen[0], others: chosen.slice(1) }), `Merged ${chosen.length} clusters into ${chosen[0]}.`);
  } }, "Merge selected");
  const bar = el("progress", { id: "progress", max: 1, value: 0, hidden: true });
  const stage = el("span", { id: "stage" });
  const run = el("button", { id: "run", onclick: async () => {
    run.disabled = true; bar.hidden = false; message("error", "");
    try {
      await stream("Clusters", "RunClustering", { collection }, (p) => {
        bar.max = Number(p.total) || 1; bar.value = Number(p.done) || 0;
        stage.textContent = p.summary ? `done: ${p.summary.clusters} clusters, ${p.summary.new_clusters} new, ${p.summary.unclustered} faces waiting` : `${p.stage} ${p.done}/${p.total}`;
      });
      message("notice", stage.textContent);
      await render();
    } catch (err) { failed(err); run.disabled = false; }
  } }, "Run clustering");
  const pages = Math.max(1, Math.ceil(clusters.length / PAGE));
  const to = (n) => `#/c/${enc(collection)}/clusters/${n}`;
  show(el("h1", {}, collection, " ", el("small", {}, `${clusters.length} clusters, largest first`)),
    el("div", { class: "toolbar" }, merge, run, bar, stage, el("a", { href: `#/c/${enc(collection)}/unclustered` }, "Unclustered faces"),
      el("a", { href: `#/c/${enc(collection)}` }, "Identities")),
    shown.length ? el("div", { class: "grid" }, cards) : el("p", {}, "No clusters yet: ingest photos (facebank ingest) and run clustering."),
    el("div", { class: "pager" }, page > 0 ? el("a", { href: to(page - 1) }, "Previous") : null, el("span", {}, `page ${page + 1} of ${pages}`),
      page + 1 < pages ? el("a", { href: to(page + 1), id: "next" }, "Next") : null));
}

function chosenFaces(faces) {
  return faces.map((f) => f.face_id).filter((id) => state.selected.has(id));
}

function faceTools(collection, faces, opts) {
  const need = (fn) => () => { const ids = chosenFaces(faces); if (!ids.length) return message("error", "Select one or more faces first."); fn(ids); };
  const target = el("input", { type: "number", id: "move-into", placeholder: "cluster id", min: 1 });
  const tools = [
    el("span", {}, "Move selected to cluster"), target,
    el("button", { id: "move", onclick: need((ids) => act(() => call("Clusters", "MoveFaces", { collection, into: target.value, face_ids: ids }), `Moved ${ids.length} faces.`)) }, "Move"),
    el("button", { id: "not-person", onclick: need(async (ids) => {
      if (await confirmAction(`Delete ${ids.length} face(s) as not a person? Their embeddings and crops are erased.`))
        act(async () => { for (const id of ids) await call("Identities", "DeleteFace", { collection, face_id: id }); }, `Deleted ${ids.length} faces.`);
    }) }, "Not a person"),
  ];
  if (opts.clusterId) tools.unshift(el("button", { id: "split", class: "primary", onclick: need((ids) =>
    act(() => call("Clusters", "SplitCluster", { collection, cluster_id: opts.clusterId, face_ids: ids }), `Split ${ids.length} faces into a new cluster.`)) }, "Split selected into a new cluster"));
  return el("div", { class: "toolbar" }, tools);
}

async function clusterPage(collection, clusterId) {
  const c = await call("Clusters", "GetCluster", { collection, cluster_id: clusterId });
  const faces = c.faces || [];
  const idInput = el("input", { type: "text", id: "name-id", placeholder: "identity id", value: c.identity_id || "" });
  const nameInput = el("input", { type: "text", id: "name-display", placeholder: "display name" });
  const nameForm = el("form", { class: "toolbar", id: "name-form", onsubmit: (e) => {
    e.preventDefault();
    act(async () => {
      const who = await call("Clusters", "NameCluster", { collection, cluster_id: clusterId, identity_id: idInput.value.trim(), display_name: nameInput.value.trim() });
      location.hash = `#/c/${enc(collection)}/i/${enc(who.id)}`;
    }, "Named.");
  } }, el("span", {}, c.identity_id ? `Named ${c.identity_id}. Rename or add to another identity:` : "Name this cluster:"), idInput, nameInput,
  el("button", { type: "submit", class: "primary", id: "name" }, "Name"));
  show(el("h1", {}, c.identity_id || `Cluster ${c.cluster_id}`, " ", el("small", {}, `${c.size} faces`)),
    el("div", { class: "toolbar" }, el("a", { href: `#/c/${enc(collection)}/clusters` }, "All clusters")), nameForm,
    faceTools(collection, faces, { clusterId }), el("div", { class: "grid" }, faces.map((f) => faceCard(collection, f, pick(f.face_id)))));
}

async function unclusteredPage(collection) {
  const { unclustered = [], suggestions = [] } = await call("Clusters", "ListClusters", { collection, unclustered_only: true, suggest: true });
  const shown = unclustered.slice(0, 10 * PAGE);
  const like = new Map(suggestions.map((s) => [s.face_id, s]));
  const hint = (f) => {
    const s = like.get(f.face_id);
    if (!s) return el("div", { class: "meta" }, "no likely person");
    const accept = s.cluster_id !== "0" ? el("button", { class: "accept", onclick: () =>
      act(() => call("Clusters", "MoveFaces", { collection, into: s.cluster_id, face_ids: [f.face_id] }), `Face ${f.face_id} added to ${s.display_name || s.identity_id}.`) }, "Accept") : null;
    return el("div", { class: "suggestion", "data-suggests": s.identity_id },
      el("a", { href: `#/c/${enc(collection)}/i/${enc(s.identity_id)}` }, `looks like ${s.display_name || s.identity_id} (${s.score.toFixed(2)})`), " ", accept);
  };
  show(el("h1", {}, "Unclustered faces", " ", el("small", {}, `${unclustered.length} waiting for confident neighbours`)),
    el("div", { class: "toolbar" }, el("a", { href: `#/c/${enc(collection)}/clusters` }, "All clusters"),
      shown.length < unclustered.length ? el("span", {}, `showing the first ${shown.length}`) : null),
    faceTools(collection, shown, {}), el("div", { class: "grid" }, shown.map((f) => faceCard(collection, f, [pick(f.face_id), hint(f)]))));
}

async function searchPage() {
  const { collections = [] } = await call("Collections", "ListCollections", {});
  const select = el("select", { id: "search-collection" }, collections.map((c) => el("option", { value: c.name }, c.name)));
  const out = el("div", { id: "results" });
  const run = async (file) => {
    message("error", "");
    const form = new FormData();
    form.append("request", JSON.stringify({ collection: select.value }));
    form.append("image", file, file.name);
    try {
      const r = await answer(await fetch("/v1/Search/SearchByImage", { method: "POST", headers: auth(), body: form }));
      drawResults(out, file, r);
    } catch (err) { failed(err); }
  };
  const input = el("input", { type: "file", id: "search-file", accept: "image/*", onchange: () => input.files[0] && run(input.files[0]) });
  const drop = el("div", { id: "drop", ondragover: (e) => { e.preventDefault(); drop.classList.add("over"); }, ondragleave: () => drop.classList.remove("over"),
    ondrop: (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) run(e.dataTransfer.files[0]); } },
  "Drop a photo here, or ", input);
  show(el("h1", {}, "Search"), el("div", { class: "toolbar" }, el("span", {}, "Collection"), select), drop, out);
}

function drawResults(out, file, r) {
  const url = URL.createObjectURL(file);
  state.urls.push(url);
  const img = el("img", { src: url, alt: "searched photo" });
  const photo = el("div", { class: "photo" }, img);
  const list = el("ol", { id: "matches" });
  img.addEventListener("load", () => {
    const sx = img.clientWidth / img.naturalWidth, sy = img.clientHeight / img.naturalHeight;
    (r.faces || []).forEach((f, n) => {
      const b = f.face.box, best = (f.matches || [])[0];
      const label = best ? `${n + 1}. ${best.display_name || best.identity_id} ${best.score.toFixed(2)}` : `${n + 1}. unknown`;
      photo.append(el("div", { class: best ? "box" : "box unknown", style: { left: `${b.x0 * sx}px`, top: `${b.y0 * sy}px`, width: `${(b.x1 - b.x0) * sx}px`, height: `${(b.y1 - b.y0) * sy}px` } }, el("span", {}, label)));
    });
  });
  (r.faces || []).forEach((f, n) => list.append(el("li", { class: "match" }, (f.matches || []).length
    ? (f.matches || []).map((m) => `${m.display_name || m.identity_id} (${m.identity_id}) ${m.score.toFixed(3)}`).join("; ")
    : `unknown (nobody at or above ${r.threshold.toFixed(2)})`)));
  out.replaceChildren(el("p", {}, `${(r.faces || []).length} face(s); ${r.faces_below_quality || 0} left out below the quality gate.`), photo, list);
}

// ---- routing ----------------------------------------------------------------

async function render() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  try {
    if (parts[0] === "search") return await searchPage();
    if (parts[0] === "c" && parts[1]) {
      const c = parts[1];
      if (parts[2] === "i" && parts[3]) return await identityPage(c, parts[3]);
      if (parts[2] === "k" && parts[3]) return await clusterPage(c, parts[3]);
      if (parts[2] === "clusters") return await clustersPage(c, Number(parts[3] || 0));
      if (parts[2] === "unclustered") return await unclusteredPage(c);
      return await identitiesPage(c);
    }
    return await collectionsPage();
  } catch (err) {
    failed(err);
    show(el("p", {}, "This page could not be loaded."));
  }
}

window.addEventListener("hashchange", () => { state.selected.clear(); message("error", ""); message("notice", ""); render(); });
document.getElementById("api-key").value = state.key;
document.getElementById("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.key = document.getElementById("api-key").value.trim();
  sessionStorage.setItem("facebank.key", state.key);
  message("error", "");
  render();
});
render();
