// gembatch run report: the batch's throughput over time (overall and per pod), each pod's
// figures, the latency distribution and the errors, from the JSON embedded in the page.
"use strict";
(function () {
  const { COLORS, node, seconds, number, percent, chart, section, picker, done } = gembatch;
  const run = gembatch.data;
  const p = (values, i) => (values ? values[i] : null);

  function header() {
    const box = document.getElementById("header");
    node("h1", {}, box, `gembatch run: ${run.run_id}`);
    const started = new Date(run.started_at_unix_s * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
    const r = run.run;
    node("div", { class: "meta" }, box,
      `job ${run.job}, model ${run.model}, ${run.pods.length} pod(s), started ${started}; ` +
      `${r.rows} rows in ${number(r.duration_s, 1)} s: ${number(r.requests_per_s, 2)} rows/s, ` +
      `${number(r.output_tokens_per_s, 1)} output tokens/s; e2e p50 ${seconds(p(r.e2e, 0))}, p99 ${seconds(p(r.e2e, 2))}`);
    const failed = r.errors - run.invalid;
    const kind = r.errors === 0 ? "pass" : "warn";
    node("div", { class: `banner ${kind}` }, box,
      `${r.ok} of ${r.rows} rows succeeded; ${failed} failed after retries, ${run.invalid} invalid; ${r.retries} retries.`);
    if (run.load_report) {
      const note = node("div", { class: "note" }, box, "Online load verification during the batch: ");
      node("a", { href: run.load_report }, note, run.load_report);
    }
  }

  function throughputOverTime() {
    const { box, heading } = section("Throughput over time", true);
    const holder = node("div", {}, box);
    const t = run.timeline;
    const views = {
      rows: ["rows/s, failed rows/s and rows in flight", (v) => number(v, 2), () => [
        ["rows/s", t.rps], ["failed rows/s", t.errors_per_s], ["rows in flight", t.in_flight]]],
      tokens: ["output tokens/s, overall and per pod", (v) => number(v, 0), () => [["all pods", t.output_tokens_per_s]]
        .concat(Object.entries(run.pod_tokens_per_s))],
      latency: ["median end-to-end latency", seconds, () => [["p50 end-to-end", t.p50_e2e]]],
    };
    const render = (view) => {
      holder.replaceChildren();
      const [label, format, pick] = views[view];
      const series = pick().map(([name, values], k) => ({
        name, color: COLORS[k % COLORS.length], dash: k > 0 && view === "tokens",
        points: t.t.map((x, i) => [x, values[i]]),
      }));
      chart(holder, { kind: "line", wide: true, xLabel: "seconds since the first row was sent", yLabel: label, yFormat: format, xFormat: (x) => number(x, 0) + " s", xMin: 0, series });
    };
    picker(heading, Object.entries(views).map(([k, v]) => [k, v[0]]), "rows", render);
    render("rows");
  }

  function perPod() {
    const { box, heading } = section("Per pod");
    const holder = node("div", {}, box);
    const figures = {
      requests_per_s: ["rows/s", (v) => number(v, 2)],
      output_tokens_per_s: ["output tokens/s", (v) => number(v, 1)],
      rows: ["rows", (v) => number(v, 0)],
    };
    const render = (figure) => {
      holder.replaceChildren();
      const series = [{ name: figures[figure][0], color: COLORS[0], values: run.pods.map((pod) => pod[figure]) }];
      chart(holder, { kind: "bar", categories: run.pods.map((pod) => pod.key), xLabel: "pod", yLabel: figures[figure][0], yFormat: figures[figure][1], series });
    };
    picker(heading, Object.entries(figures).map(([k, v]) => [k, v[0]]), "requests_per_s", render);
    render("requests_per_s");
    const table = node("table", {}, node("div", { class: "scroll" }, box));
    const head = node("tr", {}, node("thead", {}, table));
    const columns = [
      ["pod", (s) => (s.scope === "run" ? "all pods" : s.key)], ["rows", (s) => s.rows], ["failed", (s) => s.errors], ["retries", (s) => s.retries],
      ["rows/s", (s) => number(s.requests_per_s, 2)], ["tok/s", (s) => number(s.output_tokens_per_s, 1)],
      ["p50 ttft", (s) => seconds(p(s.ttft, 0))], ["p99 ttft", (s) => seconds(p(s.ttft, 2))],
      ["p50 e2e", (s) => seconds(p(s.e2e, 0))], ["p90 e2e", (s) => seconds(p(s.e2e, 1))], ["p99 e2e", (s) => seconds(p(s.e2e, 2))],
    ];
    columns.forEach(([name]) => node("th", {}, head, name));
    const body = node("tbody", {}, table);
    run.pods.concat([run.run]).forEach((pod) => {
      const row = node("tr", {}, body);
      columns.forEach(([, value]) => node("td", {}, row, String(value(pod))));
    });
  }

  function distributions() {
    const { box } = section("Latency distribution (successful rows)");
    const series = [["ttft", "time to first token"], ["e2e", "end-to-end"]].map(([key, name], k) => ({
      name, color: COLORS[k + 2], points: run.distributions[key].map(([latency, share]) => [latency, share]),
    }));
    chart(box, { kind: "line", xLabel: "latency", yLabel: "share of rows at or below", yFormat: percent, xFormat: seconds, xMin: 0, series });
  }

  function errors() {
    const { box } = section("Errors");
    const codes = Object.keys(run.errors);
    if (!codes.length) {
      node("p", { class: "note" }, box, "No row failed.");
      return;
    }
    chart(box, { kind: "bar", categories: codes, xLabel: "class", yLabel: "rows", yFormat: (v) => number(v, 0),
      series: [{ name: "rows", color: COLORS[1], values: codes.map((c) => run.errors[c]) }] });
    const table = node("table", {}, node("div", { class: "scroll" }, box));
    const head = node("tr", {}, node("thead", {}, table));
    ["id", "line", "class", "error"].forEach((name) => node("th", {}, head, name));
    const body = node("tbody", {}, table);
    run.error_samples.forEach((e) => {
      const row = node("tr", {}, body);
      [e.id, e.line, e.code, e.message].forEach((v) => node("td", {}, row, String(v)));
    });
    node("p", { class: "note" }, box, "The first failed rows; errors.jsonl has every one.");
  }

  header();
  throughputOverTime();
  perPod();
  distributions();
  errors();
  done();
})();
