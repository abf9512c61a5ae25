// Headless Chromium plays a camera through the live page (hls.js) and
// reads a decoded frame back from a canvas. Talks the DevTools protocol
// over --remote-debugging-pipe (fds 3 and 4; no extra packages).
//
//   node play.mjs CHROMIUM URL SCREENSHOT.png [SECONDS]
//
// Prints one JSON line: {ok, t, w, h, max, mean, msg, supported}; exit 0
// when a frame with bright pixels (the fixture's white ball) was decoded.
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [chromium, url, png, secs = '25'] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), 'sitewatch-chromium-'));
const browser = spawn(chromium, [
  '--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--remote-debugging-pipe', '--autoplay-policy=no-user-gesture-required',
  '--mute-audio', `--user-data-dir=${profile}`, 'about:blank',
], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
let stderr = '';
browser.stdio[2].on('data', (d) => { stderr += d; });

let nextId = 0;
const pending = new Map();
let buf = '';
browser.stdio[4].on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\0')) >= 0) {
    const msg = JSON.parse(buf.slice(0, i));
    buf = buf.slice(i + 1);
    if (msg.id && pending.has(msg.id)) {
      pending.get(msg.id)(msg);
      pending.delete(msg.id);
    }
  }
});
function send(method, params = {}, sessionId) {
  return new Promise((resolve) => {
    const m = { id: ++nextId, method, params };
    if (sessionId) m.sessionId = sessionId;
    pending.set(m.id, resolve);
    browser.stdio[3].write(JSON.stringify(m) + '\0');
  });
}
function finish(code, line) {
  console.log(JSON.stringify(line));
  browser.once('exit', () => {
    try { rmSync(profile, { recursive: true, force: true, maxRetries: 5 }); } catch { /* left in /tmp */ }
    process.exit(code);
  });
  browser.kill('SIGKILL');
}
setTimeout(() => finish(2, { ok: false, error: 'timeout', stderr: stderr.slice(-2000) }), (Number(secs) + 15) * 1000);

const target = await send('Target.createTarget', { url: 'about:blank' });
const attached = await send('Target.attachToTarget', { targetId: target.result.targetId, flatten: true });
const session = attached.result.sessionId;
await send('Page.enable', {}, session);
await send('Page.navigate', { url }, session);

const probe = `(() => {
  const v = document.getElementById('video');
  const msg = (document.getElementById('msg') || {}).textContent;
  const supported = window.MediaSource ? MediaSource.isTypeSupported('video/mp4; codecs="avc1.42C01E"') : false;
  // ms from the navigation (opening the camera's page: page, hls.js, the
  // RTSP session started on demand, first segment) to the first decoded
  // frame; within the 100 ms poll.
  if (v && v.readyState >= 2 && window.__firstFrameMs === undefined) window.__firstFrameMs = Math.round(performance.now());
  const first_frame_ms = window.__firstFrameMs;
  if (!v || v.readyState < 2 || v.currentTime < 0.5) return JSON.stringify({ t: v ? v.currentTime : -1, msg, supported, first_frame_ms });
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const g = c.getContext('2d');
  g.drawImage(v, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let max = 0, sum = 0;
  for (let i = 0; i < d.length; i += 4) { const y = (d[i] + d[i + 1] + d[i + 2]) / 3; if (y > max) max = y; sum += y; }
  return JSON.stringify({ t: v.currentTime, w: v.videoWidth, h: v.videoHeight, max, mean: sum / (d.length / 4), msg, supported, first_frame_ms });
})()`;
const deadline = Date.now() + Number(secs) * 1000;
let last = {};
while (Date.now() < deadline) {
  const r = await send('Runtime.evaluate', { expression: probe, returnByValue: true }, session);
  last = JSON.parse((r.result && r.result.result && r.result.result.value) || '{}');
  if (last.max > 100) {
    const shot = await send('Page.captureScreenshot', { format: 'png' }, session);
    writeFileSync(png, Buffer.from(shot.result.data, 'base64'));
    finish(0, { ok: true, ...last });
  }
  await new Promise((r) => setTimeout(r, 100));
}
finish(1, { ok: false, ...last, stderr: stderr.slice(-2000) });
