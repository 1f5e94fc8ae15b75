// gembatch load report: latency against load, throughput and errors per step, distributions,
// the timeline and the step table of one run, or two side by side.
"use strict";
(function () {
  const { COLORS, node, seconds, number, percent, chart, section, picker, done } = gembatch;
  const runs = gembatch.data;
  const LATENCIES = ["ttft", "ttft_corrected", "itl", "tpot", "e2e", "e2e_corrected"];
  const LATENCY_NAMES = {
    ttft: "time to first token", ttft_corrected: "time to first token, from intended start",
    itl: "inter-token latency", tpot: "time per output token",
    e2e: "end-to-end latency", e2e_corrected: "end-to-end latency, from intended start",
  };

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
      notes: run.steps.map((s) => `(${Object.entries(s.outcomes).filter(([k]) => k !== "ok" && k !== "empty_completion").map(([k, v]) => `${k} ${v}`).join(", ") || "no errors"})`),
    }));
    chart(box, { kind: "bar", categories: stepLabels(), xLabel: "step", yLabel: "failed requests", yFormat: percent, yEmptyMax: 0.01, series });
    node("p", { class: "note" }, box, "Classes: http_4xx, http_429, http_5xx, timeout, connect_error, stream_broken. A complete answer without text (empty_completion) is a success, counted in the step table's empty column.");
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
    deploymentReplicas(box);
  }

  // --watch-deployment: the Deployment's replicas and its autoscaler's wish, on the same
  // time axis as the timeline above, so the reaction to each step shows.
  function deploymentReplicas(box) {
    if (!runs.some((run) => run.deployment)) return;
    const series = [];
    runs.forEach((run, r) => run.deployment && [
      ["replicas wanted (spec)", run.deployment.spec_replicas],
      ["replicas ready", run.deployment.ready_replicas],
      ["HPA desired replicas", run.deployment.hpa_desired],
    ].forEach(([name, values], k) => series.push({
      name: tag(run, name), color: COLORS[k + 3], dash: r > 0, points: run.deployment.t.map((t, i) => [t, values[i]]),
    })));
    const markers = runs[0].steps.map((s) => ({ x: s.started_s, label: s.label }));
    chart(node("div", {}, box), { kind: "line", wide: true, xLabel: "seconds since the start", yLabel: "replicas of the watched Deployment", yFormat: (v) => number(v, 0), xFormat: (x) => number(x, 0) + " s", xMin: 0, series, markers });
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
      ["errors", (run, s) => percent(s.error_rate)], ["empty", (run, s) => percent(s.empty_rate)],
      ["retry-after", (run, s) => s.retry_after_count ? `${s.retry_after_count} (≤ ${seconds(s.retry_after_max_s)})` : "0"],
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
  done();
})();
