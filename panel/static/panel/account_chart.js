// The account page's chart: equity and balance, both floors as steps, breaches as red triangles.
// Chart.js is already on every admin page (unfold ships it); times are epoch ms, shown in UTC.
(function () {
  const data = JSON.parse(document.getElementById("risk-chart-data").textContent);
  const canvas = document.getElementById("risk-chart");
  if (!canvas || typeof Chart === "undefined") return;
  const css = (name, fallback) => getComputedStyle(document.documentElement).getPropertyValue(name).trim() || fallback;
  const xy = (points) => points.map(([t, v]) => ({ x: t, y: v }));
  const pad = (n) => String(n).padStart(2, "0");
  const utc = (ms) => {
    const d = new Date(ms);
    return `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  };
  const firsts = [data.series.equity[0]?.[0], data.breaches[0]?.t].filter((t) => t !== undefined);
  const start = firsts.length ? Math.max(data.since, Math.min(...firsts)) : data.since;
  const line = (label, points, color, extra) => ({
    label, data: xy(points), borderColor: color, backgroundColor: color, borderWidth: 2, pointRadius: 0, tension: 0, ...extra,
  });
  new Chart(canvas.getContext("2d"), {
    type: "line",
    data: {
      datasets: [
        line("Equity", data.series.equity, css("--color-primary-600", "#7c3aed")),
        line("Balance", data.series.balance, css("--color-blue-500", "#3b82f6"), { borderDash: [4, 3] }),
        line("Daily floor", data.series.daily_floor, css("--color-orange-500", "#f97316"), { stepped: true }),
        line("Total floor", data.series.total_floor, css("--color-red-600", "#dc2626"), { stepped: true }),
        {
          type: "scatter", label: "Protective action", pointStyle: "triangle", pointRadius: 9,
          backgroundColor: css("--color-red-600", "#dc2626"), borderColor: "white",
          data: data.breaches.map((b) => ({ x: b.t, y: b.equity ?? b.value, label: b.label })),
        },
      ],
    },
    options: {
      animation: false, maintainAspectRatio: false, parsing: true,
      interaction: { mode: "nearest", intersect: false },
      scales: {
        // From the first sample (or breach) on: a young account's half hour is not squeezed into 30 days.
        x: { type: "linear", min: start, max: data.until, ticks: { callback: (v) => utc(v), maxTicksLimit: 8 } },
        y: { ticks: { callback: (v) => Number(v).toLocaleString() } },
      },
      plugins: {
        legend: { display: true, position: "top", align: "end" },
        tooltip: {
          callbacks: {
            title: (items) => (items.length ? utc(items[0].raw.x) + " UTC" : ""),
            label: (item) => (item.raw.label ? item.raw.label : `${item.dataset.label}: ${Number(item.raw.y).toLocaleString()}`),
          },
        },
      },
    },
  });
})();
