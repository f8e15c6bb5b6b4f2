// Outpost console: live updates by polling the console's JSON routes, and line charts
// drawn as SVG. Text from the service is only ever set with textContent, never as HTML.
"use strict";
(function () {
  var POLL_MS = 3000;
  var CHART_MS = 15000;
  var SVG = "http://www.w3.org/2000/svg";

  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function when(ts) {
    if (!ts) { return "—"; }
    var d = new Date(ts * 1000);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) +
      " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
  }
  function seconds(v) {
    if (v === null || v === undefined) { return "—"; }
    if (v < 1) { return Math.round(v * 1000) + " ms"; }
    if (v < 120) { return v.toFixed(1) + " s"; }
    return (v / 60).toFixed(1) + " min";
  }
  function shown(key, value) {
    if (key === "started_at" || key === "last_heartbeat" || key === "created_at" ||
        key === "completed_at") { return when(value); }
    if (key === "duration") { return seconds(value); }
    if (value === null || value === undefined || value === "") { return "—"; }
    return String(value);
  }
  function getJSON(url, done) {
    var xhr = new XMLHttpRequest();
    xhr.open("GET", url);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.onload = function () {
      if (xhr.status === 401) { window.location.assign("/console/signin"); return; }
      if (xhr.status === 200) {
        try { done(JSON.parse(xhr.responseText)); } catch (e) { /* next poll */ }
      }
    };
    xhr.send();
  }
  function setStatus(el, status) {
    if (!el) { return; }
    el.textContent = status;
    el.className = "status " + status;
  }
  function fill(row, data) {
    var cells = row.querySelectorAll("[data-field]");
    for (var i = 0; i < cells.length; i++) {
      var key = cells[i].getAttribute("data-field");
      if (!(key in data)) { continue; }
      if (key === "status") { setStatus(cells[i], data.status); }
      else { cells[i].textContent = shown(key, data[key]); }
    }
  }
  function fillRows(tbody, items) {
    if (!tbody) { return; }
    items.forEach(function (item) {
      var row = tbody.querySelector('tr[data-id="' + item.id + '"]');
      if (row) { fill(row, item); }
    });
  }

  // -- tasks table: update rows, add new ones at the top --------------------------------
  function cell(tr, text, cls, field) {
    var td = document.createElement("td");
    if (cls) { td.className = cls; }
    if (field) { td.setAttribute("data-field", field); }
    if (text !== null) { td.textContent = text; }
    tr.appendChild(td);
    return td;
  }
  function taskRow(t) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-id", t.id);
    tr.className = "fresh";
    var a = document.createElement("a");
    a.className = "mono";
    a.href = "/console/tasks/" + encodeURIComponent(t.id);
    a.textContent = t.id.slice(0, 8) + "…";
    cell(tr, null).appendChild(a);
    cell(tr, t.function_name, "fn");
    var span = document.createElement("span");
    span.setAttribute("data-field", "status");
    setStatus(span, t.status);
    cell(tr, null).appendChild(span);
    cell(tr, when(t.created_at), null, "created_at");
    cell(tr, when(t.completed_at), null, "completed_at");
    cell(tr, seconds(t.duration), "num", "duration");
    return tr;
  }
  function updateTasks(tasks) {
    var tbody = document.querySelector("#tasks tbody");
    if (!tbody) { return; }
    var none = tbody.querySelector("tr.none");
    for (var i = tasks.length - 1; i >= 0; i--) {
      var t = tasks[i];
      var row = tbody.querySelector('tr[data-id="' + t.id + '"]');
      if (row) { fill(row, t); continue; }
      if (none) { none.remove(); none = null; }
      tbody.insertBefore(taskRow(t), tbody.firstChild);
    }
  }

  // -- polling ---------------------------------------------------------------------------
  function pollEndpoints(table) {
    getJSON(table.getAttribute("data-poll"), function (doc) {
      fillRows(table.querySelector("tbody"), doc.endpoints);
    });
  }
  function pollEndpoint(box) {
    getJSON(box.getAttribute("data-poll"), function (doc) {
      fill(box, doc.endpoint);
      setStatus(document.querySelector("#ep-status .status"), doc.endpoint.status);
      if (doc.user_endpoints) { fillRows(document.querySelector("#user-endpoints tbody"), doc.user_endpoints); }
      updateTasks(doc.tasks);
    });
  }

  // -- charts ------------------------------------------------------------------------
  function el(name, attrs, parent) {
    var node = document.createElementNS(SVG, name);
    for (var k in attrs) { node.setAttribute(k, attrs[k]); }
    if (parent) { parent.appendChild(node); }
    return node;
  }
  function niceMax(v) {
    if (!(v > 0)) { return 1; }
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) { if (v <= steps[i] * p) { return steps[i] * p; } }
    return 10 * p;
  }
  function hhmm(ts) { var d = new Date(ts * 1000); return pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()); }
  function drawChart(box, buckets, series) {
    var w = box.clientWidth || 500, h = box.clientHeight || 190;
    var m = { l: 40, r: 8, t: 8, b: 20 };
    var max = 0;
    buckets.forEach(function (b) {
      series.forEach(function (s) { if (b[s.key] !== null && b[s.key] > max) { max = b[s.key]; } });
    });
    max = niceMax(max);
    var svg = el("svg", { viewBox: "0 0 " + w + " " + h, preserveAspectRatio: "none" });
    var x = function (i) { return m.l + (w - m.l - m.r) * (buckets.length < 2 ? 0 : i / (buckets.length - 1)); };
    var y = function (v) { return h - m.b - (h - m.t - m.b) * (v / max); };
    for (var g = 0; g <= 4; g++) {
      var v = max * g / 4, yy = y(v);
      el("line", { x1: m.l, x2: w - m.r, y1: yy, y2: yy, "class": g ? "grid" : "axis" }, svg);
      var label = el("text", { x: m.l - 4, y: yy + 3, "text-anchor": "end" }, svg);
      label.textContent = (max < 10 ? v.toFixed(v % 1 ? 2 : 0) : Math.round(v)).toString();
    }
    var ticks = 6;
    for (var k = 0; k <= ticks && buckets.length; k++) {
      var idx = Math.round((buckets.length - 1) * k / ticks);
      var t = el("text", { x: x(idx), y: h - 5, "text-anchor": k === 0 ? "start" : (k === ticks ? "end" : "middle") }, svg);
      t.textContent = hhmm(buckets[idx].t);
    }
    series.forEach(function (s) {
      var d = "", pen = false;
      buckets.forEach(function (b, i) {
        var val = b[s.key];
        if (val === null || val === undefined) { pen = false; return; }
        d += (pen ? "L" : "M") + x(i).toFixed(1) + " " + y(val).toFixed(1) + " ";
        pen = true;
      });
      if (d) { el("path", { d: d, "class": "series " + s.cls }, svg); }
      // A minute with no neighbour has no line to be part of: mark it with a dot.
      buckets.forEach(function (b, i) {
        var val = b[s.key];
        if (val === null || val === undefined) { return; }
        var prev = i > 0 ? buckets[i - 1][s.key] : null;
        var next = i < buckets.length - 1 ? buckets[i + 1][s.key] : null;
        if ((prev === null || prev === undefined) && (next === null || next === undefined)) {
          el("circle", { cx: x(i).toFixed(1), cy: y(val).toFixed(1), r: 2.5, "class": "dot " + s.cls }, svg);
        }
      });
    });
    while (box.firstChild) { box.removeChild(box.firstChild); }
    box.appendChild(svg);
    box.setAttribute("data-points", String(buckets.length));
  }
  function drawCharts(section) {
    var hours = document.getElementById("hours");
    var url = section.getAttribute("data-stats") + "?hours=" + encodeURIComponent(hours ? hours.value : "3");
    getJSON(url, function (doc) {
      drawChart(document.getElementById("chart-tasks"), doc.buckets,
        [{ key: "submitted", cls: "submitted" }, { key: "finished", cls: "finished" }]);
      drawChart(document.getElementById("chart-latency"), doc.buckets,
        [{ key: "latency_mean_s", cls: "mean" }, { key: "latency_max_s", cls: "max" }]);
      section.setAttribute("data-drawn", String(Date.now()));
    });
  }

  function pollTask(box) {
    getJSON(box.getAttribute("data-poll"), function (doc) {
      if (doc.task.status !== box.getAttribute("data-status")) { window.location.reload(); }
    });
  }

  function start() {
    var pending = document.querySelector("#pending[data-poll]");
    if (pending) { setInterval(function () { pollTask(pending); }, POLL_MS); }
    var table = document.querySelector("table[data-poll]");
    if (table) { setInterval(function () { pollEndpoints(table); }, POLL_MS); }
    var box = document.querySelector("#endpoint[data-poll]");
    if (box) { setInterval(function () { pollEndpoint(box); }, POLL_MS); }
    var charts = document.querySelector("section.charts[data-stats]");
    if (charts) {
      drawCharts(charts);
      setInterval(function () { drawCharts(charts); }, CHART_MS);
      var hours = document.getElementById("hours");
      if (hours) { hours.addEventListener("change", function () { drawCharts(charts); }); }
    }
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", start); }
  else { start(); }
})();
