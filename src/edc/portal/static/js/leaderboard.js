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
  function day(ms) { return new Date(ms).toISOString().slice(0, 16).replace("T", " "); }
  new Chart(canvas, {
    type: "line",
    data: { datasets: [{ label: "best " + data.metric, data: line, stepped: "before", borderColor: "#198754", pointRadius: 3 }] },
    options: {
      animation: false,
      parsing: false,
      scales: {
        x: { type: "linear", ticks: { callback: function (v) { return day(v); }, maxTicksLimit: 6 } },
        y: { title: { display: true, text: data.metric + " (" + data.direction + " is better)" } }
      },
      plugins: {
        tooltip: { callbacks: { label: function (c) { return c.raw.who + " (#" + c.raw.id + "): " + c.raw.y.toPrecision(4); },
                                title: function (items) { return day(items[0].raw.x) + " UTC"; } } }
      }
    }
  });
})();
