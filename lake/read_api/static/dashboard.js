// The fleet dashboard: plain JavaScript and <canvas>, no CDN, no tile server (the area is drawn from
// the geofence's polygons). Every REFRESH_MS it reads /v1/stats, /v1/vehicles (all pages),
// /v1/alerts?state=open and redraws. An API key, when needed (not loopback), comes from the
// page's fragment: /#key=SECRET. What it drew is left in data- attributes for tests and scripts.
"use strict";

const REFRESH_MS = 5000;
const KEY = new URLSearchParams(location.hash.slice(1)).get("key");
if (KEY) document.cookie = "lake_key=" + encodeURIComponent(KEY) + "; path=/data-docs; SameSite=Strict";
const RULE_COLOURS = { low_battery: "#fc8d59", geofence: "#d7301f", offline: "#7570b3" };
const LAYER_COLOURS = { bronze: "#b07d2b", silver: "#7d8a99", gold: "#d4a017", hot: "#d7301f" };
const lagHistory = {}; // layer -> [[t, seconds]], sampled at each refresh (the page's own history)

async function getJson(path) {
  const headers = KEY ? { Authorization: "Bearer " + KEY } : {};
  const response = await fetch(path, { headers });
  if (!response.ok) throw new Error(path + ": " + response.status);
  return response.json();
}

async function allVehicles() {
  let vehicles = [];
  let after = null;
  for (let page = 0; page < 20; page++) { // at most 200,000 vehicles
    const body = await getJson("/v1/vehicles?limit=10000" + (after ? "&after=" + encodeURIComponent(after) : ""));
    vehicles = vehicles.concat(body.vehicles);
    if (!body.next_after) break;
    after = body.next_after;
  }
  return vehicles;
}

function batteryColour(soc, charging) {
  if (soc === null || soc === undefined) return "#999";
  if (soc < 15 && !charging) return "#d7301f";
  if (soc < 30) return "#fc8d59";
  return "#1a9850";
}

function rings(geojson) {
  const out = [];
  const add = (geometry) => {
    if (!geometry) return;
    if (geometry.type === "Polygon") out.push(...geometry.coordinates);
    else if (geometry.type === "MultiPolygon") geometry.coordinates.forEach((p) => out.push(...p));
  };
  if (geojson.type === "FeatureCollection") geojson.features.forEach((f) => add(f.geometry));
  else if (geojson.type === "Feature") add(geojson.geometry);
  else add(geojson);
  return out;
}

function drawMap(canvas, area, vehicles) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 20;
  ctx.clearRect(0, 0, w, h);
  const polygons = rings(area);
  let minLon = Infinity, maxLon = -Infinity, minLat = Infinity, maxLat = -Infinity;
  const extend = (lon, lat) => {
    minLon = Math.min(minLon, lon); maxLon = Math.max(maxLon, lon);
    minLat = Math.min(minLat, lat); maxLat = Math.max(maxLat, lat);
  };
  polygons.forEach((ring) => ring.forEach(([lon, lat]) => extend(lon, lat)));
  const placed = vehicles.filter((v) => v.lat !== null && v.lon !== null);
  if (!polygons.length) placed.forEach((v) => extend(v.lon, v.lat));
  if (!isFinite(minLon)) { minLon = -1; maxLon = 1; minLat = -1; maxLat = 1; }
  const kx = Math.cos(((minLat + maxLat) / 2) * Math.PI / 180); // equirectangular, true at mid-latitude
  const scale = Math.min((w - 2 * pad) / ((maxLon - minLon) * kx || 1), (h - 2 * pad) / ((maxLat - minLat) || 1));
  const x = (lon) => pad + (lon - minLon) * kx * scale;
  const y = (lat) => h - pad - (lat - minLat) * scale;
  ctx.lineWidth = 2;
  ctx.strokeStyle = "#3b6fb6";
  ctx.fillStyle = "rgba(59,111,182,0.10)";
  polygons.forEach((ring) => {
    ctx.beginPath();
    ring.forEach(([lon, lat], i) => (i ? ctx.lineTo(x(lon), y(lat)) : ctx.moveTo(x(lon), y(lat))));
    ctx.closePath(); ctx.fill(); ctx.stroke();
  });
  let drawn = 0;
  for (const v of placed) {
    const px = x(v.lon), py = y(v.lat);
    if (px < 0 || py < 0 || px > w || py > h) continue; // far outside the area: counted, not drawn
    ctx.beginPath();
    ctx.arc(px, py, 3, 0, 2 * Math.PI);
    const colour = batteryColour(v.soc_pct, v.charging);
    if (v.online === false) { ctx.strokeStyle = "#666"; ctx.lineWidth = 1.5; ctx.stroke(); }
    else if (v.in_use) { ctx.fillStyle = colour; ctx.fill(); }
    else { ctx.strokeStyle = colour; ctx.lineWidth = 1.5; ctx.stroke(); }
    drawn++;
  }
  canvas.dataset.vehiclesDrawn = String(drawn);
  canvas.dataset.polygons = String(polygons.length);
  document.getElementById("map-caption").textContent =
    drawn + " of " + vehicles.length + " vehicles drawn" + (placed.length < vehicles.length ? " (" + (vehicles.length - placed.length) + " without a position)" : "");
}

