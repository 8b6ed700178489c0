// The dev server's page: reads /api/stream (server-sent events: a snapshot, then batched
// updates) and shows each entry, newest first. Every value from the server is put in the
// page as text (textContent, never innerHTML): event data is the app's, not ours.
"use strict";

const MAX_CARDS = 300; // entries kept in the list (the newest)
const MAX_SEEN = 200; // distinct ids and kinds offered in the filters
const $ = (id) => document.getElementById(id);
const state = { catalog: {}, filter: { distinct_id: "", kind: "" }, source: null };
const seen = { ids: new Set(), kinds: new Set() };

// el("td", {class: "x"}, "text", child): an element, its children text or elements.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const number = (n) => n.toLocaleString("en-US");
const shown = (value) => JSON.stringify(value); // strings quoted: the type shows
// "2026-11-30T12:37:30.800000Z" → "2026-11-30 12:37:30.800 UTC" (to the millisecond).
const clock = (iso) => (iso ? iso.replace("T", " ").replace(/(\.\d{3})\d*/, "$1").replace(/Z|\+00:00/, " UTC") : "—");
const timeOfDay = (iso) => clock(iso).slice(11);

// ---- one entry --------------------------------------------------------------------------

function whoButton(distinctId) {
  if (!distinctId) return el("span", { class: "who none" }, "(no distinct id)");
  const button = el("button", { type: "button", class: "who", title: "show this profile" }, distinctId);
  button.addEventListener("click", () => showProfile(distinctId));
  return button;
}

function propertiesTable(props, known) {
  const keys = Object.keys(props || {});
  if (!keys.length) return el("p", { class: "muted" }, "no properties");
  const fields = new Map((known ? known.fields : []).map((f) => [f.wire, f]));
  const body = el("tbody");
  for (const key of keys) {
    const field = fields.get(key);
    const note = known ? (field ? [field.type, field.rules].filter(Boolean).join(", ") : "not in the catalog") : "";
    body.append(el("tr", {}, el("th", {}, key), el("td", { class: "value" }, shown(props[key])),
      el("td", { class: field || !known ? "note" : "note warn" }, note)));
  }
  return el("table", { class: "props" }, body);
}

function catalogDetails(known) {
  const rows = el("tbody");
  for (const f of known.fields) {
    rows.append(el("tr", {}, el("th", {}, f.wire), el("td", {}, f.type),
      el("td", f.required ? { class: "required" } : {}, f.required ? "required" : "optional"), el("td", { class: "note" }, f.rules)));
  }
  return el("details", { class: "catalog" },
    el("summary", {}, known.class, " — ", known.description),
    el("table", { class: "props" }, rows));
}

function eventBody(event) {
  const known = state.catalog[event.kind];
  const parts = [
    el("dl", { class: "meta" },
      ...[["occurred", clock(event.occur_time)], ["session", event.session_id], ["event id", event.event_id]]
        .map(([name, value]) => el("div", {}, el("dt", {}, name), el("dd", {}, value || "—")))),
    propertiesTable(event.properties, known),
  ];
  if (Object.keys(event.auto_properties || {}).length) {
    parts.push(el("details", { class: "auto" }, el("summary", {}, "auto properties"),
      propertiesTable(event.auto_properties, null)));
  }
  if (known) parts.push(catalogDetails(known));
  return parts;
}

function eventCard(entry) {
  remember(entry);
  const known = state.catalog[entry.kind];
  return el("li", { class: "entry event", "data-kind": entry.kind || "", "data-distinct-id": entry.distinct_id || "" },
    el("header", {},
      el("span", { class: "kind" }, entry.kind || "(no kind)"),
      known ? el("span", { class: "class", title: known.description }, known.class) : null,
      whoButton(entry.distinct_id),
      entry.cookieless ? el("span", { class: "tag" }, "cookieless") : null,
      el("time", { datetime: entry.received, title: "received" }, clock(entry.received))),
    ...eventBody(entry));
}

