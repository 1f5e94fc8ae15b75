// gembatch reports: the page machinery every report shares. Charts are drawn as inline SVG
// from the JSON embedded in the page; no network, no libraries. A page counts uncaught errors
// in `data-errors` and marks itself `data-status="rendered"` when done (the browser test reads both).
"use strict";
const gembatch = (function () {
  const root = document.documentElement;
  let errorCount = 0;
  const noteError = () => { errorCount += 1; root.dataset.errors = String(errorCount); };
  window.addEventListener("error", noteError);
  const consoleError = console.error.bind(console);
  console.error = (...args) => { noteError(); consoleError(...args); };
  root.dataset.errors = "0";

  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f6feb", "#d1495b", "#2a9d8f", "#e9a03b", "#7b4fd6", "#5c6773"];
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

  // Marks the page rendered, with its chart count.
  function done() {
    root.dataset.charts = String(document.querySelectorAll(".chart svg").length);
    root.dataset.status = "rendered";
  }

  const data = JSON.parse(document.getElementById("gembatch-data").textContent);
  return { COLORS, node, seconds, number, percent, chart, section, picker, done, data };
})();
