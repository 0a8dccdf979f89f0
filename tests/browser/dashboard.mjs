// End-to-end test of the dashboard in Debian's chromium, driven by playwright-core. Run by
// jieneng/tests/dashboard.rs against `jieneng serve` over data the demo wrote:
//
//   BASE_URL=http://127.0.0.1:PORT ADMIN_KEY=… OFFICER_KEY=… OFFICER_ACCOUNTS=a,b OUT_DIR=dir \
//     node tests/browser/dashboard.mjs
//
// It logs in, visits every view in zh-CN and English, checks that each number shown equals the
// API's answer to the same question (fetched here with the same key), that every view has demo
// data, that an officer key sees only its accounts, that no request leaves the server, and writes
// a screenshot of each view into OUT_DIR. Exit status 0 only if every check passed.

import { chromium } from 'playwright-core';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const BASE = process.env.BASE_URL;
const ADMIN = process.env.ADMIN_KEY;
const OFFICER = process.env.OFFICER_KEY;
const OFFICER_ACCOUNTS = (process.env.OFFICER_ACCOUNTS ?? '').split(',').filter(Boolean);
const OUT = process.env.OUT_DIR;
const VIEW_TIMEOUT = Number(process.env.VIEW_TIMEOUT_MS ?? 300_000);
for (const [k, v] of Object.entries({ BASE, ADMIN, OFFICER, OUT })) if (!v) throw new Error(`${k} is not set`);
mkdirSync(OUT, { recursive: true });

let passed = 0;
const failures = [];
function check(cond, what) {
  if (cond) passed += 1;
  else { failures.push(what); console.error(`FAIL ${what}`); }
}

async function api(key, path) {
  const r = await fetch(`${BASE}/api/v1/${path}`, { headers: { Authorization: `Bearer ${key}` } });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${await r.text()}`);
  return r.json();
}

/** What the page shows for `x` with `decimals` in language `lang` (same Intl as the page). */
function shown(x, decimals, lang) {
  if (x === null || x === undefined) return '—';
  return Number(x).toLocaleString(lang === 'en' ? 'en-US' : 'zh-CN', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

/** Checks every [data-k=key] number inside `scope` against `expected` (value). */
async function checkNum(scope, selector, expected, decimals, lang, what) {
  const loc = scope.locator(selector).first();
  const text = (await loc.textContent())?.trim();
  const value = await loc.getAttribute('data-value');
  check(text === shown(expected, decimals, lang), `${what}: shows ${text}, API ${shown(expected, decimals, lang)} (${expected})`);
  if (expected !== null && expected !== undefined) {
    check(Number(value) === Number(expected), `${what}: data-value ${value} != API ${expected}`);
  }
}

const today = new Date(Date.now() + 8 * 3600e3).toISOString().slice(0, 10);
const addDays = (iso, n) => { const d = new Date(`${iso}T00:00:00Z`); d.setUTCDate(d.getUTCDate() + n); return d.toISOString().slice(0, 10); };
const isTotal = (r) => r.kind === 'total' || (r.kind === 'subtotal' && r.level === 0);

async function openView(page, view) {
  await page.evaluate((v) => { document.getElementById('view').dataset.ready = ''; location.hash = `#/${v}`; }, view);
  await page.waitForSelector(`#view[data-ready="${view}"]`, { timeout: VIEW_TIMEOUT });
  check(!(await page.locator('#view > p.error').count()), `${view}: no error shown`);
}

async function shot(page, name) {
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
}

async function setLang(page, lang) {
  const current = await page.evaluate(() => document.documentElement.lang);
  if ((lang === 'en') !== (current === 'en')) await page.click('#lang');
  await page.waitForFunction((l) => (l === 'en') === (document.documentElement.lang === 'en'), lang);
}

async function login(page, key) {
  await page.goto(`${BASE}/`);
  await page.waitForSelector('#login:not([hidden])');
  await page.fill('#key', key);
  await page.click('#login button[type=submit]');
  await page.waitForSelector('#view[data-ready="live"]', { timeout: VIEW_TIMEOUT });
}

