// Renders Go text/template with Go's own implementation, compiled to
// WebAssembly (npm @evertdespiegeleer/go-template, pinned by
// e2e/tests/grafana/alerting.rs, which installs it). Used by that test to
// prove the Grafana notification templates parse and render.
//
// Usage: node render-go-template.mjs MODULE_DIR < request.json
//   request: {"template": "...", "data": {...}}   (one object per line)
// Prints one JSON object per request: {"ok": "<rendered>"} or
// {"error": "<Go's parse or exec error>"}. Missing map keys are errors
// (missingkey=error), stricter than Grafana (missingkey=zero).
import path from "node:path";
import readline from "node:readline";
import { pathToFileURL } from "node:url";

const dir = process.argv[2];
const main = path.join(dir, "node_modules/@evertdespiegeleer/go-template/dist/main.js");
const { parse } = await import(pathToFileURL(main).href);
// The first call loads the WebAssembly, which defines globalThis.Render;
// calling that directly keeps Go's whole error message (the wrapper's
// error classes cut it).
await parse("", {});
const ERRORS = ["Template parse error:", "Template exec error:", "JSON parse error:"];
const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
    if (!line.trim()) continue;
    const req = JSON.parse(line);
    const out = globalThis.Render(req.template, JSON.stringify(req.data));
    const answer = ERRORS.some((e) => out.startsWith(e)) ? { error: out } : { ok: out };
    process.stdout.write(JSON.stringify(answer) + "\n");
}
process.exit(0);
