// The operator console in a real headless Chromium, against the real binary
// that tests/browser/run.sh started and seeded (see there for the data).
// Tests run in order in one browser profile; each starts logged out.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = need('CONSOLE_URL');
const ADMIN_TOKEN = need('ADMIN_TOKEN');
const SHOTS = process.env.SHOTS_DIR || path.resolve('../../target/console-shots');
const USAGE_DAYS = Number(process.env.SEED_USAGE_DAYS || 1);
const PAID_TODAY = Number(process.env.SEED_PAID_TODAY || 0);
const HOLD_ID = need('SEED_HOLD_ID');

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set; run the suite with make test-browser`);
  return v;
}

let context;
let page;
let profile;

before(async () => {
  fs.mkdirSync(SHOTS, { recursive: true });
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'cg-console-chromium-'));
  // A persistent context is how Playwright takes a --user-data-dir: a
  // fresh, empty profile for every run.
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  page = context.pages()[0] ?? (await context.newPage());
});

after(async () => {
  await context?.close();
  if (profile) fs.rmSync(profile, { recursive: true, force: true });
});

async function shot(name) {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function login() {
  await context.clearCookies();
  await page.goto(`${BASE}/console/login`);
  await page.fill('input[name=token]', ADMIN_TOKEN);
  await submit(page.locator('button[type=submit]'));
  assert.equal(page.url(), `${BASE}/console/`);
}

// A user's balance as the admin API reports it: the truth outside the page.
async function credit(user) {
  const r = await fetch(`${BASE}/admin/v1/users/${user}`, {
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  assert.equal(r.status, 200);
  return (await r.json()).credit;
}

// Clicks and waits for the next page to load: the redirect after a POST
// often leads back to the same URL, so waiting for a URL proves nothing.
async function submit(clickable) {
  await Promise.all([page.waitForEvent('load'), clickable.click()]);
}

async function flashText() {
  return (await page.locator('.flash').allInnerTexts()).join('\n');
}

test('a wrong admin token shows an error and gives no session', async () => {
  await context.clearCookies();
  await page.goto(`${BASE}/console/login`);
  await shot('login');
  await page.fill('input[name=token]', 'not-the-admin-token');
  await submit(page.locator('button[type=submit]'));
  assert.match(await flashText(), /Wrong admin token/);
  assert.deepEqual(await context.cookies(), []);
  // The token went in the body, not in the URL.
  assert.equal(new URL(page.url()).search, '');
});

test('logging in shows the overview', async () => {
  await login();
  assert.equal(await page.locator('h1').innerText(), 'Overview');
  const [cookie] = await context.cookies();
  assert.equal(cookie.name, 'cg_console');
  assert.equal(cookie.httpOnly, true);
  assert.equal(cookie.sameSite, 'Strict');
  assert.equal(cookie.path, '/console');
  await shot('overview-1280x800');
  await page.setViewportSize({ width: 390, height: 844 });
  await shot('overview-390x844');
  await page.setViewportSize({ width: 1280, height: 800 });
});

test('the overview charts have one bar per day with seeded usage', async () => {
  await login();
  const calls = page.locator('#usage .calls rect.bar');
  const credits = page.locator('#usage .credits rect.bar');
  assert.equal(await calls.count(), USAGE_DAYS);
  assert.equal(await credits.count(), USAGE_DAYS);
  // Today's bar is the last one and holds today's paid calls.
  const today = new Date().toISOString().slice(0, 10);
  const last = calls.last();
  assert.equal(await last.getAttribute('data-day'), today);
  assert.equal(Number(await last.getAttribute('data-value')), PAID_TODAY);
  assert.equal(await page.locator('#today-calls').innerText(), String(PAID_TODAY));
  // alice has 50 - 3 of 1000: below 10 %.
  assert.match(await page.locator('#low-credit').innerText(), /alice/);
});

test('the users filter finds a user by part of the name', async () => {
  await login();
  await page.click('nav >> text=Users');
  assert.equal(await page.locator('#users tbody tr').count(), 3);
  await page.fill('input[name=q]', 'LIC');
  await submit(page.locator('form[role=search] button'));
  const names = await page.locator('#users tbody tr td:first-child').allInnerTexts();
  assert.deepEqual(names, ['alice']);
  await page.fill('input[name=q]', '');
  await submit(page.locator('form[role=search] button'));
  await shot('users');
});

test('a top-up of 50 shows the new balance and its ledger row', async () => {
  await login();
  const before = await credit('alice');
  await page.goto(`${BASE}/console/users?q=alice`);
  await submit(page.locator('#users >> text=alice'));
  await page.selectOption('select[name=op]', 'add');
  await page.fill('input[name=amount]', '50');
  await submit(page.locator('text=Apply'));
  assert.match(await flashText(), new RegExp(`the balance is ${before + 50}`));
  assert.equal(await page.locator('#balance').innerText(), String(before + 50));
  assert.equal(await credit('alice'), before + 50);
  const row = await page.locator('#ledger tbody tr').first().locator('td').allInnerTexts();
  assert.deepEqual(row.slice(1), ['+50', String(before + 50), 'top-up', 'console']);
  await shot('user');
});

test("a user's page shows the held credit and the open hold", async () => {
  await login();
  await page.goto(`${BASE}/console/users/bob`);
  const balance = Number(await page.locator('#balance').innerText());
  assert.equal(await page.locator('#held').innerText(), '7');
  assert.equal(await page.locator('#available').innerText(), String(balance - 7));
  const rows = page.locator('#holds tbody tr');
  assert.equal(await rows.count(), 1);
  assert.equal(await rows.first().getAttribute('data-hold'), HOLD_ID);
  const cells = await rows.first().locator('td').allInnerTexts();
  assert.deepEqual(cells.slice(0, 3), [HOLD_ID, '7', 'llm:tokens']);
  assert.match(cells[3], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$/);
  assert.match(cells[4], /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$/);
  await page.locator('#holds').scrollIntoViewIfNeeded();
  await shot('user-holds');
  // alice has none.
  await page.goto(`${BASE}/console/users/alice`);
  assert.match(await page.locator('#holds').innerText(), /No open holds/);
});

test('rotating shows the new token once, and it works', async () => {
  await login();
  await page.goto(`${BASE}/console/users/alice`);
  await submit(page.locator('text=Rotate token'));
  const token = (await page.locator('[data-secret]').innerText()).trim();
  assert.match(token, /^cg_/);
  const paid = await fetch(`${BASE}/api/v1.0/banks_data/BOFA/`, {
    headers: { Authorization: `Bearer alice:${token}` },
  });
  assert.equal(paid.status, 200);
  await page.reload();
  assert.equal(await page.locator('[data-secret]').count(), 0);
  assert.equal((await page.content()).includes(token), false);
});

test('adding a key shows it once, and revoking it stops it', async () => {
  await login();
  await page.goto(`${BASE}/console/users/alice`);
  await page.fill('#keys input[name=label]', 'browser');
  await submit(page.locator('#keys >> text=Add key'));
  const token = (await page.locator('[data-secret]').innerText()).trim();
  const bank = (t) => fetch(`${BASE}/api/v1.0/banks_data/BOFA/`, {
    headers: { Authorization: `Bearer alice:${t}` },
  });
  assert.equal((await bank(token)).status, 200);
  const row = page.locator('#keys tbody tr', { hasText: 'browser' });
  assert.equal(await row.count(), 1);
  await submit(row.locator('text=Revoke'));
  assert.match(await flashText(), /revoked/);
  assert.equal(await page.locator('#keys tbody tr', { hasText: 'browser' }).count(), 0);
  assert.equal((await bank(token)).status, 401);
});

test('setting a rate limit', async () => {
  await login();
  await page.goto(`${BASE}/console/users/bob`);
  await page.fill('input[name=rate]', '10/s');
  await submit(page.locator('form[action$="/limit"] button'));
  assert.equal(await page.locator('#rate-limit').innerText(), '10/s');
  await page.fill('input[name=rate]', 'often');
  await submit(page.locator('form[action$="/limit"] button'));
  assert.match(await flashText(), /a rate is/);
  assert.equal(await page.locator('#rate-limit').innerText(), '10/s');
});

test('pausing and resuming a job', async () => {
  await login();
  await page.click('nav >> text=Jobs');
  const row = page.locator('tr[data-job=heartbeat]');
  await submit(row.locator('text=Pause'));
  assert.match(await flashText(), /Job heartbeat paused/);
  assert.match(await row.innerText(), /paused/);
  await shot('jobs');
  await submit(row.locator('text=Resume'));
  assert.match(await flashText(), /Job heartbeat resumed/);
  assert.match(await row.innerText(), /active/);
});

test('adding and removing a route', async () => {
  await login();
  await page.click('nav >> text=Routes');
  await page.fill('input[name=prefix]', '/weather');
  await page.fill('input[name=upstream]', 'http://127.0.0.1:9/v1');
  await page.fill('input[name=cost]', '2');
  await submit(page.locator('text=Add route'));
  assert.match(await flashText(), /Route \/weather/);
  assert.equal(await page.locator('#routes tbody tr').count(), 1);
  await shot('routes');
  // A bad one is refused on the page and adds nothing.
  await page.fill('input[name=prefix]', 'no-slash');
  await page.fill('input[name=upstream]', 'http://127.0.0.1:9');
  await submit(page.locator('text=Add route'));
  assert.match(await flashText(), /invalid prefix/);
  assert.equal(await page.locator('#routes tbody tr').count(), 1);
  await page.goto(`${BASE}/console/routes`);
  await submit(page.locator('#routes >> text=Remove'));
  assert.match(await flashText(), /removed/);
  assert.equal(await page.locator('#routes').count(), 0);
});

test('a forged POST without the CSRF token changes nothing', async () => {
  await login();
  const before = await credit('bob');
  await page.goto(`${BASE}/console/users/bob`);
  // Same origin, with the cookie, but without the token: the check itself.
  await Promise.all([
    page.waitForEvent('load'),
    page.evaluate(() => {
      const f = document.createElement('form');
      f.method = 'post';
      f.action = '/console/users/bob/credit';
      for (const [k, v] of [['op', 'set'], ['amount', '0']]) {
        const i = document.createElement('input');
        i.name = k;
        i.value = v;
        f.append(i);
      }
      document.body.append(f);
      f.submit();
    }),
  ]);
  await page.waitForSelector('.flash.err');
  assert.match(await flashText(), /nothing was changed/);
  assert.equal(await credit('bob'), before);
  // From another site the browser does not even send the cookie
  // (SameSite=Strict): the console asks for a login.
  const foreign = `<form method="post" action="${BASE}/console/users/bob/credit">
      <input name="op" value="set"><input name="amount" value="0"></form>`;
  await page.goto(`data:text/html,${encodeURIComponent(foreign)}`);
  await Promise.all([page.waitForURL(/\/console\/login$/), page.evaluate(() => document.forms[0].submit())]);
  assert.equal(await credit('bob'), before);
});

// See: #24 (the jobs' last results were cut off in half a page).
test("the overview's jobs table fits its card at 1280 px", async () => {
  await login();
  // A job with a result, so the table has its widest rows.
  const run = await fetch(`${BASE}/admin/v1/jobs/monthly-refill/run`, {
    method: 'POST', headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  assert.equal(run.status, 200);
  await page.reload();
  const box = page.locator('#jobs .scroll');
  const { scroll, client, card } = await box.evaluate((el) => ({
    scroll: el.scrollWidth, client: el.clientWidth,
    card: el.closest('section').getBoundingClientRect().width,
  }));
  assert.ok(scroll <= client, `the table is ${scroll} px in a ${client} px box`);
  assert.ok(card > 900, `the jobs card is ${card} px wide`);
  assert.match(await page.locator('#jobs').innerText(), /monthly-refill/);
  await shot('overview-jobs-1280x800');
});

test('an expired key is marked expired and offers no Revoke', async () => {
  await login();
  await page.goto(`${BASE}/console/users/bob`);
  const stale = page.locator('#keys tbody tr', { hasText: 'stale' });
  assert.equal(await stale.count(), 1);
  assert.match(await stale.innerText(), /expired/);
  assert.equal(await stale.locator('text=Revoke').count(), 0);
  // bob's first key still works and still offers Revoke.
  const working = page.locator('#keys tbody tr:not([data-expired])');
  assert.equal(await working.count(), 1);
  assert.equal(await working.locator('text=Revoke').count(), 1);
  assert.doesNotMatch(await working.innerText(), /expired/);
});

test('a refused route form keeps what was typed', async () => {
  await login();
  await page.goto(`${BASE}/console/routes`);
  await page.fill('input[name=prefix]', '/admin/x');
  await page.fill('input[name=upstream]', 'http://127.0.0.1:9/base');
  await page.fill('input[name=cost]', '4');
  await page.fill('input[name=methods]', 'GET,POST');
  await page.selectOption('select[name=charge_on]', 'non-5xx');
  await page.check('input[name=strip_prefix]');
  await submit(page.locator('text=Add route'));
  assert.match(await flashText(), /prefix/);
  assert.equal(await page.inputValue('input[name=prefix]'), '/admin/x');
  assert.equal(await page.inputValue('input[name=upstream]'), 'http://127.0.0.1:9/base');
  assert.equal(await page.inputValue('input[name=cost]'), '4');
  assert.equal(await page.inputValue('input[name=methods]'), 'GET,POST');
  assert.equal(await page.inputValue('select[name=charge_on]'), 'non-5xx');
  assert.equal(await page.isChecked('input[name=strip_prefix]'), true);
  assert.equal(await page.locator('#routes').count(), 0);
  await shot('routes-refused');
  // Fixed, the same form adds the route.
  await page.fill('input[name=prefix]', '/x');
  await submit(page.locator('text=Add route'));
  assert.match(await flashText(), /Route \/x/);
  assert.equal(await page.inputValue('input[name=prefix]'), '');
  await submit(page.locator('#routes >> text=Remove'));
});

test('adding a user shows its token once, and the token works', async () => {
  await login();
  await page.goto(`${BASE}/console/users`);
  const form = page.locator('#new-user');
  await form.locator('input[name=username]').fill('dave');
  await form.locator('input[name=monthly]').fill('300');
  await form.locator('input[name=email]').fill('dave@example.org');
  await form.locator('input[name=low_credit]').fill('20');
  await submit(form.locator('button[type=submit]'));
  assert.match(await flashText(), /Created dave with 300 credit/);
  const token = (await page.locator('[data-secret]').innerText()).trim();
  assert.match(token, /^cg_/);
  const me = await fetch(`${BASE}/api/v1.0/credit`, {
    headers: { Authorization: `Bearer dave:${token}` },
  });
  assert.equal(me.status, 200);
  assert.equal((await me.json()).credit, 300);
  const admin = await (await fetch(`${BASE}/admin/v1/users/dave`, {
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
  })).json();
  assert.equal(admin.monthly_credit, 300);
  assert.equal(admin.low_credit, 20);
  assert.equal(admin.email, 'dave@example.org');
  assert.match(await page.locator('#users').innerText(), /dave/);
  await page.reload();
  assert.equal(await page.locator('[data-secret]').count(), 0);
  // A second dave is refused; the form keeps what was typed.
  await form.locator('input[name=username]').fill('dave');
  await form.locator('input[name=credit]').fill('5');
  await submit(form.locator('button[type=submit]'));
  assert.match(await flashText(), /dave/);
  assert.equal(await page.locator('[data-secret]').count(), 0);
  assert.equal(await form.locator('input[name=username]').inputValue(), 'dave');
  assert.equal(await form.locator('input[name=credit]').inputValue(), '5');
  assert.equal(await credit('dave'), 300);
  await shot('users-add');
});

test("setting a user's low-credit notice", async () => {
  await login();
  await page.goto(`${BASE}/console/users/bob`);
  const lowCredit = async () => (await (await fetch(`${BASE}/admin/v1/users/bob`, {
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
  })).json()).low_credit;
  const form = page.locator('form[action$="/notify"]');
  await form.locator('input[name=low_credit]').fill('40');
  await submit(form.locator('button'));
  assert.match(await flashText(), /below 40/);
  assert.equal(await page.locator('#low-credit-at').innerText(), 'below 40');
  assert.equal(await lowCredit(), 40);
  await form.locator('input[name=low_credit]').fill('lots');
  await submit(form.locator('button'));
  assert.match(await flashText(), /low-credit notice/);
  assert.equal(await form.locator('input[name=low_credit]').inputValue(), 'lots');
  assert.equal(await lowCredit(), 40);
  await form.locator('input[name=low_credit]').fill('off');
  await submit(form.locator('button'));
  assert.equal(await page.locator('#low-credit-at').innerText(), 'off');
  assert.equal(await lowCredit(), null);
});

test('adding a webhook shows its secret once, and removing it', async () => {
  await login();
  await page.click('nav >> text=Webhooks');
  const hooks = async () => (await (await fetch(`${BASE}/admin/v1/webhooks`, {
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
  })).json()).webhooks;
  const before = (await hooks()).length;
  // No event ticked: refused, nothing added, the URL kept.
  await page.fill('input[name=url]', 'http://127.0.0.1:9/hooks');
  await submit(page.locator('text=Add webhook'));
  assert.match(await flashText(), /at least one event/);
  assert.equal(await page.locator('input[name=url]').inputValue(), 'http://127.0.0.1:9/hooks');
  assert.equal((await hooks()).length, before);
  await page.check('input[name="credit.low"]');
  await page.check('input[name="hold.expired"]');
  await submit(page.locator('text=Add webhook'));
  const secret = (await page.locator('[data-secret]').innerText()).trim();
  assert.match(secret, /^whsec_[A-Za-z0-9+/=]+$/);
  const added = (await hooks()).find((h) => h.url === 'http://127.0.0.1:9/hooks');
  assert.ok(added, 'the admin API does not list the new webhook');
  assert.deepEqual(added.events, ['credit.low', 'hold.expired']);
  assert.ok(!JSON.stringify(added).includes(secret), 'the list gives the secret away');
  assert.match(await page.locator('#webhooks').innerText(), /credit\.low, hold\.expired/);
  await shot('webhooks');
  await page.reload();
  assert.equal(await page.locator('[data-secret]').count(), 0);
  await submit(page.locator(`#webhooks tr:has-text("127.0.0.1:9/hooks") >> text=Remove`));
  assert.equal((await hooks()).length, before);
});

test('logging out and pressing Back shows no data', async () => {
  await login();
  await page.goto(`${BASE}/console/users/bob`);
  assert.equal(await page.locator('#balance').count(), 1);
  await submit(page.locator('text=Log out'));
  assert.equal(page.url(), `${BASE}/console/login`);
  await page.goBack();
  await page.waitForLoadState('load');
  assert.match(page.url(), /\/console\/login$/);
  assert.equal(await page.locator('#balance').count(), 0);
  assert.equal((await page.content()).includes('bob'), false);
  assert.deepEqual(await context.cookies(), []);
});