function rejectionCard(entry) {
  const rules = el("ul", { class: "violations" });
  for (const v of entry.violations) {
    rules.append(el("li", {},
      el("code", { class: "field" }, v.field || "(the batch)"), " broke ",
      el("code", { class: "rule" }, v.rule_id), ": ", el("span", { class: "why" }, v.message)));
  }
  const named = Object.entries(entry.events).map(([index, event]) =>
    el("div", { class: "named" },
      el("h3", {}, `events[${index}]: `, el("span", { class: "kind" }, event.kind || "(no kind)"), " ",
        whoButton(event.distinct_id)),
      ...eventBody(event)));
  const size = entry.batch_size === 1 ? "1 event" : `${entry.batch_size} events`;
  return el("li", { class: "entry rejected" },
    el("header", {},
      el("span", { class: "badge" }, "refused"),
      el("span", { class: "code" }, entry.code),
      el("span", { class: "muted" }, `batch of ${size}: the real server refuses all of it`),
      el("time", { datetime: entry.received, title: "received" }, clock(entry.received))),
    entry.violations.length ? rules : el("p", { class: "why" }, entry.message),
    ...named);
}

const card = (entry) => (entry.type === "rejected" ? rejectionCard(entry) : eventCard(entry));

function remember(event) {
  for (const [set, value, list] of [[seen.ids, event.distinct_id, "seen-ids"], [seen.kinds, event.kind, "seen-kinds"]]) {
    if (!value || set.has(value) || set.size >= MAX_SEEN) continue;
    set.add(value);
    $(list).append(el("option", { value }));
  }
}

// ---- the stream ---------------------------------------------------------------------------

function showStats(stats) {
  $("count-received").textContent = number(stats.received);
  $("count-rejected").textContent = number(stats.rejected);
  const mb = (bytes) => `${(bytes / 1048576).toFixed(1)} MB`;
  const size = (bytes) => (bytes < 1048576 ? `${Math.ceil(bytes / 1024)} KB` : mb(bytes));
  $("count-held").textContent = `holding ${number(stats.held)} entries (${size(stats.held_bytes)} of ${mb(stats.max_bytes)})` +
    (stats.dropped ? `, ${number(stats.dropped)} oldest dropped` : "");
  $("limits").textContent = `The server keeps the newest ${mb(stats.max_bytes)} of entries (the oldest are dropped); ` +
    `this list shows the newest ${MAX_CARDS}; updates come at most every 150 ms.`;
}

function showEntries(entries, { replace }) {
  const list = $("entries");
  if (replace) list.replaceChildren();
  const fragment = document.createDocumentFragment();
  for (const entry of entries) fragment.append(card(entry)); // newest first already
  list.prepend(fragment);
  while (list.childElementCount > MAX_CARDS) list.lastElementChild.remove();
  $("empty").hidden = list.childElementCount > 0;
}

// The notice stays up until no update has been sampled for NOTICE_MS: at a steady high
// rate it would otherwise blink with every update.
const NOTICE_MS = 3000;
let noticeTimer = null;

function showSampling(update, what) {
  const notice = $("sampling");
  if (update.sampled) {
    notice.textContent = `Sampling: ${number(update.matched)} entries ${what}; showing the newest ${number(update.entries.length)}.`;
    notice.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { notice.hidden = true; }, NOTICE_MS);
  } else if (update.reset) {
    clearTimeout(noticeTimer);
    notice.hidden = true;
  }
  const skipped = $("skipped");
  if (update.skipped) {
    skipped.textContent = `${number(update.skipped)} entries were dropped from the server's store before this page could show them.`;
    skipped.hidden = false;
  } else if (update.reset) {
    skipped.hidden = true;
  }
}