// A small chart: series = [{name, colour, points: [[x, y], ...]}]; bars=true draws stacked bars per x.
function drawChart(canvas, series, options = {}) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 44, bottom = 22, top = 8, right = 8;
  ctx.clearRect(0, 0, w, h);
  const all = series.flatMap((s) => s.points);
  canvas.dataset.points = String(all.length);
  ctx.fillStyle = "#667"; ctx.font = "11px system-ui";
  if (!all.length) { ctx.fillText("no data yet", w / 2 - 30, h / 2); return; }
  const xs = all.map((p) => p[0]);
  let minX = Math.min(...xs), maxX = Math.max(...xs);
  if (minX === maxX) { minX -= 1; maxX += 1; }
  let maxY = options.bars ? 0 : Math.max(...all.map((p) => p[1]));
  if (options.bars) {
    const totals = {};
    all.forEach(([px, py]) => (totals[px] = (totals[px] || 0) + py));
    maxY = Math.max(...Object.values(totals));
  }
  maxY = maxY > 0 ? maxY * 1.1 : 1;
  const X = (v) => left + ((v - minX) / (maxX - minX)) * (w - left - right);
  const Y = (v) => h - bottom - (v / maxY) * (h - bottom - top);
  ctx.strokeStyle = "#ccd"; ctx.lineWidth = 1;
  ctx.beginPath(); ctx.moveTo(left, top); ctx.lineTo(left, h - bottom); ctx.lineTo(w - right, h - bottom); ctx.stroke();
  ctx.fillText(formatNumber(maxY / 1.1), 2, Y(maxY / 1.1) + 4);
  ctx.fillText("0", 30, h - bottom + 4);
  if (!options.categorical) {
    ctx.fillText(formatTime(minX), left, h - 6);
    ctx.fillText(formatTime(maxX), w - right - 40, h - 6);
  }
  if (options.bars) {
    const xsUnique = [...new Set(xs)].sort((a, b) => a - b);
    const barWidth = Math.max(2, ((w - left - right) / (xsUnique.length + 1)) * 0.8);
    const stacked = {};
    series.forEach((s) => s.points.forEach(([px, py]) => {
      const base = stacked[px] || 0;
      ctx.fillStyle = s.colour;
      ctx.fillRect(X(px) - barWidth / 2, Y(base + py), barWidth, Y(base) - Y(base + py));
      stacked[px] = base + py;
    }));
  } else {
    series.forEach((s) => {
      ctx.strokeStyle = s.colour; ctx.lineWidth = 2; ctx.beginPath();
      s.points.forEach(([px, py], i) => (i ? ctx.lineTo(X(px), Y(py)) : ctx.moveTo(X(px), Y(py))));
      ctx.stroke();
      if (s.points.length === 1) { ctx.fillStyle = s.colour; ctx.fillRect(X(s.points[0][0]) - 2, Y(s.points[0][1]) - 2, 4, 4); }
    });
  }
  let lx = left + 6;
  series.forEach((s) => {
    ctx.fillStyle = s.colour; ctx.fillRect(lx, top + 2, 8, 8);
    ctx.fillStyle = "#334"; ctx.fillText(s.name, lx + 11, top + 10);
    lx += ctx.measureText(s.name).width + 24;
  });
}

function formatNumber(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return v.toFixed(v < 10 ? 1 : 0);
}

function formatTime(ms) {
  return new Date(ms).toISOString().slice(11, 16);
}

