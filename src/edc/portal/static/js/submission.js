// A submission's page: follows the submission live (server-sent events, or polling where the
// browser has no EventSource) and draws its latency charts once the result is in.
(function () {
  "use strict";
  var BADGE = { queued: "secondary", processing: "primary", completed: "success", failed: "danger", cancelled: "dark" };
  var FINAL = { completed: true, failed: true, cancelled: true };
  var charts = {};

  function byId(id) { return document.getElementById(id); }
  function setText(id, value) { var el = byId(id); if (el) { el.textContent = value; } }
  function when(iso) {
    if (!iso) { return ""; }
    return new Date(iso).toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }

  function renderFigures(figures) {
    var body = byId("figures");
    if (!body) { return; }
    body.replaceChildren();
    (figures || []).forEach(function (f) {
      var row = document.createElement("tr");
      var th = document.createElement("th");
      th.className = "fw-normal text-body-secondary";
      th.textContent = f.label;
      var td = document.createElement("td");
      td.textContent = f.value;
      row.append(th, td);
      body.append(row);
    });
  }

  // Sentences about how the result counts (a review flag, a stale or re-scored score).
  function renderNotices(notices) {
    var box = byId("notices");
    if (!box || !notices) { return; }
    box.replaceChildren();
    notices.forEach(function (n) {
      var div = document.createElement("div");
      div.className = "alert alert-" + (n.level === "warning" ? "warning" : "info") + " py-1 small";
      div.textContent = n.text;
      box.append(div);
    });
  }

  // The public run's logs, or a sentence where there are none (an empty box looks broken).
  function renderLogs(s) {
    var box = byId("public-logs");
    var none = byId("public-logs-empty");
    if (!box || !none) { return; }
    box.textContent = s.public_logs || "";
    box.hidden = !s.public_logs;
    none.hidden = Boolean(s.public_logs);
    none.textContent = FINAL[s.status] ? "No output was captured." : "No output yet.";
  }

  function drawCharts(metrics) {
    if (!metrics || typeof Chart === "undefined") { return; }
    Object.keys(charts).forEach(function (k) { charts[k].destroy(); });
    charts = {};
    if (metrics.latency) { drawLatency(metrics); }
    if (servingRates(metrics).length && byId("serving")) { drawServing(metrics.serving); }
  }

  function drawLatency(metrics) {
    byId("charts").hidden = false;
    var itl = metrics.itl_ms_by_position || [];
    charts.itl = new Chart(byId("itl-chart"), {
      type: "line",
      data: {
        labels: itl.map(function (_v, i) { return i + 1; }),
        datasets: [{ label: "ITL (ms)", data: itl, borderColor: "#0d6efd", pointRadius: 0, borderWidth: 1.5 }]
      },
      options: {
        animation: false,
        scales: { x: { title: { display: true, text: "output position" } }, y: { beginAtZero: true, title: { display: true, text: "ms" } } }
      }
    });
    var names = ["ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"];
    var colours = { p50: "#198754", p90: "#fd7e14", p99: "#dc3545" };
    charts.latency = new Chart(byId("latency-chart"), {
      type: "bar",
      data: {
        labels: ["TTFT", "TPOT", "ITL", "E2E"],
        datasets: ["p50", "p90", "p99"].map(function (p) {
          return {
            label: p, backgroundColor: colours[p],
            data: names.map(function (n) { var m = metrics.latency[n]; return m ? m[p] : null; })
          };
        })
      },
      options: { animation: false, scales: { y: { type: "logarithmic", title: { display: true, text: "ms (log scale)" } } } }
    });
  }

  // The serving sweep's rounds (metrics.serving.rates, in the order measured), sorted by offered
  // rate for the charts; a rate measured twice (a confirmation) is two points.
  function servingRates(metrics) {
    var rates = metrics && metrics.serving && metrics.serving.rates;
    if (!Array.isArray(rates)) { return []; }
    return rates
      .filter(function (r) { return r && typeof r.offered_rate === "number"; })
      .sort(function (a, b) { return a.offered_rate - b.offered_rate; });
  }

  // A p99 for a log scale: none where it is missing or not above zero.
  function p99(summary) { return summary && typeof summary.p99 === "number" && summary.p99 > 0 ? summary.p99 : null; }

  // A dashed horizontal or sloped reference line through two points.
  function reference(label, colour, from, to) {
    return { label: label, data: [from, to], borderColor: colour, borderDash: [6, 4], borderWidth: 1.5, pointRadius: 0, pointHitRadius: 0, fill: false };
  }

  function drawServing(serving) {
    var rates = servingRates({ serving: serving });
    var low = rates[0].offered_rate;
    var high = rates[rates.length - 1].offered_rate;
    var slo = serving.slo || {};
    var marks = rates.map(function (r) { return r.attained ? "circle" : "crossRot"; });
    var xAxis = { type: "linear", title: { display: true, text: "offered rate (requests/s)" } };
    function series(label, colour, value) {
      return {
        label: label, borderColor: colour, backgroundColor: colour, borderWidth: 1.5,
        pointStyle: marks, pointRadius: 4, pointHoverRadius: 6,
        data: rates.map(function (r) { return { x: r.offered_rate, y: value(r) }; })
      };
    }
    var latency = [
      series("TTFT p99 (ms)", "#0d6efd", function (r) { return p99(r.ttft_ms); }),
      series("TPOT p99 (ms)", "#fd7e14", function (r) { return p99(r.tpot_ms); })
    ];
    if (typeof slo.ttft_ms === "number") {
      latency.push(reference("TTFT SLO (" + slo.ttft_ms + " ms)", "#0d6efd", { x: low, y: slo.ttft_ms }, { x: high, y: slo.ttft_ms }));
    }
    // No line for slo.tpot_ms: the SLO bounds each request's end (TTFT bound + (N - 1) x it), not
    // its TPOT, and a TPOT under it proves nothing (one holding every token back has a TPOT of 0).
    charts.servingLatency = new Chart(byId("serving-latency-chart"), {
      type: "line",
      data: { datasets: latency },
      options: {
        animation: false,
        scales: { x: xAxis, y: { type: "logarithmic", title: { display: true, text: "ms (log scale)" } } }
      }
    });
    charts.servingGoodput = new Chart(byId("serving-goodput-chart"), {
      type: "line",
      data: {
        datasets: [
          series("goodput (requests/s meeting the SLO)", "#198754", function (r) {
            return typeof r.goodput === "number" ? r.goodput : null;
          }),
          reference("offered rate (y = x)", "#6c757d", { x: 0, y: 0 }, { x: high, y: high })
        ]
      },
      options: {
        animation: false,
        scales: { x: Object.assign({ min: 0 }, xAxis), y: { min: 0, title: { display: true, text: "requests/s" } } }
      }
    });
  }

  function render(s) {
    var badge = byId("status");
    badge.className = "badge fs-6 text-bg-" + (BADGE[s.status] || "secondary");
    badge.textContent = s.status;
    badge.dataset.status = s.status;
    var where = "";
    if (s.queue_position) { where = "position " + s.queue_position + " in the queue"; }
    else if (s.status === "processing") { where = "being evaluated"; }
    setText("position", where);
    setText("started", when(s.started_at));
    setText("finished", when(s.finished_at));
    setText("attempt", String(s.attempt));
    setText("failure", (s.failure_reason ? s.failure_reason + ": " : "") + (s.failure_message || ""));
    renderLogs(s);
    renderFigures(s.figures);
    renderNotices(s.notices);
    var cancel = byId("cancel-form");
    if (cancel && FINAL[s.status]) { cancel.hidden = true; }
    setText("live-note", FINAL[s.status] ? "" : "updates live");
    if (FINAL[s.status]) { drawCharts(s.result_metrics); }
    // The organisers' buttons depend on the state (cancel while waiting, rerun once finished),
    // and the serving section's headline and table are the server's: reload for them once it
    // ends, rather than repeat those rules here.
    var serverDrawn = byId("admin-actions") || (servingRates(s.result_metrics).length && !byId("serving"));
    if (FINAL[s.status] && !FINAL[initial.status] && serverDrawn) {
      window.location.reload();
    }
  }

  function poll(url) {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (s) {
        s.figures = null;
        render(s);
        if (!FINAL[s.status]) { setTimeout(function () { poll(url); }, 2000); }
        else { window.location.reload(); }
      })
      .catch(function () { setTimeout(function () { poll(url); }, 5000); });
  }

  var initial = JSON.parse(byId("submission-data").textContent);
  render(initial);
  if (!FINAL[initial.status]) {
    var config = byId("live-config").dataset;
    if (window.EventSource) {
      var source = new EventSource(config.events);
      source.addEventListener("submission", function (e) { render(JSON.parse(e.data)); });
      source.addEventListener("end", function () { source.close(); });
    } else {
      poll(config.api);
    }
  }
})();
