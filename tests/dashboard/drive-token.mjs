// The dashboard of an admin API with a token: the prompt cancelled is not
// asked again at every refresh, and the page says why it shows nothing; the
// page loaded again asks, and with the token shows the routes.
// Usage: node drive-token.mjs URL TOKEN ROUTE
import { launch } from "./browser.mjs";

const [url, token, route] = process.argv.slice(2);
const browser = await launch();
try {
  const page = await browser.newPage();
  const seen = { prompts: 0 };
  let answer = null; // cancel
  page.on("dialog", (d) => {
    seen.prompts++;
    return answer === null ? d.dismiss() : d.accept(answer);
  });
  await page.goto(url);
  await page.waitForFunction(() => document.getElementById("msg").textContent !== "", null,
                             { timeout: 10000 });
  await page.waitForTimeout(5000); // two refreshes and more
  seen.declined = { prompts: seen.prompts, msg: await page.textContent("#msg") };
  answer = token;
  await page.reload();
  await page.waitForSelector(`[data-testid="route-${route}"]`, { timeout: 10000 });
  seen.given = { prompts: seen.prompts, state: await page.textContent(`[data-testid="state-${route}"]`) };
  console.log(JSON.stringify(seen));
} finally {
  await browser.close();
}