function formatAge(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 120) return Math.round(seconds) + " s";
  if (seconds < 7200) return Math.round(seconds / 60) + " min";
  if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
  return (seconds / 86400).toFixed(1) + " d";
}

function renderCounts(stats) {
  const v = stats.hot.vehicles;
  const open = Object.values(stats.hot.open_alerts_by_rule).reduce((a, b) => a + b, 0);
  document.getElementById("counts").innerHTML =
    `<span>${v.total} vehicles</span><span>${v.online} online</span><span>${v.in_use} in use</span>` +
    `<span>${v.low_battery} low battery</span><span>${open} open alerts</span>`;
}

function renderFreshness(stats) {
  const now = stats.now;
  const parts = stats.freshness.map((layer) => {
    const until = layer.published_until_ms;
    const behind = until === null ? null : (now - until) / 1000;
    const cadence = { bronze: 3900, silver: 7200, gold: 2 * 86400, hot: 60 }[layer.layer] || 3600;
    const cls = behind === null ? "stale" : behind <= cadence ? "ok" : behind <= 3 * cadence ? "late" : "stale";
    return `<span class="${cls}" title="${layer.detail}">${layer.layer}: ${formatAge(behind)}</span>`;
  });
  document.getElementById("freshness").innerHTML = parts.join("");
}

function renderAlerts(alerts) {
  const body = document.querySelector("#alerts tbody");
  body.innerHTML = "";
  for (const a of alerts.alerts) {
    const row = document.createElement("tr");
    row.className = a.severity;
    for (const text of [a.opened_at.slice(0, 19).replace("T", " "), a.vehicle_id, a.rule, a.severity]) {
      const cell = document.createElement("td");
      cell.textContent = text; // never innerHTML: ids come from devices
      row.appendChild(cell);
    }
    body.appendChild(row);
  }
  document.getElementById("alerts-count").textContent = alerts.count + (alerts.next_before ? "+" : "");
  document.getElementById("alerts").dataset.rows = String(alerts.alerts.length);
}

function renderCharts(stats) {
  drawChart(document.getElementById("chart-throughput"), [
    { name: "events", colour: "#3b6fb6", points: stats.hot.events_per_5m.map((p) => [p.window_start, p.events]) },
  ]);
  for (const layer of stats.freshness) {
    if (stats.newest_kafka_ms === null || layer.published_until_ms === null) continue;
    const history = (lagHistory[layer.layer] = lagHistory[layer.layer] || []);
    history.push([stats.now, Math.max(0, (stats.newest_kafka_ms - layer.published_until_ms) / 1000)]);
    if (history.length > 720) history.shift();
  }
  drawChart(document.getElementById("chart-lag"), Object.entries(lagHistory).map(([name, points]) => ({
    name, colour: LAYER_COLOURS[name] || "#333", points,
  })));
  drawChart(document.getElementById("chart-freshness"), stats.freshness
    .filter((l) => l.published_until_ms !== null)
    .map((l, i) => ({ name: l.layer, colour: LAYER_COLOURS[l.layer] || "#333", points: [[i, (stats.now - l.published_until_ms) / 1000]] })),
    { bars: true, categorical: true });
  drawChart(document.getElementById("chart-quarantine"), [
    { name: "quarantined %", colour: "#a35d00", points: stats.silver_hours.map((r) => [r.hour_ms, r.rows_in ? (100 * r.quarantined) / r.rows_in : 0]) },
  ]);
  const byRule = {};
  stats.hot.alerts_opened_per_hour.forEach((r) => (byRule[r.rule] = byRule[r.rule] || []).push([r.hour, r.count]));
  drawChart(document.getElementById("chart-alerts"), Object.entries(byRule).map(([rule, points]) => ({
    name: rule, colour: RULE_COLOURS[rule] || "#555", points,
  })), { bars: true });
}

let area = null;
async function refresh() {
  try {
    if (area === null) area = await getJson("/v1/geofence");
    const [stats, vehicles, alerts] = await Promise.all([getJson("/v1/stats"), allVehicles(), getJson("/v1/alerts?state=open&limit=500")]);
    renderCounts(stats);
    renderFreshness(stats);
    drawMap(document.getElementById("map"), area, vehicles);
    renderAlerts(alerts);
    renderCharts(stats);
    document.getElementById("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
    document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
  } catch (error) {
    document.getElementById("updated").textContent = "refresh failed: " + error.message;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