function connect() {
  if (state.source) state.source.close();
  const query = new URLSearchParams(Object.entries(state.filter).filter(([, v]) => v));
  const source = new EventSource(`/api/stream?${query}`);
  state.source = source;
  const status = (text, cls) => { $("status").textContent = text; $("status").className = `status ${cls}`; };
  source.addEventListener("open", () => status("live", "live"));
  source.addEventListener("error", () => status("reconnecting…", "down"));
  source.addEventListener("snapshot", (message) => {
    const update = JSON.parse(message.data);
    showEntries(update.entries, { replace: true });
    showSampling({ reset: true }, "");
    showSampling(update, "match in the server's store");
    showStats(update.stats);
  });
  source.addEventListener("tick", (message) => {
    const update = JSON.parse(message.data);
    showEntries(update.entries, { replace: false });
    showSampling(update, "arrived since the last update");
    showStats(update.stats);
  });
  source.addEventListener("cleared", (message) => {
    showEntries([], { replace: true });
    showSampling({ reset: true }, "");
    showStats(JSON.parse(message.data).stats);
  });
}

// ---- profiles -----------------------------------------------------------------------------

function openSide(...children) {
  $("side-body").replaceChildren(...children);
  $("side").hidden = false;
}

async function showProfile(externalId) {
  const answer = await fetch(`/api/profile?${new URLSearchParams({ external_id: externalId })}`);
  const profile = await answer.json();
  if (!answer.ok) {
    openSide(el("h2", {}, "Profile"), el("p", { class: "muted" }, profile.error));
    return;
  }
  const merged = profile.merged_ids.length
    ? el("ul", { class: "merged" }, ...profile.merged_ids.map((id) => el("li", {}, el("code", {}, id))))
    : el("p", { class: "muted" }, "none");
  const events = el("ol", { class: "profile-events" }, ...profile.events.map((e) =>
    el("li", {}, el("span", { class: "kind" }, e.kind), " ", el("span", { class: "muted" }, e.distinct_id),
      el("time", { title: clock(e.occur_time) }, timeOfDay(e.occur_time)))));
  const filter = el("button", { type: "button" }, "Filter the list to this distinct id");
  filter.addEventListener("click", () => applyFilter({ distinct_id: externalId, kind: "" }));
  openSide(
    el("h2", {}, "Profile ", el("code", { class: "external-id" }, profile.external_id)),
    el("p", { class: "muted" }, `id ${profile.id} · created ${clock(profile.create_time)} · ${number(profile.total_events)} events`),
    el("h3", {}, "Traits"), propertiesTable(profile.traits, null),
    el("h3", {}, "Merged anonymous ids"), merged,
    el("h3", {}, `Events (newest first${profile.events.length < profile.total_events ? `, ${profile.events.length} shown` : ""})`),
    events, filter);
}

async function showProfiles() {
  const answer = await (await fetch("/api/profiles")).json();
  const list = el("ul", { class: "profiles" }, ...answer.external_ids.map((id) => el("li", {}, whoButton(id))));
  openSide(el("h2", {}, "Profiles"), answer.external_ids.length ? list : el("p", { class: "muted" }, "none yet"));
}

// ---- controls -----------------------------------------------------------------------------

function applyFilter(filter) {
  state.filter = filter;
  $("filter-distinct-id").value = filter.distinct_id;
  $("filter-kind").value = filter.kind;
  connect();
}

$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  applyFilter({ distinct_id: $("filter-distinct-id").value.trim(), kind: $("filter-kind").value.trim() });
});
$("filter-reset").addEventListener("click", () => applyFilter({ distinct_id: "", kind: "" }));
$("profiles-button").addEventListener("click", showProfiles);
$("side-close").addEventListener("click", () => { $("side").hidden = true; });
$("clear-button").addEventListener("click", async () => {
  await fetch("/api/clear", { method: "POST", headers: { "x-pug-page": "clear" } });
  $("side").hidden = true;
});
$("hint").textContent = `Pug(api_key="prv_local", base_url="${location.origin}")`;

fetch("/api/catalog").then((answer) => answer.json()).then((catalog) => {
  state.catalog = catalog;
  connect();
});
