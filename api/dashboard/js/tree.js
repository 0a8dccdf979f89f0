// The account tree: region (province → city → county, from the account code's division) →
// institution → building (the 分户 account) → meter, with each meter's status (online while its
// last reading is younger than the server's offline limit) and its last reading.

import { get } from './api.js';
import { t, pick } from './i18n.js';
import { el, numEl, beijing } from './format.js';

/** The readings worth a line: the counter and power of a meter, its own (not per-phase). */
const SHOWN = ['energy_import', 'volume', 'heat', 'power_active', 'flow', 'outdoor_temperature', 'temperature'];

function meterLine(m) {
  const own = m.readings.filter((r) => !r.channel && SHOWN.includes(r.quantity));
  return el('li', { class: `meter ${m.online ? 'online' : 'offline'}`, 'data-meter': `${m.account}/${m.meter}`, 'data-online': String(m.online) },
    el('span', { class: 'dot', title: m.online ? t('tree.online') : t('tree.offline') }),
    el('span', { class: 'meter-id' }, m.meter),
    el('span', { class: 'role' }, `${t(`tree.${m.role}`)} · ${m.item} ${pick(m, 'item_name')}`),
    el('span', { class: `state ${m.online ? 'ok' : 'bad'}` }, m.online ? t('tree.online') : t('tree.offline')),
    el('span', { class: 'last' }, `${t('tree.last')} ${beijing(m.last_ts)}`),
    el('span', { class: 'values' }, own.map((r) => el('span', { class: 'value', 'data-quantity': r.quantity },
      numEl(r.value, r.unit === 'kW' || r.unit === '°C' ? 1 : 2, `meter.${r.quantity}`), ` ${r.unit}`,
      ...qualityMark(r)))));
}

/** A flag beside a reading whose quality is not good: a glitch's value is not the counter's. */
function qualityMark(r) {
  if (!r.quality || r.quality === 'good') return [];
  return [' ', el('span', { class: `quality ${r.quality}`, 'data-quality': r.quality, title: r.quality },
    t(`quality.${r.quality}`))];
}

function group(list, keyOf) {
  const m = new Map();
  for (const x of list) {
    const k = keyOf(x);
    if (!m.has(k)) m.set(k, []);
    m.get(k).push(x);
  }
  return [...m.entries()].sort(([a], [b]) => a.localeCompare(b));
}

function summary(meters) {
  const online = meters.filter((m) => m.online).length;
  return el('span', { class: 'summary' }, t('tree.summary', { online, offline: meters.length - online }));
}

export async function render(section, ctx) {
  if (!ctx.accounts) {
    section.replaceChildren(el('p', { class: 'error' }, t('forbidden')));
    return;
  }
  const { meters } = await get('meters');
  const metersOf = (code) => meters.filter((m) => m.account === code);
  const building = (a) => el('details', { class: 'node building', open: true, 'data-account': a.code },
    el('summary', {}, el('b', {}, pick(a, 'name')), ` ${a.code} · ${pick(a, 'building_class')}`,
      a.floor_area_m2 ? ` · ${a.floor_area_m2} m²` : '', ' · ', summary(metersOf(a.code))),
    el('ul', { class: 'meters' }, metersOf(a.code).map(meterLine)));
  const institution = ([name, accs]) => el('details', { class: 'node institution', open: true },
    el('summary', {}, `${t('tree.institution')} ${name}`), accs.map(building));
  const level = (digits, label, inner) => ([code, accs]) => el('details', { class: `node region r${digits}`, open: true },
    el('summary', {}, `${label} ${code}`), inner(accs));
  const counties = (accs) => group(accs, (a) => a.division.slice(0, 6)).map(level(6, t('tree.county'),
    (xs) => group(xs, (a) => a.institution || pick(a, 'name')).map(institution)));
  const cities = (accs) => group(accs, (a) => a.division.slice(0, 4)).map(level(4, t('tree.city'), counties));
  const provinces = group(ctx.accounts, (a) => a.division.slice(0, 2)).map(level(2, t('tree.province'), cities));
  section.replaceChildren(el('div', { class: 'tree' }, provinces));
}
