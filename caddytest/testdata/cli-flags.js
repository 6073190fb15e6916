"use strict";
// cli-flags.js: command-line flags of the test scripts (sio-clients.js, eio-raw.js).
//
//   const { parseFlags } = require("./cli-flags");
//   const { args, usage } = parseFlags("eio-raw", FLAGS, process.argv.slice(2));
//
// FLAGS maps each name to { type: "bool" | "int" | "string", def, help }. Flags are
// written --name VALUE or --name=VALUE; a bool flag takes no value (or =true/=false).
// usage(msg) prints msg and exits 2; usage() (and --help) prints every flag and exits 0.
// opts.hideDefault names flags whose default is not shown in the help.

function parseFlags(script, flags, argv, { hideDefault = [] } = {}) {
  function usage(msg) {
    if (msg) {
      process.stderr.write(`${script}: ${msg} (run with --help for the flags)\n`);
      process.exit(2);
    }
    const lines = [`usage: node ${script}.js --url URL [flags]`, ""];
    for (const [name, f] of Object.entries(flags)) {
      const arg = f.type === "bool" ? "" : f.type === "int" ? " N" : " VALUE";
      const def = f.def === null || f.def === false || hideDefault.includes(name) ? "" : ` (default ${f.def})`;
      lines.push(`  --${name}${arg}\n      ${f.help}${def}`);
    }
    process.stderr.write(lines.join("\n") + "\n");
    process.exit(0);
  }

  const out = {};
  for (const [name, f] of Object.entries(flags)) out[name] = f.def;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith("--")) usage(`unexpected argument: ${a}`);
    let name = a.slice(2);
    let value;
    const eq = name.indexOf("=");
    if (eq >= 0) {
      value = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    const f = flags[name];
    if (!f) usage(`unknown flag: --${name}`);
    if (f.type === "bool") {
      if (value === undefined) value = "true";
      if (value !== "true" && value !== "false") usage(`--${name} takes no value (or =true/=false)`);
      out[name] = value === "true";
      continue;
    }
    if (value === undefined) {
      if (i + 1 >= argv.length) usage(`--${name} needs a value`);
      value = argv[++i];
    }
    if (f.type === "int") {
      if (!/^\d+$/.test(value)) usage(`--${name} needs a non-negative integer, got ${JSON.stringify(value)}`);
      out[name] = Number(value);
    } else {
      out[name] = value;
    }
  }
  if (out.help) usage();
  return { args: out, usage };
}

module.exports = { parseFlags };
