#!/usr/bin/env node
// e2e-report.js - the numbers of bench/e2e.sh, from its log directory.
//
//   node bench/e2e-report.js --brief LOGDIR TAG             one line about one run (r1-stock, ...)
//   E2E_META='{…}' node bench/e2e-report.js --final LOGDIR RESULT.json RESULT.md
//                                                          every run, medians, ratios, tables
//   node bench/e2e-report.js --markdown RESULT.json        print the tables of a result file again
//
// Each metric is the median over the rounds; ratios are median(x) / median((a)).
// The per-round (paired) ratios are in the JSON as well.
"use strict";

const fs = require("fs");
const path = require("path");

const PROXIES = ["stock", "plugin", "nginx"];
const NOISY_CORES = 0.25; // other processes using more than this many cores during a phase: flagged
const LABEL = { stock: "(a) stock Caddy", plugin: "(b) Caddy + plugin", nginx: "(c) nginx" };

function readResult(file) {
  let res = null;
  try {
    for (const l of fs.readFileSync(file, "utf8").split("\n")) {
      if (!l.startsWith("{")) continue;
      try {
        const o = JSON.parse(l);
        if (o.event === "result") res = o;
      } catch (_) {}
    }
  } catch (_) {}
  return res;
}
const r3 = (x) => (x === null || x === undefined || Number.isNaN(x) ? null : Math.round(x * 1000) / 1000);
const get = (o, ...ks) => ks.reduce((a, k) => (a === null || a === undefined ? null : a[k] === undefined ? null : a[k]), o);

// metrics of one (round, proxy) run
function runMetrics(dir, tag) {
  const run = (() => {
    try {
      return JSON.parse(fs.readFileSync(path.join(dir, `run-${tag}.json`), "utf8"));
    } catch (_) {
      return null;
    }
  })();
  const c = readResult(path.join(dir, `${tag}-connect.out`));
  const e = readResult(path.join(dir, `${tag}-echo.out`));
  const p = readResult(path.join(dir, `${tag}-polling.out`));
  const h = readResult(path.join(dir, `${tag}-rss.out`));
  const perK = (cpuS, n) => (cpuS === null || !n ? null : r3((cpuS * 1000 * 1000) / n)); // ms per 1,000
  const foreign = (r) => {
    const cpu = get(r, "cpu");
    if (!cpu) return null;
    const ours = (cpu.processes.proxy || 0) + (cpu.processes.nodes || 0) + (cpu.clientS || 0) + (cpu.machineStealS || 0);
    return r3(Math.max(0, cpu.machineBusyS - ours) / Math.max(1e-9, cpu.wallS)); // cores used by other processes
  };
  const m = {
    connectReadyP50: get(c, "readyMs", "p50"),
    connectReadyP99: get(c, "readyMs", "p99"),
    connectP50: get(c, "connectMs", "p50"),
    connectP99: get(c, "connectMs", "p99"),
    connectFailed: get(c, "failed"),
    connectReadyOver90msShare: get(c, "readyOver90msShare"),
    connectSessionsPerS: get(c, "sessionsPerS"),
    connectProxyCpuMsPerSession: c && c.ok ? r3((get(c, "cpu", "processes", "proxy") * 1000) / c.ok) : null,
    echoPerS: get(e, "roundTripsPerS"),
    echoP50: get(e, "latencyMs", "p50"),
    echoP99: get(e, "latencyMs", "p99"),
    echoProxyCpuMsPer1k: perK(get(e, "cpu", "processes", "proxy"), get(e, "roundTrips")),
    echoSetupFailed: get(e, "setupFailed"),
    echoStalled: get(e, "stalledAtEnd"),
    pollPerS: get(p, "roundTripsPerS"),
    pollP50: get(p, "latencyMs", "p50"),
    pollP99: get(p, "latencyMs", "p99"),
    pollProxyCpuMsPer1k: perK(get(p, "cpu", "processes", "proxy"), get(p, "roundTrips")),
    pollSetupFailed: get(p, "setupFailed"),
    pollStalled: get(p, "stalledAtEnd"),
    rssIdleMiB: run ? r3(run.rssIdleKiB / 1024) : null,
    rssPer1kMiB: run ? r3(((run.rssLoadedKiB - run.rssIdleKiB) * 1000) / run.rssSessions / 1024) : null,
    rssSessionsReady: get(h, "ready"),
    rssSessionsOpenOnNodes: run ? Number(run.openSessionsLoaded) : null,
    foreignCoresEcho: foreign(e),
    foreignCoresPolling: foreign(p),
    foreignCoresConnect: foreign(c),
    stealCoresEcho: get(e, "cpu", "machineStealS") === null ? null : r3(get(e, "cpu", "machineStealS") / get(e, "cpu", "wallS")),
    echoNodeShares: shares(get(run, "perNode", "echo")),
    pollNodeShares: shares(get(run, "perNode", "polling")),
    connectNodeShares: shares(get(run, "perNode", "connectHandshakes")),
    machineBusyEcho: get(e, "cpu", "machineBusyFraction"),
    machineBusyPolling: get(p, "cpu", "machineBusyFraction"),
  };
  return { run, m, raw: { connect: c, echo: e, polling: p, rss: h } };
}

