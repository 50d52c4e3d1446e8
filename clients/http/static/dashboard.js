// Le Stats Sportif dashboard: plain JavaScript, written for this page (no library).
// Reads /api/dashboard/* and runs statistics through the original job routes, like any
// producer. Values that came from peers are only ever set as text (textContent).
"use strict";

const LIVE_EVERY_MS = 1000;
const CHART_WINDOW_S = 300;
const FIRST_YEAR = 2011; // the years a statistic's `years` may name (docs/protocol.md)
const LAST_YEAR = 2022;
const SHOWN_CHARS = 200; // of a peer's text in a table cell; the cell's title holds more
// A tile grid of the 50 states and DC: [abbreviation, name, row, column].
const TILES = [
  ["AK", "Alaska", 0, 0], ["ME", "Maine", 0, 11],
  ["WI", "Wisconsin", 1, 6], ["VT", "Vermont", 1, 10], ["NH", "New Hampshire", 1, 11],
  ["WA", "Washington", 2, 1], ["ID", "Idaho", 2, 2], ["MT", "Montana", 2, 3],
  ["ND", "North Dakota", 2, 4], ["MN", "Minnesota", 2, 5], ["IL", "Illinois", 2, 6],
  ["MI", "Michigan", 2, 7], ["NY", "New York", 2, 9], ["MA", "Massachusetts", 2, 10],
  ["OR", "Oregon", 3, 1], ["NV", "Nevada", 3, 2], ["WY", "Wyoming", 3, 3],
  ["SD", "South Dakota", 3, 4], ["IA", "Iowa", 3, 5], ["IN", "Indiana", 3, 6],
  ["OH", "Ohio", 3, 7], ["PA", "Pennsylvania", 3, 8], ["NJ", "New Jersey", 3, 9],
  ["CT", "Connecticut", 3, 10], ["RI", "Rhode Island", 3, 11],
  ["CA", "California", 4, 1], ["UT", "Utah", 4, 2], ["CO", "Colorado", 4, 3],
  ["NE", "Nebraska", 4, 4], ["MO", "Missouri", 4, 5], ["KY", "Kentucky", 4, 6],
  ["WV", "West Virginia", 4, 7], ["VA", "Virginia", 4, 8], ["MD", "Maryland", 4, 9],
  ["DE", "Delaware", 4, 10],
  ["AZ", "Arizona", 5, 2], ["NM", "New Mexico", 5, 3], ["KS", "Kansas", 5, 4],
  ["AR", "Arkansas", 5, 5], ["TN", "Tennessee", 5, 6], ["NC", "North Carolina", 5, 7],
  ["SC", "South Carolina", 5, 8], ["DC", "District of Columbia", 5, 9],
  ["OK", "Oklahoma", 6, 4], ["LA", "Louisiana", 6, 5], ["MS", "Mississippi", 6, 6],
  ["AL", "Alabama", 6, 7], ["GA", "Georgia", 6, 8],
  ["HI", "Hawaii", 7, 0], ["TX", "Texas", 7, 4], ["FL", "Florida", 7, 9],
];
// "National" is the data's own rows for the whole US, not the mean over all rows.
const BESIDE = [["National", "National", 0, 0], ["GU", "Guam", 0, 1],
  ["PR", "Puerto Rico", 1, 0], ["VI", "Virgin Islands", 1, 1]];
// viridis: ordered in lightness and readable with the common colour-vision deficiencies.
const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80",
  "#5ec962", "#addc30", "#fde725"];

const $ = (id) => document.getElementById(id);
const state = { questions: [], question: null, means: {}, ranks: {}, selected: null,
  sort: { key: "mean", ascending: true }, samples: [], token: 0, ids: {}, years: null,
  hasTrend: true };

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function fmt(value, digits = 2) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "–";
}

