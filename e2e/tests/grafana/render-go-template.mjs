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
const rl = readline.createInterface({ input: process.stdin });
for await (const line of rl) {
    if (!line.trim()) continue;
    const req = JSON.parse(line);
    try {
        process.stdout.write(JSON.stringify({ ok: await parse(req.template, req.data) }) + "\n");
    } catch (e) {
        process.stdout.write(JSON.stringify({ error: `${e.name}: ${e.message}` }) + "\n");
    }
}
process.exit(0);