// [a,b,c] counts -> percentages (rounded), or null
const shares = (v) => {
  if (!Array.isArray(v)) return null;
  const t = v.reduce((a, b) => a + b, 0);
  return t > 0 ? v.map((x) => Math.round((x * 100) / t)) : null;
};
const median = (xs) => {
  const s = xs.filter((x) => x !== null && x !== undefined && !Number.isNaN(x)).sort((a, b) => a - b);
  if (!s.length) return null;
  const k = s.length >> 1;
  return r3(s.length % 2 ? s[k] : (s[k - 1] + s[k]) / 2);
};
const ratio = (a, b) => (a === null || b === null || !b ? null : Math.round((a / b) * 1000) / 1000);

function brief(dir, tag) {
  const { m } = runMetrics(dir, tag);
  const f = (x, d = 1) => (x === null ? "?" : Number(x).toFixed(d));
  return (
    `connect+upgrade p50/p99 ${f(m.connectReadyP50)}/${f(m.connectReadyP99)} ms (connect ${f(m.connectP50)}/${f(m.connectP99)}); ` +
    `echo ${f(m.echoPerS, 0)}/s p99 ${f(m.echoP99, 2)} ms; polling ${f(m.pollPerS, 0)}/s p99 ${f(m.pollP99)} ms; ` +
    `rss ${f(m.rssPer1kMiB, 2)} MiB/1k; proxy CPU ${f(m.echoProxyCpuMsPer1k)} ms/1k echoes, ${f(m.pollProxyCpuMsPer1k)} ms/1k polls; ` +
    `other load ${f(m.foreignCoresEcho, 2)}/${f(m.foreignCoresPolling, 2)} cores`
  );
}

// rows of the main table: key, title, unit, higher-is-better
const ROWS = [
  ["connectReadyP50", "time to connect + upgrade, p50", "ms", false],
  ["connectReadyP99", "time to connect + upgrade, p99", "ms", false],
  ["connectP50", "time to socket.io connect (polling), p50", "ms", false],
  ["connectP99", "time to socket.io connect (polling), p99", "ms", false],
  ["echoPerS", "websocket echo", "round trips/s", true],
  ["echoP50", "websocket echo latency, p50", "ms", false],
  ["echoP99", "websocket echo latency, p99", "ms", false],
  ["pollPerS", "polling-only echo", "round trips/s", true],
  ["pollP50", "polling-only echo latency, p50", "ms", false],
  ["pollP99", "polling-only echo latency, p99", "ms", false],
  ["rssPer1kMiB", "proxy RSS per 1,000 live sessions", "MiB", false],
  ["rssIdleMiB", "proxy idle RSS", "MiB", false],
  ["connectProxyCpuMsPerSession", "proxy CPU per connect + upgrade", "ms", false],
  ["echoProxyCpuMsPer1k", "proxy CPU per 1,000 websocket echoes", "ms", false],
  ["pollProxyCpuMsPer1k", "proxy CPU per 1,000 polling round trips", "ms", false],
];
const TARGETS = [
  { key: "echoPerS", what: "(b)/(a) websocket echo throughput", op: ">=", limit: 0.97 },
  { key: "pollPerS", what: "(b)/(a) polling round trips/s", op: ">=", limit: 0.97 },
  { key: "connectReadyP99", what: "(b)/(a) time to connect + upgrade, p99", op: "<=", limit: 1.05 },
];

