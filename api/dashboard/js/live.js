// Live tiles: current power, today's electricity, standard coal, CO2 (and water), for every
// account in the key's scope, refreshed every 10 s without reloading the page.

import { get } from './api.js';
import { t, pick } from './i18n.js';
import { el, numEl, beijing } from './format.js';

const REFRESH_MS = 10_000;

function tile(key, label, value, decimals, unit) {
  return el('div', { class: 'tile', 'data-tile': key },
    el('div', { class: 'tile-label' }, label),
    el('div', { class: 'tile-value' }, numEl(value, decimals, `live.${key}`), el('span', { class: 'unit' }, unit)));
}

function draw(section, d) {
  const tot = d.totals;
  const tiles = el('div', { class: 'tiles' },
    tile('power_kw', t('live.power'), tot.power_kw, 1, 'kW'),
    tile('energy_kwh', t('live.energy'), tot.energy_kwh, 1, 'kWh'),
    tile('kgce', t('live.kgce'), tot.kgce, 1, 'kgce'),
    tile('kgco2e', t('live.co2'), tot.kgco2e, 1, 'kgCO2e'),
    tot.water_m3 !== null ? tile('water_m3', t('live.water'), tot.water_m3, 2, 'm³') : null);
  const rows = d.accounts.map((a) => el('tr', { 'data-account': a.account },
    el('td', {}, a.account),
    el('td', {}, pick(a, 'name')),
    el('td', { class: 'r' }, numEl(a.power_kw, 1, 'power_kw')),
    el('td', { class: 'r' }, numEl(a.energy_kwh, 1, 'energy_kwh')),
    el('td', { class: 'r' }, numEl(a.kgce, 1, 'kgce')),
    el('td', { class: 'r' }, numEl(a.kgco2e, 1, 'kgco2e')),
    el('td', { class: 'r' }, numEl(a.water_m3, 2, 'water_m3'))));
  const table = el('table', { class: 'grid-table' },
    el('thead', {}, el('tr', {},
      el('th', {}, t('col.account')), el('th', {}, t('col.name')), el('th', { class: 'r' }, t('col.power')),
      el('th', { class: 'r' }, t('col.energy')), el('th', { class: 'r' }, t('col.kgce')),
      el('th', { class: 'r' }, t('col.co2')), el('th', { class: 'r' }, t('col.water')))),
    el('tbody', {}, rows));
  section.replaceChildren(
    tiles,
    el('h2', {}, `${t('live.accounts')} · ${d.date}`),
    table,
    el('p', { class: 'muted', 'data-k': 'live.as_of', 'data-value': d.as_of }, `${t('live.as_of')} ${beijing(d.as_of)}`));
}

export async function render(section) {
  draw(section, await get('live'));
  let busy = false;
  const timer = setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      draw(section, await get('live'));
      section.dataset.refreshed = String(Date.now());
    } catch { /* keep the last figures; the next tick tries again */ } finally { busy = false; }
  }, REFRESH_MS);
  return () => clearInterval(timer);
}
