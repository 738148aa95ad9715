// The leaderboard's chart: the best score over time, as a step line through each new record.
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("history-data").textContent);
  var canvas = document.getElementById("history-chart");
  if (!canvas || !data.records.length || typeof Chart === "undefined") { return; }
  var points = data.records.map(function (r) {
    return { x: Date.parse(r.at), y: r.score, who: r.participant, id: r.submission_id };
  });
  // Carry the last record to now, so the line shows how long it has stood.
  var last = points[points.length - 1];
  var line = points.concat([{ x: Math.max(Date.now(), last.x), y: last.y, who: last.who, id: last.id }]);

  // Time ticks without a date adapter: a round step (seconds to months) that gives at most
  // eight ticks over the span, at multiples of that step in UTC, each labelled only as finely as
  // the step needs, so no two ticks read the same.
  var SECOND = 1000, MINUTE = 60 * SECOND, HOUR = 60 * MINUTE, DAY = 24 * HOUR;
  var STEPS = [SECOND, 5 * SECOND, 15 * SECOND, 30 * SECOND, MINUTE, 5 * MINUTE, 15 * MINUTE,
    30 * MINUTE, HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY, 14 * DAY, 30 * DAY,
    91 * DAY, 365 * DAY];
  var MAX_TICKS = 8;
  function stepFor(span) {
    for (var i = 0; i < STEPS.length; i++) {
      if (span / STEPS[i] <= MAX_TICKS) { return STEPS[i]; }
    }
    return STEPS[STEPS.length - 1];
  }
  var first = line[0].x, end = line[line.length - 1].x;
  var step = stepFor(end - first);
  function iso(ms) { return new Date(ms).toISOString(); }
  function tickLabel(ms) {
    if (step >= DAY) { return iso(ms).slice(0, 10); }              // 2025-03-01
    if (step >= MINUTE) { return iso(ms).slice(5, 16).replace("T", " "); }  // 03-01 14:05
    return iso(ms).slice(11, 19);                                  // 14:05:30
  }
  function ticks() {
    var out = [];
    for (var v = Math.ceil(first / step) * step; v <= end; v += step) { out.push({ value: v }); }
    return out.length ? out : [{ value: first }];
  }
  function value(y) { return y.toPrecision(4) + (data.unit ? " " + data.unit : ""); }

  new Chart(canvas, {
    type: "line",
    data: { datasets: [{ label: "best " + data.label, data: line, stepped: "before", borderColor: "#198754", pointRadius: 3 }] },
    options: {
      animation: false,
      parsing: false,
      scales: {
        x: {
          type: "linear",
          min: first,
          max: end,
          title: { display: true, text: "time (UTC)" },
          afterBuildTicks: function (axis) { axis.ticks = ticks(); },
          ticks: { autoSkip: false, callback: function (v) { return tickLabel(v); } }
        },
        y: { title: { display: true, text: data.label + ", " + data.direction + " is better" } }
      },
      plugins: {
        tooltip: { callbacks: { label: function (c) { return c.raw.who + ", submission " + c.raw.id + ": " + value(c.raw.y); },
                                title: function (items) { return iso(items[0].raw.x).slice(0, 19).replace("T", " ") + " UTC"; } } }
      }
    }
  });
})();
