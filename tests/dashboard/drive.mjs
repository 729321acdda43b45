// Loads the dashboard in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core), reports what it shows, uses a control, and saves a
// screenshot. Usage: node drive.mjs URL ROUTE PERCENT SCREENSHOT
import { launch } from "./browser.mjs";

const [url, route, percent, shot] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage();
  let accept = true;
  page.on("dialog", (d) => (accept ? d.accept() : d.dismiss())); // the confirmation of a change
  await page.goto(url);
  await page.waitForSelector(`[data-testid="route-${route}"]`, { timeout: 10000 });
  const seen = await page.evaluate((route) => {
    const q = (id) => document.querySelector(`[data-testid="${id}"]`);
    const shares = {};
    for (const e of document.querySelectorAll('[data-testid^="share-"]'))
      shares[e.dataset.testid.slice(6)] = Number(e.dataset.requests);
    const sides = {};
    for (const e of document.querySelectorAll(`[data-testid^="side-${route}-"]`))
      sides[e.dataset.testid.slice(`side-${route}-`.length)] = Number(e.dataset.requests);
    return { state: q(`state-${route}`).textContent, moved: q("moved").textContent,
             movedRef: q("moved-ref").textContent,
             diffrate: q(`diffrate-${route}`).textContent, shares, sides,
             diffs: !!q(`diffs-${route}`),
             backends: [...q(`backend-${route}`).options].map((o) => o.value),
             health: Object.fromEntries([...document.querySelectorAll('[data-testid^="backend-state-"]')]
               .map((e) => [e.dataset.testid.slice(14), e.textContent])),
             servers: Object.fromEntries([...document.querySelectorAll('[data-testid^="server-"]')]
               .map((e) => [e.dataset.testid.slice(7), e.textContent])),
             balance: Object.fromEntries([...document.querySelectorAll('[data-testid^="backend-balance-"]')]
               .map((e) => [e.dataset.testid.slice(16), e.textContent])),
             states: Object.fromEntries([...document.querySelectorAll('[data-testid^="state-"]')]
               .map((e) => [e.dataset.testid.slice(6), e.textContent])),
             selects: [...document.querySelectorAll('select[data-testid^="backend-"]')]
               .map((e) => e.dataset.testid.slice(8)),
             changes: Object.fromEntries([...document.querySelectorAll('[data-testid^="backend-changes-"]')]
               .map((e) => [e.dataset.testid.slice(16), e.textContent])) };
  }, route);
  await page.fill(`[data-testid="percent-${route}"]`, percent);
  await page.click(`[data-testid="set-percent-${route}"]`);
  await page.waitForFunction(([route, percent]) =>
    document.querySelector(`[data-testid="state-${route}"]`)?.textContent === `${percent} %`,
    [route, percent], { timeout: 10000 });
  seen.after = await page.textContent(`[data-testid="state-${route}"]`);
  await page.screenshot({ path: shot, fullPage: true });
  // the API out of reach, then back: the failure is said, then no longer
  await page.route("**/api/routes", (r) => r.abort());
  await page.waitForFunction(() => document.getElementById("msg").textContent.startsWith("routes: "),
                             null, { timeout: 10000 });
  seen.outage = await page.textContent("#msg");
  await page.unroute("**/api/routes");
  await page.waitForFunction(() => document.getElementById("msg").textContent === "", null,
                             { timeout: 10000 });
  seen.outageCleared = true;
  // a change asked for, then cancelled: the page goes on refreshing
  accept = false;
  const before = await page.textContent("#when");
  await page.click(`[data-testid="set-percent-${route}"]`);
  await page.waitForFunction((before) => document.getElementById("when").textContent !== before,
                             before, { timeout: 10000 });
  seen.refreshedAfterCancel = true;
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
