// The browser half of tests/test_web.py: opens a `gptrl web` page in headless Chromium (playwright-core driving
// the system's browser; no download), lets it run, and reports what the page shows.
//
//   node browser.mjs CHROMIUM URL SCREENSHOT.png STEPS [TIMEOUT_S] [MODE: fast=1 (default) or realtime] > REPORT.json
//
// REPORT.json: {"status": window.gptrlStatus, "text": {return, step, sps, state}, "console": [errors and
// warnings], "page_errors": [...], "load_seconds", "run_seconds"}
import { chromium } from "playwright-core";

const [executablePath, url, screenshot, stepsText, timeoutText = "120", mode = "fast=1"] = process.argv.slice(2);
const steps = Number(stepsText);
const browser = await chromium.launch({
  executablePath, headless: true,
  // WebGL without a GPU: SwiftShader, which Chromium only enables on request.
  args: ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"],
});
const report = { console: [], page_errors: [] };
try {
  const page = await browser.newPage({ viewport: { width: 960, height: 600 } });
  page.on("console", (m) => { if (["error", "warning"].includes(m.type())) report.console.push(`${m.type()}: ${m.text()}`); });
  page.on("pageerror", (e) => report.page_errors.push(String(e)));
  const t0 = Date.now();
  await page.goto(`${url}?${mode}&steps=${steps}&seed=0`);
  const timeout = Number(timeoutText) * 1000;
  await page.waitForFunction(() => window.gptrlStatus?.ready || window.gptrlStatus?.error, null, { timeout });
  const t1 = Date.now();
  await page.waitForFunction((n) => window.gptrlStatus.steps >= n || window.gptrlStatus.error, steps, { timeout });
  const t2 = Date.now();
  await page.waitForTimeout(300); // a frame or two to draw the last state
  report.status = await page.evaluate(() => window.gptrlStatus);
  report.text = await page.evaluate(() => Object.fromEntries(
    ["title", "return", "step", "sps", "state"].map((id) => [id, document.getElementById(id).textContent])));
  report.load_seconds = (t1 - t0) / 1000;
  report.run_seconds = (t2 - t1) / 1000;
  await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report));
