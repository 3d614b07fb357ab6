// End-to-end test of Spoor's web UI in a real browser (chromium via playwright-core).
//
// Needs a running Spoor (started by crates/spoor-cli/tests/ui_browser.rs with `spoor demo`):
//   SPOOR_URL, SPOOR_WRITE_KEY, SPOOR_TOKEN (admin API), SPOOR_PASSWORD (UI user admin),
//   SCREENSHOTS (a folder), CHROMIUM (default /usr/bin/chromium).
// Exits non-zero with the failing step named.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const base = process.env.SPOOR_URL;
const writeKey = process.env.SPOOR_WRITE_KEY;
const token = process.env.SPOOR_TOKEN;
const password = process.env.SPOOR_PASSWORD;
const shots = process.env.SCREENSHOTS;
for (const [k, v] of Object.entries({ SPOOR_URL: base, SPOOR_WRITE_KEY: writeKey, SPOOR_TOKEN: token, SPOOR_PASSWORD: password, SCREENSHOTS: shots })) {
  if (!v) throw new Error(`${k} is not set`);
}
mkdirSync(shots, { recursive: true });

let step = 'start';
function check(cond, what) {
  if (!cond) throw new Error(`${step}: ${what}`);
}

async function api(method, path, body, auth = `Bearer ${token}`) {
  const r = await fetch(base + path, {
    method,
    headers: { 'content-type': 'application/json', authorization: auth },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  if (!r.ok) throw new Error(`${step}: ${method} ${path} → ${r.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

const basic = 'Basic ' + Buffer.from(writeKey + ':').toString('base64');
async function send(events) {
  await api('POST', '/v1/batch', { batch: events }, basic);
  const st = await api('GET', '/v1/admin/processor');
  await api('GET', `/v1/admin/processor?wait_for=${st.ingested_seq}&timeout_ms=20000`);
}

const run = Date.now();
const email = `ann.e2e${run}@example.com`;
const ctx = (ua) => ({ userAgent: ua, campaign: { source: 'newsletter', medium: 'email', name: 'e2e' } });
const laptop = 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36';
const phone = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1';

step = 'seed: one person on a laptop and a phone, merged at login';
await send([
  { type: 'page', anonymousId: `laptop-${run}`, name: 'shoes', properties: { category: 'shoes' }, context: ctx(laptop) },
  { type: 'track', anonymousId: `laptop-${run}`, event: 'Product Viewed', properties: { category: 'shoes', product_id: 'p1', price: 80 }, context: ctx(laptop) },
  { type: 'identify', anonymousId: `phone-${run}`, userId: `e2e-${run}`, traits: { email, first_name: 'Ann', plan: 'vip' }, context: ctx(phone) },
]);
await send([{ type: 'identify', anonymousId: `laptop-${run}`, userId: `e2e-${run}`, context: ctx(laptop) }]);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  page.setDefaultTimeout(15000);

  step = 'log in';
  await page.goto(base + '/');
  check(page.url().endsWith('/ui/login'), `/ leads to the login page, not ${page.url()}`);
  await page.fill('input[name=user]', 'admin');
  await page.fill('input[name=password]', password);
  await page.click('button:has-text("Log in")');
  await page.waitForURL(/\/ui\/$/);
  await page.waitForSelector('svg.chart');
  await page.screenshot({ path: join(shots, '01-overview.png'), fullPage: true });

  step = 'find a profile by e-mail';
  await page.click('nav >> text=Profiles');
  await page.fill('input[name=q]', `ann.e2e${run}`);
  await page.press('input[name=q]', 'Enter');
  const hit = page.locator(`table.results tr:has-text("${email}") a`);
  await hit.first().waitFor();
  await page.screenshot({ path: join(shots, '02-profile-search.png'), fullPage: true });
  await hit.first().click();
  await page.waitForURL(/\/ui\/profiles\/prof_/);

  step = 'the profile card shows the merged history';
  await page.locator('h1', { hasText: email }).waitFor();
  const merges = await page.locator('ol.decisions li.merge').allTextContents();
  check(merges.length >= 1 && merges.some((m) => m.includes('merged into')), `a merge with its reason, got ${JSON.stringify(merges)}`);
  check(await page.locator('table.ids', { hasText: `laptop-${run}` }).count() === 1, 'the laptop identifier');
  check(await page.locator('table.ids', { hasText: `phone-${run}` }).count() === 1, 'the phone identifier');
  check(await page.locator('section.merges button:has-text("Split")').count() >= 1, 'admins get a split action');
  const cardUrl = page.url();
  await page.screenshot({ path: join(shots, '03-profile-card.png'), fullPage: true });

  step = 'create an audience and watch the preview size';
  await page.goto(base + '/ui/audiences/new');
  const name = `e2e-vips-${run}`;
  await page.fill('input[name=name]', name);
  await page.locator('textarea[name=rule]').pressSequentially('trait plan = ', { delay: 5 });
  await page.locator('.rule-error').waitFor();
  await page.locator('textarea[name=rule]').pressSequentially('"vip"', { delay: 5 });
  await page.locator('#preview-size').waitFor();
  const size = Number((await page.locator('#preview-size').textContent()).replace(/[^0-9]/g, ''));
  check(size >= 1, `the preview counts at least the seeded person, got ${size}`);
  await page.screenshot({ path: join(shots, '04-audience-editor.png'), fullPage: true });
  await page.click('button:has-text("Save")');
  await page.waitForURL(/\/ui\/audiences$/);

  step = 'the audience is in the list';
  await page.locator(`table.audiences a:has-text("${name}")`).waitFor();
  await page.screenshot({ path: join(shots, '05-audiences.png'), fullPage: true });

  step = 'the debugger shows a just-sent event';
  await page.goto(base + '/ui/sources');
  await page.locator('#debugger ul.debugger').waitFor();
  const ping = `E2E Debugger Ping ${run}`;
  await api('POST', '/v1/track', { userId: `e2e-${run}`, event: ping, properties: { n: 1 } }, basic);
  const row = page.locator(`#debugger li:has-text("${ping}")`);
  await row.waitFor({ timeout: 20000 });
  await row.locator('summary').click();
  check((await row.locator('pre').textContent()).includes('"message_id"'), 'the full JSON opens');
  await page.waitForTimeout(2500);
  check(await row.locator('details[open] pre').isVisible(), 'an open event stays open (polling pauses)');
  await page.screenshot({ path: join(shots, '06-debugger.png'), fullPage: true });

  step = 'destinations page';
  await page.goto(base + '/ui/destinations');
  await page.screenshot({ path: join(shots, '07-destinations.png'), fullPage: true });

  step = 'privacy page';
  await page.goto(base + '/ui/privacy');
  await page.getByRole('heading', { name: 'Erase a person' }).waitFor();
  await page.getByRole('heading', { name: /Audit log/ }).waitFor();
  await page.screenshot({ path: join(shots, '09-privacy.png'), fullPage: true });

  step = 'an admin creates a viewer on the Users page';
  await page.click('nav >> text=Users');
  await page.waitForURL(/\/ui\/users$/);
  await page.fill('form.new-user input[name=name]', `viewer${run}`);
  await page.selectOption('form.new-user select[name=role]', 'viewer');
  await page.fill('form.new-user input[name=password]', 'viewer-password');
  await page.click('form.new-user button:has-text("Create user")');
  await page.waitForURL(/done=created/);
  await page.locator(`tr[data-user="viewer${run}"] td.role`, { hasText: 'viewer' }).waitFor();
  await page.screenshot({ path: join(shots, 'users.png'), fullPage: true });

  step = 'a viewer is refused an admin action';
  const vpage = await (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  vpage.setDefaultTimeout(15000);
  await vpage.goto(base + '/ui/login');
  await vpage.fill('input[name=user]', `viewer${run}`);
  await vpage.fill('input[name=password]', 'viewer-password');
  await vpage.click('button:has-text("Log in")');
  await vpage.waitForURL(/\/ui\/$/);
  await vpage.goto(cardUrl);
  check(await vpage.locator('section.merges button:has-text("Split")').count() === 0, 'no split button for a viewer');
  // Even a hand-made request with the viewer's own valid CSRF token is refused.
  const status = await vpage.evaluate(async (url) => {
    const csrf = document.querySelector('input[name=_csrf]').value;
    const r = await fetch(url + '/split', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-csrf-token': csrf },
      body: 'undo_merge=prof_x',
    });
    return r.status;
  }, cardUrl);
  check(status === 403, `split as a viewer answers 403, got ${status}`);
  check(await vpage.locator('nav a[href="/ui/users"]').count() === 0, 'no Users link for a viewer');
  const users = await vpage.goto(base + '/ui/users');
  check(users.status() === 403, `the Users page answers 403 to a viewer, got ${users.status()}`);
  const resp = await vpage.goto(base + '/ui/audiences/new');
  check(resp.status() === 403, `the audience editor answers 403 to a viewer, got ${resp.status()}`);
  await vpage.screenshot({ path: join(shots, '08-viewer-refused.png'), fullPage: true });
} finally {
  await browser.close();
}
console.log(`ui e2e: all steps passed; screenshots in ${shots}`);