const profile = mkdtempSync(join(tmpdir(), 'jieneng-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  viewport: { width: 1440, height: 900 },
});
// Nothing may leave the server: record and refuse any other request.
const outside = [];
await context.route('**/*', (route) => {
  const url = route.request().url();
  if (url.startsWith(BASE)) return route.continue();
  outside.push(url);
  return route.abort();
});
const consoleErrors = [];

try {
  const page = await context.newPage();
  page.on('pageerror', (e) => consoleErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });

  // The API's answers, once each (the server's data does not change during the test).
  const accounts = (await api(ADMIN, 'accounts')).accounts;
  const live = await api(ADMIN, 'live');
  const meters = (await api(ADMIN, 'meters')).meters;
  const alerts = (await api(ADMIN, 'alerts')).alerts;
  const savings = await api(ADMIN, 'savings');
  // The account with sub-meters (items and the unmetered remainder), else the first.
  const first = (accounts.find((a) => a.main_meter.length) ?? accounts[0]).code;
  const dayRange = { from: addDays(today, -30), to: addDays(today, 1) };
  const byDay = await api(ADMIN, `consumption?from=${dayRange.from}&to=${dayRange.to}&granularity=day&account=${first}`);
  const [y, m] = today.split('-').map(Number);
  const monthStart = (yy, mm) => `${yy + Math.floor((mm - 1) / 12)}-${String(((mm - 1) % 12 + 12) % 12 + 1).padStart(2, '0')}-01`;
  const byMonth = await api(ADMIN, `consumption?from=${monthStart(y, m - 12)}&to=${monthStart(y, m + 1)}&granularity=month&account=${first}`);

  // The demo's data is there at all.
  check(live.totals.energy_kwh > 0 && live.totals.power_kw > 0, 'live: demo data today');
  check(meters.some((x) => x.online) && meters.some((x) => !x.online), 'meters: some online, some offline');
  for (const kind of ['meter_offline', 'data_gap', 'anomaly', 'benchmark_unverified']) {
    check(alerts.some((a) => a.kind === kind), `alerts: a ${kind} alert in the demo data`);
  }
  check(savings.opportunities.length > 0, 'savings: at least one opportunity in the demo data');

  await login(page, ADMIN);
  const keyInSession = await page.evaluate(() => sessionStorage.getItem('jieneng.apiKey'));
  check(keyInSession === ADMIN, 'the key is kept in sessionStorage');

  for (const lang of ['zh', 'en']) {
    await setLang(page, lang);
    // Live tiles.
    await openView(page, 'live');
    for (const [k, d] of [['power_kw', 1], ['energy_kwh', 1], ['kgce', 1], ['kgco2e', 1], ['water_m3', 2]]) {
      await checkNum(page, `[data-k="live.${k}"]`, live.totals[k], d, lang, `${lang} live tile ${k}`);
    }
    for (const a of live.accounts) {
      const row = page.locator(`tr[data-account="${a.account}"]`);
      for (const [k, d] of [['power_kw', 1], ['energy_kwh', 1], ['kgce', 1], ['kgco2e', 1], ['water_m3', 2]]) {
        await checkNum(row, `[data-k="${k}"]`, a[k], d, lang, `${lang} live ${a.account} ${k}`);
      }
      check((await row.textContent()).includes(lang === 'en' ? a.name_en : a.name_zh), `${lang} live ${a.account} name`);
    }
    await shot(page, `${lang}-live`);

    // History by day (first account), then by month.
    await openView(page, 'history');
    for (const [gran, report] of [['day', byDay], ['month', byMonth]]) {
      if (await page.inputValue('[data-k="hist.account"]') !== first) {
        await page.selectOption('[data-k="hist.account"]', first);
      }
      if (await page.inputValue('[data-k="hist.granularity"]') !== gran) {
        await page.selectOption('[data-k="hist.granularity"]', gran);
      }
      await page.waitForSelector(`#view[data-drawn^="${first}|${gran}|"]`, { timeout: VIEW_TIMEOUT });
      const items = report.rows.filter((r) => r.category === '01' && r.level === 1);
      check(items.length > 0 && report.rows.some((r) => r.kind === 'unmetered'), `${lang} history ${gran}: items and the unmetered remainder`);
      const totals = report.rows.filter((r) => isTotal(r) && r.category === '01');
      check(totals.length >= (gran === 'day' ? 28 : 12), `${lang} history ${gran}: ${totals.length} periods of demo data`);
      check(totals.filter((r) => r.year_before !== null).length >= (gran === 'day' ? 28 : 1), `${lang} history ${gran}: year-on-year present`);
      check(await page.locator('[data-k="hist.table"] tbody tr').count() === totals.length, `${lang} history ${gran}: one row per period`);
      for (const r of totals) {
        const row = page.locator(`[data-k="hist.table"] tr[data-period="${r.period}"]`);
        await checkNum(row, '[data-k="consumption"]', r.consumption, 1, lang, `${lang} history ${gran} ${r.period} use`);
        await checkNum(row, '[data-k="year_before"]', r.year_before, 1, lang, `${lang} history ${gran} ${r.period} year before`);
        const yoy = (await row.locator('[data-k="yoy_pct"]').textContent()).trim();
        const want = r.yoy_pct === null ? '—' : `${r.yoy_pct > 0 ? '+' : ''}${shown(r.yoy_pct, 1, lang)}%`;
        check(yoy === want, `${lang} history ${gran} ${r.period} YoY ${yoy} != ${want}`);
      }
      check(await page.locator('svg.chart rect.bar.now').count() > 0, `${lang} history ${gran}: chart drawn`);
      await shot(page, `${lang}-history-${gran}`);
    }
    await page.selectOption('[data-k="hist.granularity"]', 'day');
    await page.waitForSelector(`#view[data-drawn^="${first}|day|"]`, { timeout: VIEW_TIMEOUT });

    // The account tree.
    await openView(page, 'tree');
    check(await page.locator('li.meter').count() === meters.length, `${lang} tree: every meter listed`);
    for (const mt of meters) {
      const li = page.locator(`li.meter[data-meter="${mt.account}/${mt.meter}"]`);
      check(await li.getAttribute('data-online') === String(mt.online), `${lang} tree ${mt.account}/${mt.meter} status`);
      const counter = mt.readings.find((r) => !r.channel && (r.quantity === 'energy_import' || r.quantity === 'volume'));
      if (counter) await checkNum(li, `[data-k="meter.${counter.quantity}"]`, counter.value, 2, lang, `${lang} tree ${mt.account}/${mt.meter} counter`);
    }
    for (const a of accounts) check(await page.locator(`details.building[data-account="${a.code}"]`).count() === 1, `${lang} tree: building ${a.code}`);
    await shot(page, `${lang}-tree`);

    // Savings.
    await openView(page, 'savings');
    check(await page.locator('.opp').count() === savings.opportunities.length, `${lang} savings: every opportunity shown`);
    for (const o of savings.opportunities) {
      const card = page.locator(`.opp[data-rank="${o.rank}"]`);
      await checkNum(card, '[data-k="kwh_per_year"]', o.kwh_per_year, 0, lang, `${lang} savings #${o.rank} kWh`);
      await checkNum(card, '[data-k="kgce_per_year"]', o.kgce_per_year, 1, lang, `${lang} savings #${o.rank} kgce`);
      await checkNum(card, '[data-k="kgco2e_per_year"]', o.kgco2e_per_year, 1, lang, `${lang} savings #${o.rank} kgCO2e`);
      check((await card.textContent()).includes(lang === 'en' ? o.explanation_en : o.explanation_zh), `${lang} savings #${o.rank} explanation`);
    }
    await shot(page, `${lang}-savings`);

    // Alerts.
    await openView(page, 'alerts');
    const items = page.locator('li.alert');
    check(await items.count() === alerts.length, `${lang} alerts: every alert shown`);
    for (let i = 0; i < alerts.length; i += 1) {
      const text = await items.nth(i).textContent();
      check(text.includes(lang === 'en' ? alerts[i].message_en : alerts[i].message_zh), `${lang} alert ${i} message`);
      check(await items.nth(i).getAttribute('data-kind') === alerts[i].kind, `${lang} alert ${i} kind`);
    }
    await shot(page, `${lang}-alerts`);
  }

  // The language is remembered across a reload; the key survives it too (same tab).
  await page.reload();
  await page.waitForSelector('#view[data-ready]', { timeout: VIEW_TIMEOUT });
  check(await page.evaluate(() => document.documentElement.lang) === 'en', 'language remembered after reload');
  check(await page.locator('#nav a[data-view="live"]').textContent() === 'Live', 'English labels after reload');

  // Wall display.
  await page.goto(`${BASE}/?wall=1#/live`);
  await page.waitForSelector('#view[data-ready="live"]', { timeout: VIEW_TIMEOUT });
  check(await page.evaluate(() => document.body.classList.contains('wall')), 'wall mode from ?wall=1');
  await page.setViewportSize({ width: 1920, height: 1080 });
  await shot(page, 'en-live-wall');
  await page.close();

  // An officer sees only its accounts: in a new tab (sessionStorage is per tab), in Chinese.
  const officer = await context.newPage();
  await officer.addInitScript(() => localStorage.setItem('jieneng.lang', 'zh'));
  officer.on('pageerror', (e) => consoleErrors.push(String(e)));
  await login(officer, OFFICER);
  const shownAccounts = await officer.locator('tr[data-account]').evaluateAll((els) => els.map((e) => e.dataset.account));
  check(shownAccounts.length === OFFICER_ACCOUNTS.length && shownAccounts.every((a) => OFFICER_ACCOUNTS.includes(a)),
    `officer live shows ${shownAccounts} (allowed ${OFFICER_ACCOUNTS})`);
  const officerLive = await api(OFFICER, 'live');
  await checkNum(officer, '[data-k="live.energy_kwh"]', officerLive.totals.energy_kwh, 1, 'zh', 'officer live energy');
  check(officerLive.totals.energy_kwh < live.totals.energy_kwh, 'officer total is a part of the admin total');
  await shot(officer, 'zh-officer-live');
  await openView(officer, 'tree');
  const trees = await officer.locator('details.building').evaluateAll((els) => els.map((e) => e.dataset.account));
  check(trees.length === OFFICER_ACCOUNTS.length && trees.every((a) => OFFICER_ACCOUNTS.includes(a)), `officer tree shows ${trees}`);
  const meterAccounts = await officer.locator('li.meter').evaluateAll((els) => els.map((e) => e.dataset.meter.split('/')[0]));
  check(meterAccounts.length > 0 && meterAccounts.every((a) => OFFICER_ACCOUNTS.includes(a)), 'officer tree meters in scope');
  await shot(officer, 'zh-officer-tree');
  await openView(officer, 'alerts');
  const alertAccounts = await officer.locator('li.alert').evaluateAll((els) => els.map((e) => e.dataset.account));
  check(alertAccounts.every((a) => OFFICER_ACCOUNTS.includes(a)), `officer alerts only in scope: ${alertAccounts}`);
  const html = await officer.content();
  const others = accounts.map((a) => a.code).filter((c) => !OFFICER_ACCOUNTS.includes(c));
  check(others.every((c) => !html.includes(c)), `officer page never mentions ${others}`);
  await officer.close();
} catch (e) {
  failures.push(`exception: ${e.stack ?? e}`);
  console.error(e);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}

check(outside.length === 0, `no request left the server: ${outside.join(', ')}`);
check(consoleErrors.length === 0, `no script errors: ${consoleErrors.join(' | ')}`);
console.log(`dashboard: ${passed} passed, ${failures.length} failed`);
process.exit(failures.length ? 1 : 0);
