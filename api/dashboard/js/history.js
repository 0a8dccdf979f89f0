// History: consumption by day (last 31 days) or month (last 13 months) for one account or all of
// them, a category's totals with the same period a year before (同比), the item breakdown
// (分项, with the unmetered remainder 缺口量) and the categories in standard coal, all from
// /api/v1/consumption. A month in progress is compared like with like (the API's
// `comparison`), and the page says so under the chart.

import { get } from './api.js';
import { t, pick } from './i18n.js';
import { el, numEl, pct, beijingToday } from './format.js';
import { columnChart, barList } from './charts.js';

const state = { account: null, granularity: 'day', category: '01' };

function addDays(iso, n) {
  const d = new Date(`${iso}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

function range(granularity) {
  const today = beijingToday();
  if (granularity === 'day') return { from: addDays(today, -30), to: addDays(today, 1) };
  const [y, m] = today.split('-').map(Number);
  const first = (yy, mm) => `${String(yy + Math.floor((mm - 1) / 12)).padStart(4, '0')}-${String(((mm - 1) % 12 + 12) % 12 + 1).padStart(2, '0')}-01`;
  return { from: first(y, m - 12), to: first(y, m + 1) };
}

const isTotal = (r) => r.kind === 'total' || (r.kind === 'subtotal' && r.level === 0);

/** Sums rows of several accounts into one per (period, category, item, kind). */
function combine(rows) {
  const out = new Map();
  for (const r of rows) {
    const k = `${r.period}|${r.category}|${r.item}|${r.kind}`;
    const e = out.get(k);
    if (!e) { out.set(k, { ...r, account: '*' }); continue; }
    e.consumption += r.consumption;
    e.kgce += r.kgce;
    e.kgco2e += r.kgco2e;
    e.year_before = e.year_before === null || r.year_before === null ? null : e.year_before + r.year_before;
    e.yoy_pct = e.year_before ? Math.round(((e.consumption - e.year_before) / e.year_before) * 10000) / 100 : null;
  }
  return [...out.values()];
}

function controls(ctx, onChange) {
  const acc = el('select', { 'data-k': 'hist.account' });
  for (const a of ctx.accounts ?? []) acc.append(el('option', { value: a.code }, `${a.code} ${pick(a, 'name')}`));
  acc.append(el('option', { value: '*' }, t('hist.all')));
  acc.value = state.account;
  const gran = el('select', { 'data-k': 'hist.granularity' },
    el('option', { value: 'day' }, t('hist.day')), el('option', { value: 'month' }, t('hist.month')));
  gran.value = state.granularity;
  const cat = el('select', { 'data-k': 'hist.category' });
  acc.addEventListener('change', () => { state.account = acc.value; onChange(); });
  gran.addEventListener('change', () => { state.granularity = gran.value; onChange(); });
  cat.addEventListener('change', () => { state.category = cat.value; onChange(); });
  return { bar: el('div', { class: 'controls' },
    el('label', {}, t('hist.account'), acc), el('label', {}, t('hist.granularity'), gran), el('label', {}, t('hist.category'), cat)), cat };
}

async function draw(section, ctx) {
  delete section.dataset.drawn;
  const { from, to } = range(state.granularity);
  const report = await get('consumption', {
    from, to, granularity: state.granularity, account: state.account === '*' ? undefined : state.account,
  });
  let rows = report.rows;
  if (state.account === '*') rows = combine(rows);
  const { bar, cat } = controls(ctx, () => draw(section, ctx));
  // Categories present, by their total rows.
  const cats = new Map();
  for (const r of rows.filter(isTotal)) cats.set(r.category, r);
  if (!cats.has(state.category) && cats.size) state.category = [...cats.keys()][0];
  for (const [code, r] of cats) cat.append(el('option', { value: code }, `${code} ${pick(r, 'name')}`));
  cat.value = state.category;

  const totals = rows.filter((r) => isTotal(r) && r.category === state.category).sort((a, b) => a.period.localeCompare(b.period));
  // Tells a watcher (the browser test) which selection is on screen.
  const drawn = `${state.account}|${state.granularity}|${state.category}`;
  if (!totals.length) {
    section.replaceChildren(bar, el('p', { class: 'muted' }, t('hist.no_data')));
    section.dataset.drawn = drawn;
    return;
  }
  const unit = totals[0].unit;
  const chart = columnChart({
    labels: totals.map((r) => (state.granularity === 'day' ? r.period.slice(5) : r.period)),
    series: [
      { name: t('hist.this'), values: totals.map((r) => r.consumption), cls: 'now' },
      { name: t('hist.last_year'), values: totals.map((r) => r.year_before), cls: 'before' },
    ],
    unit,
  });
  const latest = totals[totals.length - 1].period;
  const items = rows
    .filter((r) => r.period === latest && r.category === state.category && (r.kind === 'unmetered' || (r.level === 1 && r.kind !== 'total')))
    .sort((a, b) => b.consumption - a.consumption);
  const catKgce = rows.filter((r) => r.period === latest && isTotal(r) && r.kgce > 0).sort((a, b) => b.kgce - a.kgce);
  const table = el('table', { class: 'grid-table', 'data-k': 'hist.table' },
    el('thead', {}, el('tr', {}, el('th', {}, t('col.period')), el('th', { class: 'r' }, `${t('col.total')} ${unit}`),
      el('th', { class: 'r' }, `${t('col.year_before')} ${unit}`), el('th', { class: 'r' }, t('col.yoy')),
      el('th', { class: 'r' }, t('col.kgce')), el('th', { class: 'r' }, t('col.co2')))),
    el('tbody', {}, [...totals].reverse().map((r) => el('tr', { 'data-period': r.period },
      el('td', {}, r.period),
      el('td', { class: 'r' }, numEl(r.consumption, 1, 'consumption')),
      el('td', { class: 'r' }, numEl(r.year_before, 1, 'year_before')),
      el('td', { class: 'r' }, Object.assign(el('span', { 'data-k': 'yoy_pct', 'data-value': r.yoy_pct ?? '' }, pct(r.yoy_pct)))),
      el('td', { class: 'r' }, numEl(r.kgce, 1, 'kgce')),
      el('td', { class: 'r' }, numEl(r.kgco2e, 1, 'kgco2e'))))));
  section.replaceChildren(
    bar,
    el('div', { class: 'panel wide' }, el('h2', {}, `${pick(totals[0], 'name')} · ${from} – ${addDays(to, -1)}`), chart,
      // A month in progress is compared with the same days of the month and the year before.
      report.comparison ? el('p', { class: 'muted', 'data-k': 'hist.comparison' }, pick(report.comparison, 'note')) : null),
    el('div', { class: 'row' },
      el('div', { class: 'panel' }, el('h2', {}, `${t('hist.items')} · ${latest}`),
        items.length ? barList({ rows: items.map((r) => ({ label: `${r.kind === 'unmetered' ? '' : r.item + ' '}${pick(r, 'name')}`, value: r.consumption, cls: r.kind === 'unmetered' ? 'gap' : 'now' })), unit }) : el('p', { class: 'muted' }, t('none'))),
      el('div', { class: 'panel' }, el('h2', {}, `${t('hist.categories')} · ${latest}`),
        barList({ rows: catKgce.map((r) => ({ label: `${r.category} ${pick(r, 'name')}`, value: r.kgce, cls: 'now' })), unit: 'kgce' }))),
    el('div', { class: 'panel wide' }, table));
  section.dataset.drawn = drawn;
}

export async function render(section, ctx) {
  if (!state.account || (state.account !== '*' && !(ctx.accounts ?? []).some((a) => a.code === state.account))) {
    state.account = ctx.accounts?.[0]?.code ?? '*';
  }
  await draw(section, ctx);
}