function finalReport(dir, resultFile, mdFile) {
  const meta = JSON.parse(process.env.E2E_META || "{}");
  const rounds = meta.settings ? meta.settings.rounds : 1;
  const proxies = PROXIES.filter((p) => (meta.settings ? meta.settings.proxies.split(" ").includes(p) : true));
  const runs = [];
  for (let r = 1; r <= rounds; r++) {
    for (const p of proxies) {
      const tag = `r${r}-${p}`;
      const { run, m, raw } = runMetrics(dir, tag);
      runs.push({ tag, round: r, proxy: p, position: run ? run.position : null, run, metrics: m, clients: raw });
    }
  }
  const med = {};
  const spread = {};
  for (const p of proxies) {
    med[p] = {};
    spread[p] = {};
    for (const [k] of ROWS) {
      const xs = runs.filter((x) => x.proxy === p).map((x) => x.metrics[k]).filter((x) => x !== null);
      med[p][k] = median(xs);
      spread[p][k] = xs.length ? [Math.min(...xs), Math.max(...xs)] : null;
    }
  }
  const ratios = {};
  const pairs = [
    ["plugin", "stock"],
    ["nginx", "stock"],
    ["plugin", "nginx"],
  ].filter(([x, y]) => proxies.includes(x) && proxies.includes(y));
  for (const [x, y] of pairs) {
    const key = `${x}/${y}`;
    ratios[key] = {};
    for (const [k] of ROWS) ratios[key][k] = ratio(med[x][k], med[y][k]);
  }
  // per-round paired ratios (b)/(a)
  const paired = [];
  if (proxies.includes("plugin") && proxies.includes("stock")) {
    for (let r = 1; r <= rounds; r++) {
      const a = runs.find((x) => x.round === r && x.proxy === "stock");
      const b = runs.find((x) => x.round === r && x.proxy === "plugin");
      const o = { round: r, order: runs.filter((x) => x.round === r).sort((u, v) => u.position - v.position).map((x) => x.proxy) };
      for (const [k] of ROWS) o[k] = ratio(b.metrics[k], a.metrics[k]);
      paired.push(o);
    }
  }
  const targets = TARGETS.filter(() => ratios["plugin/stock"]).map((t) => {
    const v = ratios["plugin/stock"][t.key];
    const met = v !== null && (t.op === ">=" ? v >= t.limit : v <= t.limit);
    const pairedVals = paired.map((o) => o[t.key]);
    return {
      ...t,
      value: v,
      met,
      missedBy: met || v === null ? null : r3(Math.abs(v - t.limit)),
      pairedMedian: median(pairedVals),
      pairedValues: pairedVals,
    };
  });
  const failures = runs.filter(
    (x) => x.metrics.connectFailed || x.metrics.echoSetupFailed || x.metrics.pollSetupFailed || x.metrics.echoStalled || x.metrics.pollStalled
  );
  const foreignMax = Math.max(0, ...runs.flatMap((x) => [x.metrics.foreignCoresEcho, x.metrics.foreignCoresPolling, x.metrics.foreignCoresConnect]).filter((x) => x !== null));
  const result = {
    ...meta,
    proxies: Object.fromEntries(proxies.map((p) => [p, LABEL[p]])),
    medians: med,
    ranges: spread,
    ratios,
    pairedRatiosPluginStock: paired,
    targets,
    sessionFailures: failures.map((x) => x.tag),
    foreignCoresMax: r3(foreignMax),
    runs,
  };
  fs.writeFileSync(resultFile, JSON.stringify(result, null, 1) + "\n");
  const md = markdown(result);
  fs.writeFileSync(mdFile, md);
  process.stdout.write(md);
}