class HttpError extends Error {
  constructor(status, reason) {
    super(reason || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({ credentials: "same-origin" }, options));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new HttpError(response.status, body.reason);
  return body;
}

// A route this service lacks: an older gateway answers 404 for an unknown statistic, and
// 405 for a GET of /api/<name> (its POST route for statistics).
function missingRoute(error) {
  return error instanceof HttpError && (error.status === 404 || error.status === 405);
}

// The `years` parameter of every statistic: none when all years are picked, so that an
// older service, which knows no `years`, answers as before.
function withYears(params) {
  return state.years ? Object.assign({}, params, { years: state.years }) : params;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One statistic through the broker: submit, then poll its result as the original clients do.
async function runJob(statistic, params) {
  const submitted = await api(`/api/${statistic}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(params),
  });
  if (typeof submitted.job_id !== "string") throw new Error(submitted.reason || "refused");
  for (let delay = 20; ; delay = Math.min(delay * 1.5, 400)) {
    const result = await api(`/api/get_results/${submitted.job_id}`);
    if (result.status === "done") return { jobId: submitted.job_id, data: result.data };
    if (result.status === "error") throw new Error(`${submitted.job_id}: ${result.reason}`);
    if (result.status === "cancelled") throw new Error(`${submitted.job_id} cancelled: ${result.reason}`);
    await sleep(delay);
  }
}

// --- the explorer --------------------------------------------------------------------

function buildTiles(container, tiles) {
  for (const [abbr, name, row, column] of tiles) {
    const tile = el("button", null, "tile nodata");
    tile.type = "button";
    tile.dataset.name = name;
    tile.dataset.row = row;
    tile.dataset.column = column;
    tile.tabIndex = -1;
    tile.style.gridRow = String(row + 1);
    tile.style.gridColumn = String(column + 1);
    tile.setAttribute("aria-pressed", "false");
    tile.append(el("span", abbr), el("span", "", "value"));
    tile.addEventListener("click", () => selectLocation(name));
    tile.addEventListener("keydown", moveFocus);
    container.append(tile);
  }
}

function allTiles() {
  return [...document.querySelectorAll(".tile")];
}

// Arrow keys move to the nearest tile in that direction (roving tabindex).
function moveFocus(event) {
  const steps = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
  const step = steps[event.key];
  if (!step) return;
  event.preventDefault();
  const here = event.currentTarget;
  const group = [...here.parentElement.querySelectorAll(".tile")];
  const [row, column] = [Number(here.dataset.row), Number(here.dataset.column)];
  let best = null;
  let bestScore = Infinity;
  for (const tile of group) {
    const dr = Number(tile.dataset.row) - row;
    const dc = Number(tile.dataset.column) - column;
    const along = dr * step[0] + dc * step[1];
    if (along <= 0) continue;
    const score = along * 10 + Math.abs(step[0] ? dc : dr) * 12;
    if (score < bestScore) [best, bestScore] = [tile, score];
  }
  if (best) focusTile(best);
}

function focusTile(tile) {
  for (const other of allTiles()) other.tabIndex = -1;
  tile.tabIndex = 0;
  tile.focus();
}

function colour(t) {
  const position = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1);
  return VIRIDIS[Math.round(position)];
}

async function loadQuestion(question) {
  const token = ++state.token;
  state.question = question;
  state.means = {};
  $("explorer-status").textContent = "running states_mean, global_mean, best5 and worst5…";
  const started = performance.now();
  try {
    const [means, global, best, worst] = await Promise.all([
      runJob("states_mean", withYears({ question })), runJob("global_mean", withYears({ question })),
      runJob("best5", withYears({ question })), runJob("worst5", withYears({ question })),
    ]);
    if (token !== state.token) return;
    // A location whose mean is not a number (null: the gateway's word for NaN) has no data.
    state.means = Object.fromEntries(Object.entries(means.data).filter(([, v]) => typeof v === "number"));
    $("map").dataset.job = means.jobId;
    paintMap(best.data, worst.data);
    $("global-mean").textContent = fmt(global.data.global_mean);
    $("global-mean").dataset.value = global.data.global_mean;
    $("national-rows").textContent = fmt(state.means.National);
    $("csv-download").disabled = false;
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const years = state.years ? `years ${state.years.join("-")}` : "all years";
    $("explorer-status").textContent =
      `${Object.keys(means.data).length} locations, ${years}, from jobs ${means.jobId}, ${global.jobId}, ` +
      `${best.jobId}, ${worst.jobId} (${seconds} s)`;
    document.body.dataset.mapReady = "true";
    selectLocation(state.selected && state.means[state.selected] !== undefined
      ? state.selected : null);
  } catch (error) {
    if (token === state.token) $("explorer-status").textContent = `failed: ${clip(error.message)}`;
  }
}

function paintMap(best, worst) {
  const values = Object.values(state.means);
  const [low, high] = [Math.min(...values), Math.max(...values)];
  const info = state.questions.find((q) => q.text === state.question);
  const ordered = Object.keys(state.means).sort((a, b) => info && !info.best_is_min
    ? state.means[b] - state.means[a] : state.means[a] - state.means[b]);
  state.ranks = Object.fromEntries(ordered.map((name, index) => [name, index + 1]));
  for (const tile of allTiles()) {
    const name = tile.dataset.name;
    const mean = state.means[name];
    tile.classList.toggle("nodata", mean === undefined);
    tile.classList.toggle("best", name in best);
    tile.classList.toggle("worst", name in worst);
    tile.style.background = mean === undefined ? "" : colour((mean - low) / (high - low || 1));
    tile.style.color = mean !== undefined && (mean - low) / (high - low || 1) > 0.6 ? "#111" : "#fff";
    tile.querySelector(".value").textContent = mean === undefined ? "" : fmt(mean, 1);
    if (mean === undefined) tile.style.color = "";
    tile.dataset.value = mean === undefined ? "" : String(mean);
    const marks = (name in best ? ", one of the best five" : "") + (name in worst ? ", one of the worst five" : "");
    tile.setAttribute("aria-label", mean === undefined ? `${name}: no data`
      : `${name}: ${fmt(mean)}%, rank ${state.ranks[name]}${marks}`);
  }
  paintLegend(low, high);
  paintTable();
}

function paintLegend(low, high) {
  const legend = $("legend");
  legend.replaceChildren(el("span", fmt(low, 1)));
  const ramp = el("span", null, "ramp");
  for (const stop of VIRIDIS) {
    const swatch = el("span");
    swatch.style.background = stop;
    ramp.append(swatch);
  }
  legend.append(ramp, el("span", `${fmt(high, 1)} %`), el("span", "▲ best five", "mark best"),
    el("span", "▼ worst five", "mark worst"));
}

function paintTable() {
  const { key, ascending } = state.sort;
  const rows = Object.entries(state.means).map(([name, mean]) => ({ name, mean, rank: state.ranks[name] }));
  rows.sort((a, b) => (a[key] < b[key] ? -1 : a[key] > b[key] ? 1 : 0) * (ascending ? 1 : -1));
  const body = $("states-table").tBodies[0];
  body.replaceChildren(...rows.map((row) => {
    const tr = el("tr");
    tr.dataset.name = row.name;
    if (row.name === state.selected) tr.className = "selected";
    const pick = el("button", row.name);
    pick.type = "button";
    pick.className = "linklike";
    pick.addEventListener("click", () => selectLocation(row.name));
    const nameCell = el("td");
    nameCell.append(pick);
    tr.append(nameCell, el("td", fmt(row.mean), "num"), el("td", row.rank, "num"));
    return tr;
  }));
  for (const th of $("states-table").tHead.rows[0].cells) {
    const sortKey = th.querySelector("button").dataset.key;
    th.setAttribute("aria-sort", sortKey === key ? (ascending ? "ascending" : "descending") : "none");
  }
}

function sortBy(key) {
  state.sort = { key, ascending: state.sort.key === key ? !state.sort.ascending : true };
  paintTable();
}

async function selectLocation(name) {
  state.selected = name;
  for (const tile of allTiles()) tile.setAttribute("aria-pressed", String(tile.dataset.name === name));
  for (const row of $("states-table").tBodies[0].rows) row.classList.toggle("selected", row.dataset.name === name);
  const detail = $("state-detail");
  if (!name || !state.question) return;
  const tile = allTiles().find((t) => t.dataset.name === name);
  if (tile) tile.tabIndex = 0;
  detail.dataset.ready = "false";
  detail.replaceChildren(el("h3", name), el("p", "running state_mean, state_diff_from_mean and state_mean_by_category…"));
  const question = state.question;
  const params = withYears({ question, state: name });
  const trend = state.hasTrend ? runJob("state_trend", params).catch((error) => error) : null;
  try {
    const [mean, diff, categories] = await Promise.all([
      runJob("state_mean", params), runJob("state_diff_from_mean", params),
      runJob("state_mean_by_category", params),
    ]);
    if (state.selected !== name || state.question !== question) return;
    paintDetail(name, mean, diff, categories);
  } catch (error) {
    if (state.selected === name) detail.replaceChildren(el("h3", name), el("p", `failed: ${clip(error.message)}`));
    return;
  }
  paintTrend(name, await trend);
}

function paintDetail(name, mean, diff, categories) {
  const detail = $("state-detail");
  const facts = el("dl", null, "facts");
  const add = (label, value, id, job) => {
    const dd = el("dd", fmt(value));
    dd.id = id;
    dd.dataset.value = value;
    dd.dataset.job = job;
    facts.append(el("dt", label), dd);
  };
  add("Mean (%)", mean.data[name], "state-mean", mean.jobId);
  add("Mean over all rows − this mean", diff.data[name], "state-diff", diff.jobId);
  const table = el("table");
  table.id = "state-categories";
  table.dataset.job = categories.jobId;
  table.append(el("caption", "Mean by category"));
  const head = el("tr");
  head.append(el("th", "category"), el("th", "group"), el("th", "mean (%)", "num"), el("th", ""));
  table.append(head);
  const groups = categories.data[name] || {};
  for (const [key, value] of Object.entries(groups)) {
    const parts = key.replace(/^\('|'\)$/g, "").split("', '");
    const tr = el("tr");
    tr.dataset.key = key;
    tr.dataset.value = value;
    const bar = el("span", null, "bar");
    bar.style.width = `${Math.max(0, Math.min(100, value)) * 1.5}px`;
    const barCell = el("td");
    barCell.append(bar);
    tr.append(el("td", parts[0]), el("td", parts[1] || ""), el("td", fmt(value), "num"), barCell);
    table.append(tr);
  }
  const trend = el("div", null, "trend");
  trend.id = "state-trend";
  detail.replaceChildren(el("h3", name), facts, trend, table);
  detail.dataset.ready = "true";
}

// --- the picked location's mean per year (state_trend) --------------------------------

// `outcome` is the state_trend job, an error, or null when the service has no such statistic.
function paintTrend(name, outcome) {
  const box = $("state-trend");
  if (!box || state.selected !== name) return;
  if (missingRoute(outcome)) state.hasTrend = false;
  if (!outcome || !state.hasTrend) {
    box.replaceChildren(el("p", "No trend: this service has no state_trend statistic.", "note"));
  } else if (outcome instanceof Error) {
    box.replaceChildren(el("p", `trend failed: ${clip(outcome.message)}`, "note"));
  } else {
    const series = Object.entries(outcome.data[name] || {})
      .map(([year, mean]) => [Number(year), mean])
      .filter(([year, mean]) => Number.isFinite(year) && typeof mean === "number" && isFinite(mean));
    box.replaceChildren(el("h4", "Mean (%) per year"), trendChart(name, series));
    box.dataset.job = outcome.jobId;
    box.dataset.points = JSON.stringify(series);
  }
  box.dataset.ready = "true";
}

function trendChart(name, series) {
  const ns = "http://www.w3.org/2000/svg";
  const [width, height, left, bottom] = [480, 160, 40, 20];
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", series.length ? `${name}, mean per year: ` +
    series.map(([year, mean]) => `${year} ${fmt(mean, 1)}%`).join(", ") : `${name}: no yearly data`);
  if (!series.length) return svg;
  const years = series.map(([year]) => year);
  const means = series.map(([, mean]) => mean);
  const [y0, y1, m0, m1] = [Math.min(...years), Math.max(...years), Math.min(...means), Math.max(...means)];
  const x = (year) => left + ((year - y0) / (y1 - y0 || 1)) * (width - left - 24);
  const y = (mean) => height - bottom - ((mean - m0) / (m1 - m0 || 1)) * (height - bottom - 14);
  const add = (tag, attributes, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  add("polyline", { points: series.map(([yr, mean]) => `${x(yr).toFixed(1)},${y(mean).toFixed(1)}`).join(" ") });
  for (const [year, mean] of series) {
    add("circle", { cx: x(year).toFixed(1), cy: y(mean).toFixed(1), r: 3 })
      .append(Object.assign(document.createElementNS(ns, "title"), { textContent: `${year}: ${fmt(mean)}%` }));
  }
  add("text", { x: 2, y: 12 }, `${fmt(m1, 1)}%`);
  add("text", { x: 2, y: height - bottom }, `${fmt(m0, 1)}%`);
  for (const year of years) add("text", { x: x(year).toFixed(1), y: height - 4, "text-anchor": "middle" }, String(year));
  return svg;
}

// --- the table as a CSV file (made here, from the table's own data) ------------------

// One CSV field (RFC 4180): quoted when it holds a quote, a comma, a line break or
// surrounding spaces, its quotes doubled.
function csvField(value) {
  const text = value === undefined || value === null ? "" : String(value);
  return /[",\r\n]|^\s|\s$/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function csvText(rows) {
  return rows.map((row) => row.map(csvField).join(",")).join("\r\n") + "\r\n";
}

// The table's rows in its order, means at full precision, with the question and years.
function tableCsv() {
  const years = state.years ? `${state.years[0]}-${state.years[1]}` : "all";
  const rows = [...$("states-table").tBodies[0].rows].map((tr) => {
    const name = tr.dataset.name;
    return [name, state.means[name], state.ranks[name], state.question, years];
  });
  return csvText([["location", "mean_percent", "rank", "question", "years"], ...rows]);
}

function downloadCsv() {
  const id = state.ids[state.question] || "question";
  const link = el("a");
  link.href = URL.createObjectURL(new Blob([tableCsv()], { type: "text/csv" }));
  link.download = `lss-${id}${state.years ? `-${state.years.join("-")}` : ""}.csv`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
}

// --- the service, live ---------------------------------------------------------------

function ago(seconds) {
  return typeof seconds === "number" ? `${seconds.toFixed(1)} s ago` : "–";
}

function paintWorkers(workers, standin) {
  $("workers").tBodies[0].replaceChildren(...workers.map((w) => {
    const tr = el("tr", null, w.gone ? "gone" : "live");
    tr.dataset.worker = w.id;
    tr.dataset.gone = String(w.gone);
    const data = `${String(w.fingerprint || "?").slice(0, 12)}${standin ? " (stand-in)" : ""}`;
    const heard = w.gone ? `left ${ago(w.left_s_ago)}` : ago(w.last_seen_s_ago);
    tr.append(el("td", w.id, "mono"), el("td", w.host), el("td", w.pid, "num"),
      el("td", w.credit, "num"), el("td", w.gone ? "–" : w.in_flight, "num"), el("td", heard),
      el("td", data, "mono"));
    return tr;
  }));
}

// One row per producer; a name came from a peer (a key's name), so it is set as text.
function paintProducers(producers) {
  const rows = (producers || []).map((p) => {
    const tr = el("tr");
    tr.dataset.producer = p.producer;
    tr.append(peerCell(p.producer, "mono"), el("td", p.queued, "num"), el("td", p.running, "num"),
      el("td", fmt(p.finished_per_s, 1), "num"), el("td", fmt(p.weight, 1), "num"));
    return tr;
  });
  if (!rows.length) {
    rows.push(el("tr"));
    rows[0].append(el("td", "no producer has work queued or running"));
  }
  $("producers").tBodies[0].replaceChildren(...rows);
}

function jobLink(jobId) {
  const link = el("a", jobId, "mono");
  link.href = `/api/get_results/${encodeURIComponent(jobId)}`;
  return link;
}

// A peer's text, cut for a table cell.
function clip(text, chars = SHOWN_CHARS) {
  const whole = String(text);
  return whole.length > chars ? `${whole.slice(0, chars)}…` : whole;
}

// A peer's value as text: strings as they are, anything else (null, lists, objects) as JSON.
function valueText(value) {
  return typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
}

function paramsText(params) {
  const entries = params && typeof params === "object" ? Object.entries(params) : [];
  return entries.map(([k, v]) => `${k}=${clip(valueText(v), 60)}`).join(", ");
}

// A cell for a peer's text: cut, the longer text in its title.
function peerCell(text, className) {
  const cell = el("td", clip(text), className ? `peer ${className}` : "peer");
  cell.title = clip(text, 1000);
  return cell;
}

function jobRow(job, last, lastClass) {
  const tr = el("tr");
  const idCell = el("td");
  idCell.append(jobLink(job.job_id));
  tr.append(idCell, el("td", clip(job.statistic, 60)), peerCell(paramsText(job.params)),
    peerCell(last, lastClass));
  return tr;
}

// The job tables' headers: the columns `jobRow` fills, then the table's own last two.
function jobHeads() {
  for (const table of [$("recent"), $("failures")]) {
    const tr = el("tr");
    for (const name of ["job", "statistic", "parameters", ...table.dataset.lastColumns.split(" ")]) {
      const th = el("th", name);
      th.scope = "col";
      tr.append(th);
    }
    table.tHead.replaceChildren(tr);
  }
}

function paintJobs(recent, failures) {
  $("recent").tBodies[0].replaceChildren(...recent.map((job) => {
    const shown = job.status === "cancelled" && job.reason ? `cancelled: ${valueText(job.reason)}` : job.status;
    const tr = jobRow(job, shown, `status-${job.status}`);
    const ms = job.finished_s && job.created_s ? (job.finished_s - job.created_s) * 1000 : null;
    tr.append(el("td", ms === null ? "running" : `${fmt(ms, 1)} ms`, "num"));
    return tr;
  }));
  $("failures").tBodies[0].replaceChildren(...failures.map((job) => {
    const tr = jobRow(job, job.reason || "failed", "status-error");
    tr.append(el("td", job.finished_s ? new Date(job.finished_s * 1000).toLocaleTimeString() : "–"));
    return tr;
  }));
  if (!failures.length) {
    const none = el("tr");
    none.append(el("td", "none since the store's newest jobs"));
    $("failures").tBodies[0].append(none);
  }
}

function paintLatency(latency) {
  const phases = ["queue_wait", "compute", "end_to_end"];
  $("latency").tBodies[0].replaceChildren(...Object.entries(latency).map(([statistic, cells]) => {
    const tr = el("tr");
    tr.dataset.statistic = statistic;
    tr.append(el("td", statistic), el("td", (cells.end_to_end || {}).count || 0, "num"));
    for (const phase of phases) {
      const cell = cells[phase] || {};
      tr.append(el("td", fmt(cell.p50_ms), "num"), el("td", fmt(cell.p99_ms), "num"));
    }
    return tr;
  }));
}

function paintRates(live) {
  const submitted = Number(String(live.last_job || "job_id_0").split("_").pop());
  const finished = (live.jobs.done || 0) + (live.jobs.error || 0) + (live.jobs.cancelled || 0);
  const now = live.now_s;
  state.samples.push({ now, submitted, finished });
  state.samples = state.samples.filter((s) => now - s.now <= CHART_WINDOW_S);
  const points = [];
  for (let i = 1; i < state.samples.length; i++) {
    const [a, b] = [state.samples[i - 1], state.samples[i]];
    const dt = b.now - a.now || 1;
    points.push({ now: b.now, submitted: Math.max(0, (b.submitted - a.submitted) / dt),
      finished: Math.max(0, (b.finished - a.finished) / dt) });
  }
  drawChart(points, now);
}

function drawChart(points, now) {
  const ns = "http://www.w3.org/2000/svg";
  const [width, height] = [600, 120];
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  const peak = Math.max(1, ...points.map((p) => Math.max(p.submitted, p.finished)));
  const last = points[points.length - 1] || { submitted: 0, finished: 0 };
  svg.setAttribute("aria-label", `jobs per second over the last minutes: now ${fmt(last.submitted, 1)} ` +
    `submitted, ${fmt(last.finished, 1)} finished; peak ${fmt(peak, 1)}`);
  const x = (t) => width - ((now - t) / CHART_WINDOW_S) * width;
  const y = (v) => height - 14 - (v / peak) * (height - 24);
  for (const series of ["submitted", "finished"]) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("class", series);
    line.setAttribute("points", points.map((p) => `${x(p.now).toFixed(1)},${y(p[series]).toFixed(1)}`).join(" "));
    svg.append(line);
  }
  const label = (text, lx, ly) => {
    const node = document.createElementNS(ns, "text");
    node.setAttribute("x", lx);
    node.setAttribute("y", ly);
    node.textContent = text;
    svg.append(node);
  };
  label(`${fmt(peak, 1)}/s`, 4, 12);
  label(`— submitted ${fmt(last.submitted, 1)}/s   - - finished ${fmt(last.finished, 1)}/s`, 80, 12);
  label("5 min ago", 4, height - 2);
  label("now", width - 24, height - 2);
  $("rates").replaceChildren(svg);
}

async function refreshLive() {
  try {
    const live = await api("/api/dashboard/live");
    if (!live.up) throw new Error(live.reason);
    $("standin-banner").hidden = !live.standin;
    $("broker-state").textContent = `broker ${String(live.broker_id).slice(0, 8)}` +
      `${live.shutting_down ? ", shutting down" : ""}${live.no_worker ? `: ${live.no_worker}` : ""}` +
      `, updated ${new Date().toLocaleTimeString()}`;
    $("queue-depth").textContent = live.queue_depth;
    $("in-flight").textContent = live.in_flight;
    for (const status of ["running", "done", "error", "cancelled"]) {
      $(`jobs-${status}`).textContent = live.jobs[status] || 0;
    }
    paintWorkers(live.workers, live.standin);
    paintProducers(live.producers);
    paintLatency(live.latency);
    paintJobs(live.recent, live.failures);
    paintRates(live);
    document.body.dataset.liveAt = String(live.now_s);
  } catch (error) {
    $("broker-state").textContent = `the service does not answer (${error.message}); retrying`;
  }
}

async function liveLoop() {
  for (;;) {
    await refreshLive();
    await sleep(LIVE_EVERY_MS);
  }
}

// The ids of the questions (GET /api/questions) name the CSV files; a service without
// that route (`missingRoute`) predates `years` and `state_trend` as well.
async function loadQuestionIds() {
  try {
    const { questions } = await api("/api/questions");
    state.ids = Object.fromEntries(questions.map((q) => [q.question, q.id]));
  } catch (error) { // without ids the files are named "question"; only a 404 says more
    if (!missingRoute(error)) return;
    state.hasTrend = false;
    for (const id of ["year-first", "year-last"]) $(id).disabled = true;
    $("years-note").textContent = "all years (this service cannot pick years)";
  }
}

function buildYears() {
  const [first, last] = [$("year-first"), $("year-last")];
  for (let year = FIRST_YEAR; year <= LAST_YEAR; year++) {
    first.append(Object.assign(el("option", year), { value: String(year) }));
    last.append(Object.assign(el("option", year), { value: String(year) }));
  }
  [first.value, last.value] = [String(FIRST_YEAR), String(LAST_YEAR)];
  const changed = (event) => {
    let [a, b] = [Number(first.value), Number(last.value)];
    if (a > b) [a, b] = event.target === first ? [a, a] : [b, b];
    [first.value, last.value] = [String(a), String(b)];
    state.years = a === FIRST_YEAR && b === LAST_YEAR ? null : [a, b];
    if (state.question) loadQuestion(state.question);
  };
  first.addEventListener("change", changed);
  last.addEventListener("change", changed);
}

async function start() {
  buildYears();
  buildTiles($("map"), TILES);
  buildTiles($("territories"), BESIDE);
  allTiles()[0].tabIndex = 0; // the map is one tab stop; arrows move inside it
  for (const button of $("states-table").querySelectorAll("th button")) {
    button.addEventListener("click", () => sortBy(button.dataset.key));
  }
  $("csv-download").addEventListener("click", downloadCsv);
  liveLoop();
  await loadQuestionIds();
  const { questions } = await api("/api/dashboard/questions");
  state.questions = questions;
  const select = $("question");
  select.replaceChildren(...questions.map((q) => {
    const option = el("option", q.text);
    option.value = q.text;
    return option;
  }));
  select.addEventListener("change", () => loadQuestion(select.value));
  await loadQuestion(questions[0].text);
}

document.addEventListener("DOMContentLoaded", () => {
  jobHeads();
  start().catch((error) => { $("explorer-status").textContent = `failed: ${error.message}`; });
});
