// Loads the test page in headless Chromium (Debian's, driven by
// puppeteer-core: nothing is downloaded), runs its checks against the
// proxy, and prints what they saw as one JSON line.
//
// usage: node run.mjs <page-url> <json-args>
import puppeteer from "puppeteer-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [pageUrl, args] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "ollama-proxy-chromium-"));
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  userDataDir: profile,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
try {
  const page = await browser.newPage();
  const console_ = [];
  page.on("console", (m) => console_.push(m.text()));
  await page.goto(pageUrl, { waitUntil: "load" });
  const result = await page.evaluate((a) => window.runChecks(JSON.parse(a)), args);
  result.pageOrigin = await page.evaluate(() => location.origin);
  result.console = console_;
  process.stdout.write(JSON.stringify(result) + "\n");
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