function fmt(x, unit) {
  if (x === null || x === undefined) return "–";
  if (unit === "round trips/s") return String(Math.round(x));
  if (Math.abs(x) >= 100) return x.toFixed(0);
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

function markdown(res) {
  const proxies = Object.keys(res.proxies);
  const s = res.settings || {};
  let out = "";
  out += `End-to-end run ${res.stamp || ""}: ${s.rounds} round(s), proxies in rotated order; `;
  out += `median over the rounds (min–max in brackets).\n`;
  out += `Sessions: rss ${s.rssSessions}, connect ${s.connectSessions} (${s.connectConcurrency} at a time), `;
  out += `echo ${s.echoSockets} websocket sockets, polling ${s.pollSockets} polling sockets, ${s.warmupS} s + ${s.durationS} s, payload ${s.payloadBytes} B.\n`;
  if (res.load) out += `Load average at the start ${res.load.start} (waited ${res.load.waitedS} s${res.load.belowMax ? "" : ", still above " + s.maxLoad}), at the end ${res.load.end}; `;
  out += `other processes used at most ${res.foreignCoresMax} cores during a measured phase.\n\n`;
  const ratioCols = Object.keys(res.ratios);
  const rlabel = { "plugin/stock": "(b)/(a)", "nginx/stock": "(c)/(a)", "plugin/nginx": "(b)/(c)" };
  out += `| metric | ${proxies.map((p) => res.proxies[p]).join(" | ")} | ${ratioCols.map((k) => rlabel[k]).join(" | ")} |\n`;
  out += `|---|${proxies.map(() => "---:").join("|")}|${ratioCols.map(() => "---:").join("|")}|\n`;
  for (const [k, title, unit] of ROWS) {
    const cells = proxies.map((p) => {
      const v = res.medians[p][k];
      const r = res.ranges[p][k];
      return r && r[0] !== r[1] ? `${fmt(v, unit)} (${fmt(r[0], unit)}–${fmt(r[1], unit)})` : fmt(v, unit);
    });
    const rc = ratioCols.map((c) => (res.ratios[c][k] === null ? "–" : res.ratios[c][k].toFixed(3)));
    out += `| ${title} (${unit}) | ${cells.join(" | ")} | ${rc.join(" | ")} |\n`;
  }
  if (res.targets && res.targets.length) {
    out += `\n| target | (b)/(a) | paired per round | verdict |\n|---|---:|---|---|\n`;
    for (const t of res.targets) {
      const verdict = t.value === null ? "not measured" : t.met ? "met" : `missed by ${t.missedBy.toFixed(3)}`;
      out += `| ${t.what} ${t.op === ">=" ? "≥" : "≤"} ${t.limit} | ${t.value === null ? "–" : t.value.toFixed(3)} | ${t.pairedValues.map((x) => (x === null ? "–" : x.toFixed(3))).join(", ")} | ${verdict} |\n`;
    }
  }
  if (res.pairedRatiosPluginStock && res.pairedRatiosPluginStock.length) {
    out += `\n| round | order | (b)/(a) echo/s | (b)/(a) polling/s | (b)/(a) connect+upgrade p99 | (b)/(a) RSS per 1k |\n|---|---|---:|---:|---:|---:|\n`;
    for (const o of res.pairedRatiosPluginStock) {
      const f = (x) => (x === null ? "–" : x.toFixed(3));
      out += `| ${o.round} | ${o.order.join(", ")} | ${f(o.echoPerS)} | ${f(o.pollPerS)} | ${f(o.connectReadyP99)} | ${f(o.rssPer1kMiB)} |\n`;
    }
  }
  if (res.runs && res.runs.length) {
    const f = (x, d) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));
    const noisy = (x) => (x !== null && x > NOISY_CORES ? `**${x.toFixed(2)}**` : f(x, 2));
    out += `\nEvery run (other load = cores used by processes outside the benchmark during the phase; **bold** above ${NOISY_CORES}):\n\n`;
    out += `| round | # | proxy | connect+upgrade p50 / p99 (ms) | upgraded after ≥ 90 ms | echo/s | polling/s | RSS per 1k (MiB) | echoes per node (%) | other load: connect / echo / polling |\n`;
    out += `|---|---:|---|---:|---:|---:|---:|---:|---|---|\n`;
    for (const x of res.runs) {
      const m = x.metrics;
      const share = m.connectReadyOver90msShare === null || m.connectReadyOver90msShare === undefined ? "–" : `${Math.round(m.connectReadyOver90msShare * 100)}%`;
      out += `| ${x.round} | ${x.position === null ? "–" : x.position + 1} | ${x.proxy} | ${f(m.connectReadyP50, 1)} / ${f(m.connectReadyP99, 1)} | ${share} | ${f(m.echoPerS, 0)} | ${f(m.pollPerS, 0)} | ${f(m.rssPer1kMiB, 1)} | ${m.echoNodeShares ? m.echoNodeShares.join("/") : "–"} | ${noisy(m.foreignCoresConnect)} / ${noisy(m.foreignCoresEcho)} / ${noisy(m.foreignCoresPolling)} |\n`;
    }
  }
  if (res.sessionFailures && res.sessionFailures.length) out += `\nFailed or stalled sessions in: ${res.sessionFailures.join(", ")}\n`;
  return out;
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === "--brief" && rest.length === 2) process.stdout.write(brief(rest[0], rest[1]) + "\n");
else if (mode === "--final" && rest.length === 3) finalReport(rest[0], rest[1], rest[2]);
else if (mode === "--markdown" && rest.length === 1) process.stdout.write(markdown(JSON.parse(fs.readFileSync(rest[0], "utf8"))));
else {
  process.stderr.write("usage: e2e-report.js --brief LOGDIR TAG | --final LOGDIR RESULT.json RESULT.md | --markdown RESULT.json\n");
  process.exit(2);
}
