// Opens a diffkeeper HTML report in a real headless browser (Debian's chromium, driven by playwright-core, which
// downloads nothing) and prints what the page showed as one JSON object on stdout:
//   node check-report.mjs REPORT.html SCREENSHOT.png SEQ
// clicks the timeline row of event SEQ and reads the file's content at that moment from the page; every row's
// cells are in the output too (`cells`: [seq, [time, op, path, size, process, event]]).
// Every console error, page error and network request (anything but the file itself) is reported.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [report, screenshot, seq] = process.argv.slice(2);
if (!report || !screenshot || !seq) {
  console.error('usage: node check-report.mjs REPORT.html SCREENSHOT.png SEQ');
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), 'dk-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--no-first-run'],
});
const result = { consoleErrors: [], pageErrors: [], requests: [] };
try {
  const page = context.pages()[0] ?? await context.newPage();
  const url = pathToFileURL(resolve(report)).href;
  page.on('console', (m) => { if (m.type() === 'error') result.consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => result.pageErrors.push(String(e)));
  page.on('request', (r) => { if (r.url() !== url) result.requests.push(r.url()); });
  await page.goto(url);
  await page.waitForSelector('body[data-ready="1"]', { timeout: 15000 });
  result.title = await page.title();
  result.rows = await page.locator('#events tbody tr').count();
  result.ticks = await page.locator('#lanes rect.tick').count();
  result.exitMarked = await page.locator('#lanes g.exit').count() === 1;
  result.highlighted = await page.locator('#events tbody tr.hl').evaluateAll((rows) => rows.map((r) => Number(r.dataset.seq)));
  // Every row of the table as its seq and the text of its cells (time, op, path, size, process, event).
  result.cells = await page.locator('#events tbody tr').evaluateAll((rows) =>
    rows.map((r) => [Number(r.dataset.seq), [...r.cells].map((c) => c.textContent)]));
  const row = page.locator(`#events tbody tr[data-seq="${seq}"]`);
  result.rowFound = await row.count() === 1;
  if (result.rowFound) {
    await row.click();
    result.fileTitle = await page.locator('#file-title').textContent();
    result.eventInfo = await page.locator('#event-info').textContent();
    result.content = await page.locator('#content').textContent();
    result.diff = await page.locator('#diff').textContent();
    result.tickForSeq = await page.locator(`#lanes rect.tick[data-seq="${seq}"]`).count();
  }
  // The search box filters the table.
  await page.fill('#search', 'no path is called this');
  result.rowsAfterSearch = await page.locator('#events tbody tr').count();
  await page.fill('#search', '');
  await page.click('#zoom-in');
  result.rangeAfterZoom = await page.locator('#range').textContent();
  if (result.rowFound) await page.locator(`#events tbody tr[data-seq="${seq}"]`).click();
  await page.screenshot({ path: screenshot, fullPage: true });
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(result) + '\n');
