// gembatch load report: draws every chart as inline SVG from the JSON embedded in the page.
// No network, no libraries. The page marks itself `data-status="rendered"` when done and
// counts uncaught errors in `data-errors`, which the browser test reads.
"use strict";
(function () {
  const root = document.documentElement;
  let errorCount = 0;
  const noteError = () => { errorCount += 1; root.dataset.errors = String(errorCount); };
  window.addEventListener("error", noteError);
  const consoleError = console.error.bind(console);
  console.error = (...args) => { noteError(); consoleError(...args); };
  root.dataset.errors = "0";

  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f6feb", "#d1495b", "#2a9d8f", "#e9a03b", "#7b4fd6", "#5c6773"];
  const LATENCIES = ["ttft", "ttft_corrected", "itl", "tpot", "e2e", "e2e_corrected"];
  const LATENCY_NAMES = {
    ttft: "time to first token", ttft_corrected: "time to first token, from intended start",
    itl: "inter-token latency", tpot: "time per output token",
    e2e: "end-to-end latency", e2e_corrected: "end-to-end latency, from intended start",
  };
  const runs = JSON.parse(document.getElementById("gembatch-data").textContent);

  function node(tag, attrs, parent, text) {
    const made = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) made.setAttribute(key, value);
    if (text !== undefined) made.textContent = text;
    if (parent) parent.appendChild(made);
    return made;
  }

  function seconds(value) {
    if (value === null || value === undefined || !isFinite(value)) return "–";
    if (value === 0) return "0";
    if (value < 0.001) return (value * 1e3).toFixed(3) + " ms";
    if (value < 1) return (value * 1e3).toFixed(1) + " ms";
    return value.toFixed(2) + " s";
  }
  const number = (value, digits) => (value === null || value === undefined || !isFinite(value)) ? "–" : value.toFixed(digits);
  const percent = (value) => number(value * 100, 2) + " %";

  function ticks(min, max, count) {
    if (!(max > min)) { max = min + 1; }
    const raw = (max - min) / count;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) || raw;
    const first = Math.floor(min / step) * step;
    const out = [];
    for (let v = first; v <= max + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
    if (out[out.length - 1] < max) out.push(out[out.length - 1] + step);
    return out;
  }

  // spec: {kind: "line"|"bar", xLabel, yLabel, yFormat, xFormat, categories (bar),
  //        series: [{name, color, dash, points: [[x, y], ...]} | {name, color, values: [...]}],
  //        markers: [{x, label}]}
  function chart(container, spec) {
    const holder = node("div", { class: "chart" }, container);
    const width = spec.wide ? 1280 : 640, height = 300, pad = { left: 76, right: 16, top: 12, bottom: 44 };
    const svg = node("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": spec.yLabel }, holder);
    const tooltip = node("div", { class: "tooltip" }, holder);
    const legend = node("div", { class: "legend" }, holder);
    const hidden = new Set();
    const plot = node("svg:g", {}, svg);

    function draw() {
      plot.replaceChildren();
      const visible = spec.series.filter((s) => !hidden.has(s.name));
      const xs = [], ys = [0];
      if (spec.kind === "bar") {
        spec.categories.forEach((_, i) => xs.push(i));
        visible.forEach((s) => s.values.forEach((v) => { if (v !== null && isFinite(v)) ys.push(v); }));
      } else {
        visible.forEach((s) => s.points.forEach(([x, y]) => { xs.push(x); if (y !== null && isFinite(y)) ys.push(y); }));
        (spec.markers || []).forEach((m) => xs.push(m.x));
      }
      const yTicks = ticks(0, Math.max(...ys) || spec.yEmptyMax || 1, 5);
      const yMax = yTicks[yTicks.length - 1];
      const xMin = spec.kind === "bar" ? -0.5 : Math.min(...xs, spec.xMin !== undefined ? spec.xMin : Infinity);
      const xMax = spec.kind === "bar" ? spec.categories.length - 0.5 : Math.max(...xs);
      const xSpan = xMax > xMin ? xMax - xMin : 1;
      const sx = (x) => pad.left + ((x - xMin) / xSpan) * (width - pad.left - pad.right);
      const sy = (y) => height - pad.bottom - (y / yMax) * (height - pad.top - pad.bottom);

      const grid = node("svg:g", { class: "grid" }, plot);
      const axis = node("svg:g", { class: "axis" }, plot);
      yTicks.forEach((t) => {
        node("svg:line", { x1: pad.left, x2: width - pad.right, y1: sy(t), y2: sy(t) }, grid);
        node("svg:text", { x: pad.left - 6, y: sy(t) + 4, "text-anchor": "end" }, axis, spec.yFormat(t));
      });
      node("svg:line", { x1: pad.left, x2: width - pad.right, y1: sy(0), y2: sy(0) }, axis);
      if (spec.kind === "bar") {
        spec.categories.forEach((c, i) => node("svg:text", { x: sx(i), y: height - pad.bottom + 16, "text-anchor": "middle" }, axis, c));
      } else if (xs.length) {
        (spec.xTicks || ticks(xMin, xMax, spec.wide ? 12 : 6)).filter((t) => t >= xMin && t <= xMax).forEach((t) => {
          node("svg:text", { x: sx(t), y: height - pad.bottom + 16, "text-anchor": "middle" }, axis, spec.xFormat(t));
        });
      }
      node("svg:text", { x: (pad.left + width - pad.right) / 2, y: height - 6, "text-anchor": "middle" }, axis, spec.xLabel);
      node("svg:text", { x: 12, y: pad.top + 4, transform: `rotate(-90 12 ${pad.top + 4})`, "text-anchor": "end" }, axis, spec.yLabel);

      (spec.markers || []).forEach((m, i) => {
        node("svg:line", { x1: sx(m.x), x2: sx(m.x), y1: pad.top, y2: sy(0), stroke: "#9aa4ae", "stroke-dasharray": "2 3" }, plot);
        node("svg:text", { x: sx(m.x) + 3, y: pad.top + 10 + (i % 2) * 12, fill: "#5c6773", "font-size": "10" }, plot, m.label);
      });

      if (spec.kind === "bar") {
        const groupWidth = (width - pad.left - pad.right) / spec.categories.length * 0.7;
        const barWidth = groupWidth / Math.max(visible.length, 1);
        visible.forEach((s, k) => s.values.forEach((v, i) => {
          if (v === null || !isFinite(v)) return;
          const x = sx(i) - groupWidth / 2 + k * barWidth;
          node("svg:rect", { x, y: sy(v), width: Math.max(barWidth - 2, 1), height: Math.max(sy(0) - sy(v), 0), fill: s.color, "data-series": s.name }, plot);
        }));
      } else {
        visible.forEach((s) => {
          const drawn = s.points.filter(([, y]) => y !== null && isFinite(y));
          if (!drawn.length) return;
          const d = drawn.map(([x, y], i) => `${i ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join("");
          node("svg:path", { d, fill: "none", stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dash ? "6 4" : "none", "data-series": s.name }, plot);
          if (drawn.length <= 40) drawn.forEach(([x, y]) => node("svg:circle", { cx: sx(x), cy: sy(y), r: 3, fill: s.color }, plot));
        });
      }

      svg.onmousemove = (event) => {
        const box = svg.getBoundingClientRect();
        const x = xMin + ((event.clientX - box.left) * (width / box.width) - pad.left) / (width - pad.left - pad.right) * xSpan;
        const lines = [];
        if (spec.kind === "bar") {
          const i = Math.round(x);
          if (i < 0 || i >= spec.categories.length) { tooltip.style.display = "none"; return; }
          lines.push(spec.categories[i]);
          visible.forEach((s) => lines.push(`${s.name}: ${spec.yFormat(s.values[i])}${s.notes ? " " + s.notes[i] : ""}`));
        } else {
          visible.forEach((s) => {
            let best = null;
            s.points.forEach((p) => { if (p[1] !== null && (best === null || Math.abs(p[0] - x) < Math.abs(best[0] - x))) best = p; });
            if (best) lines.push(`${s.name}: ${spec.yFormat(best[1])} at ${spec.xFormat(best[0])}`);
          });
        }
        tooltip.replaceChildren(...lines.map((line) => node("div", {}, null, line)));
        tooltip.style.display = "block";
        tooltip.style.left = `${Math.min(event.clientX - holder.getBoundingClientRect().left + 12, holder.clientWidth - 220)}px`;
        tooltip.style.top = `${event.clientY - holder.getBoundingClientRect().top + 12}px`;
      };
      svg.onmouseleave = () => { tooltip.style.display = "none"; };
    }

    spec.series.forEach((s) => {
      const button = node("button", { type: "button", title: "show or hide" }, legend);
      node("span", { class: "swatch", style: `background:${s.color}` }, button);
      node("span", {}, button, s.name);
      button.onclick = () => {
        if (hidden.has(s.name)) hidden.delete(s.name); else hidden.add(s.name);
        button.classList.toggle("off", hidden.has(s.name));
        draw();
      };
    });
    draw();
  }

  function section(title, wide) {
    const box = node("section", { class: wide ? "wide" : "" }, document.getElementById("main"));
    const heading = node("h2", {}, box);
    node("span", {}, heading, title);
    return { box, heading };
  }

  function picker(heading, options, initial, onChange) {
    const select = node("select", {}, heading);
    options.forEach(([value, label]) => { const o = node("option", { value }, select, label); if (value === initial) o.selected = true; });
    select.onchange = () => onChange(select.value);
    return select;
  }

  // A run's name in legends: its id when there are two runs, nothing when one.
  const tag = (run, name) => runs.length > 1 ? `${run.summary.run_id}: ${name}` : name;
  const xOfStep = (run, step) => step.users !== null ? step.users : (step.offered_rate !== null ? step.offered_rate : step.number);
  const loadAxis = runs[0].steps.length && runs[0].steps[0].users !== null ? "concurrent users" : "offered requests/s";
  const stepLabels = () => {
    const longest = runs.reduce((a, r) => (r.steps.length > a.steps.length ? r : a), runs[0]);
    return longest.steps.map((s) => runs.length > 1 ? `step ${s.number}` : s.label);
  };

  function header() {
    const box = document.getElementById("header");
    node("h1", {}, box, runs.length > 1 ? `gembatch load: ${runs.map((r) => r.summary.run_id).join(" vs ")}` : `gembatch load: ${runs[0].summary.run_id}`);
    runs.forEach((run) => {
      const s = run.summary;
      const started = new Date(s.started_at_unix_s * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
      node("div", { class: "meta" }, box,
        `${s.run_id}: ${s.shape} (${s.steps.join(", ")}; ${s.hold}) against ${s.target}, model ${s.model}, started ${started}; ` +
        `${s.requests} requests; prompts: ${s.prompts}; outputs: ${s.output_tokens}; seed ${s.seed}`);
      if (s.warmup_s > 0) node("div", { class: "note" }, box, `${s.run_id}: the first ${s.warmup_s} s were warm-up, left out of every statistic.`);
      if (s.interrupted) node("div", { class: "banner warn" }, box, `${s.run_id}: interrupted; the figures cover what ran.`);
      s.invalid_steps.forEach((line) => node("div", { class: "banner warn" }, box, `${s.run_id}: invalid ${line}`));
      if (s.slo.length) {
        const failed = s.violations.length > 0;
        const banner = node("div", { class: `banner ${failed ? "fail" : "pass"}` }, box,
          `${s.run_id}: SLO ${s.slo.join(", ")}: ${failed ? "FAILED" : "passed on every step"}`);
        s.violations.forEach((v) => node("div", {}, banner, v));
      }
    });
  }

  function latencyByLoad() {
    const { box, heading } = section("Latency against load");
    const holder = node("div", {}, box);
    const render = (latency) => {
      holder.replaceChildren();
      const series = [];
      runs.forEach((run, r) => ["p50", "p90", "p95", "p99"].forEach((stat, k) => series.push({
        name: tag(run, `${stat} ${latency}`), color: COLORS[k], dash: r > 0,
        points: run.steps.map((step) => [xOfStep(run, step), step.latency[latency][stat]]),
      })));
      const xTicks = [...new Set(runs.flatMap((run) => run.steps.map((step) => xOfStep(run, step))))];
      chart(holder, { kind: "line", xLabel: loadAxis, yLabel: LATENCY_NAMES[latency], yFormat: seconds, xFormat: (x) => String(x), xTicks, series });
    };
    picker(heading, LATENCIES.map((l) => [l, LATENCY_NAMES[l]]), "e2e", render);
    render("e2e");
  }

  function throughputPerStep() {
    const { box, heading } = section("Throughput per step");
    const holder = node("div", {}, box);
    const figures = { rps: ["successful requests/s", (v) => number(v, 2)], output_tokens_per_s: ["output tokens/s", (v) => number(v, 1)], achieved_rate: ["requests/s sent", (v) => number(v, 2)] };
    const render = (figure) => {
      holder.replaceChildren();
      const series = runs.map((run, r) => ({ name: tag(run, figures[figure][0]), color: COLORS[r], values: run.steps.map((s) => s[figure]) }));
      chart(holder, { kind: "bar", categories: stepLabels(), xLabel: "step", yLabel: figures[figure][0], yFormat: figures[figure][1], series });
    };
    picker(heading, Object.entries(figures).map(([k, v]) => [k, v[0]]), "rps", render);
    render("rps");
  }

  function errorsPerStep() {
    const { box } = section("Error rate per step");
    const series = runs.map((run, r) => ({
      name: tag(run, "failed share"), color: COLORS[(r + 1) % COLORS.length], values: run.steps.map((s) => s.error_rate),
      notes: run.steps.map((s) => `(${Object.entries(s.outcomes).filter(([k]) => k !== "ok").map(([k, v]) => `${k} ${v}`).join(", ") || "no errors"})`),
    }));
    chart(box, { kind: "bar", categories: stepLabels(), xLabel: "step", yLabel: "failed requests", yFormat: percent, yEmptyMax: 0.01, series });
    node("p", { class: "note" }, box, "Classes: http_4xx, http_429, http_5xx, timeout, connect_error, stream_broken, empty_completion.");
  }

  function distributions() {
    const { box } = section("Latency distribution (successful requests)");
    const series = [];
    runs.forEach((run, r) => [["ttft", "time to first token"], ["e2e", "end-to-end"]].forEach(([key, name], k) => series.push({
      name: tag(run, name), color: COLORS[k + 2], dash: r > 0, points: run.distributions[key].map(([latency, share]) => [latency, share]),
    })));
    chart(box, { kind: "line", xLabel: "latency", yLabel: "share of requests at or below", yFormat: percent, xFormat: seconds, xMin: 0, series });
  }

  function timeline() {
    const { box, heading } = section("Timeline", true);
    const holder = node("div", {}, box);
    const views = {
      throughput: ["requests/s, errors/s and requests in flight", (v) => number(v, 1), (run) => [
        ["successful requests/s", run.timeline.rps], ["failed requests/s", run.timeline.errors_per_s], ["requests in flight", run.timeline.in_flight]]],
      tokens: ["output tokens/s", (v) => number(v, 0), (run) => [["output tokens/s", run.timeline.output_tokens_per_s]]],
      latency: ["median end-to-end latency", seconds, (run) => [["p50 end-to-end", run.timeline.p50_e2e]]],
    };
    const render = (view) => {
      holder.replaceChildren();
      const [label, format, pick] = views[view];
      const series = [];
      runs.forEach((run, r) => pick(run).forEach(([name, values], k) => series.push({
        name: tag(run, name), color: COLORS[k], dash: r > 0, points: run.timeline.t.map((t, i) => [t, values[i]]),
      })));
      const first = runs[0];
      const markers = first.timeline.warmup_end_s !== null ? [{ x: first.timeline.warmup_end_s, label: "warm-up ends" }] : [];
      first.steps.forEach((s) => markers.push({ x: s.started_s, label: s.label }));
      chart(holder, { kind: "line", wide: true, xLabel: "seconds since the start", yLabel: label, yFormat: format, xFormat: (x) => number(x, 0) + " s", xMin: 0, series, markers });
    };
    picker(heading, Object.entries(views).map(([k, v]) => [k, v[0]]), "throughput", render);
    render("throughput");
  }

  function stepTable() {
    const { box } = section("Steps", true);
    const wrap = node("div", { class: "scroll" }, box);
    const table = node("table", {}, wrap);
    const head = node("tr", {}, node("thead", {}, table));
    const columns = [
      ["run", (run) => run.summary.run_id], ["step", (run, s) => `${s.number}: ${s.label}`],
      ["requests", (run, s) => s.requests], ["ok req/s", (run, s) => number(s.rps, 2)],
      ["out tok/s", (run, s) => number(s.output_tokens_per_s, 1)], ["in flight", (run, s) => number(s.mean_concurrency, 1)],
      ["errors", (run, s) => percent(s.error_rate)],
      ["p50 ttft", (run, s) => seconds(s.latency.ttft.p50)], ["p95 ttft", (run, s) => seconds(s.latency.ttft.p95)],
      ["p95 ttft (corr.)", (run, s) => seconds(s.latency.ttft_corrected.p95)],
      ["p50 tpot", (run, s) => seconds(s.latency.tpot.p50)], ["p95 itl", (run, s) => seconds(s.latency.itl.p95)],
      ["mean e2e", (run, s) => seconds(s.latency.e2e.mean)], ["p50 e2e", (run, s) => seconds(s.latency.e2e.p50)],
      ["p95 e2e", (run, s) => seconds(s.latency.e2e.p95)], ["p99 e2e", (run, s) => seconds(s.latency.e2e.p99)],
      ["p99 e2e (corr.)", (run, s) => seconds(s.latency.e2e_corrected.p99)], ["client CPU", (run, s) => percent(s.client_cpu_share)],
    ];
    columns.forEach(([name]) => node("th", {}, head, name));
    const body = node("tbody", {}, table);
    runs.forEach((run) => run.steps.forEach((step) => {
      const row = node("tr", { class: step.invalid_reason ? "invalid" : "", title: step.invalid_reason || "" }, body);
      columns.forEach(([, value]) => node("td", {}, row, String(value(run, step))));
    }));
    node("p", { class: "note" }, box, "Latencies are over successful requests; \"corr.\" counts from the intended start (coordinated omission corrected). Invalid steps (the client was the bottleneck) are in orange.");
  }

  function replicaTable() {
    const { box } = section("Replicas that served requests");
    const table = node("table", {}, box);
    const head = node("tr", {}, node("thead", {}, table));
    ["run", "replica", "requests"].forEach((name) => node("th", {}, head, name));
    const body = node("tbody", {}, table);
    runs.forEach((run) => Object.entries(run.replicas).forEach(([name, count]) => {
      const row = node("tr", {}, body);
      [run.summary.run_id, name, count].forEach((v) => node("td", {}, row, String(v)));
    }));
  }

  header();
  latencyByLoad();
  throughputPerStep();
  errorsPerStep();
  distributions();
  timeline();
  stepTable();
  replicaTable();
  root.dataset.charts = String(document.querySelectorAll(".chart svg").length);
  root.dataset.status = "rendered";
})();
