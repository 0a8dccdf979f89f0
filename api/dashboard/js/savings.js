// Savings opportunities from /api/v1/savings (the last 365 days against the 365 before): ranked,
// with the yearly kWh, kgce and kgCO2e, the explanation, whether every number behind it is
// verified, and each account's baseline fit (CV(RMSE), NMBE against ASHRAE Guideline 14). A
// server without the endpoint gets a clear "not available" instead of an error.

import { get, ApiError } from './api.js';
import { t, pick, language } from './i18n.js';
import { el, numEl, num } from './format.js';

function nameOf(ctx, code, fallback) {
  const a = (ctx.accounts ?? []).find((x) => x.code === code);
  return a ? pick(a, 'name') : fallback;
}

function opportunity(ctx, o) {
  const en = language() === 'en';
  return el('div', { class: 'opp', 'data-rank': o.rank, 'data-account': o.account, 'data-kind': o.kind },
    el('h3', {}, `${o.rank}. ${nameOf(ctx, o.account, o.name_zh)} · ${en ? o.kind_en : o.kind_zh} `,
      el('span', { class: `tag ${o.verified ? 'verified' : 'unverified'}` }, o.verified ? t('savings.verified') : t('savings.unverified'))),
    el('div', { class: 'figures' },
      el('span', {}, el('b', {}, numEl(o.kwh_per_year, 0, 'kwh_per_year')), ` ${t('savings.kwh')}`),
      el('span', {}, el('b', {}, numEl(o.kgce_per_year, 1, 'kgce_per_year')), ` ${t('savings.kgce')}`),
      el('span', {}, el('b', {}, numEl(o.kgco2e_per_year, 1, 'kgco2e_per_year')), ` ${t('savings.co2')}`)),
    el('p', { class: 'explanation' }, en ? o.explanation_en : o.explanation_zh),
    o.verified ? null : el('p', { class: 'muted small' }, o.unverified_reasons.join('; ')));
}

function fits(ctx, accounts) {
  const rows = accounts.filter((a) => a.baseline).map((a) => el('tr', { 'data-account': a.account },
    el('td', {}, nameOf(ctx, a.account, a.name_zh)),
    el('td', {}, a.baseline.model),
    el('td', { class: 'r' }, `${num(a.baseline.cv_rmse * 100, 1)}%`),
    el('td', { class: 'r' }, `${num(a.baseline.nmbe * 100, 2)}%`),
    el('td', {}, a.baseline.passes_ashrae14 ? '✓' : '✗'),
    el('td', {}, pick(a.temperature, 'note'))));
  if (!rows.length) return null;
  return el('div', { class: 'panel wide' }, el('h2', {}, t('savings.fit')),
    el('table', { class: 'grid-table' },
      el('thead', {}, el('tr', {}, el('th', {}, t('col.name')), el('th', {}, 'model'), el('th', { class: 'r' }, 'CV(RMSE)'),
        el('th', { class: 'r' }, 'NMBE'), el('th', {}, 'ASHRAE 14'), el('th', {}, '°C'))),
      el('tbody', {}, rows)));
}

export async function render(section, ctx) {
  let d;
  try {
    d = await get('savings');
  } catch (e) {
    if (e instanceof ApiError && (e.status === 404 || e.status === 405)) {
      section.replaceChildren(el('p', { class: 'notice', 'data-k': 'savings.unavailable' }, t('savings.unavailable')));
      return;
    }
    throw e;
  }
  section.replaceChildren(...[
    el('h2', {}, `${t('savings.title')} · ${d.from} – ${d.to}`),
    d.opportunities.length
      ? el('div', { class: 'opps' }, d.opportunities.map((o) => opportunity(ctx, o)))
      : el('p', { class: 'muted' }, t('savings.none')),
    fits(ctx, d.accounts)].filter(Boolean));
}
