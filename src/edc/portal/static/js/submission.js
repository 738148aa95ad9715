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
    if (!metrics || !metrics.latency || typeof Chart === "undefined") { return; }
    byId("charts").hidden = false;
    Object.keys(charts).forEach(function (k) { charts[k].destroy(); });
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
    // The organisers' buttons depend on the state (cancel while waiting, rerun once finished):
    // reload for them once it ends, rather than repeat that rule here.
    if (FINAL[s.status] && !FINAL[initial.status] && byId("admin-actions")) {
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
