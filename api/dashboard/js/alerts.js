// Alerts from /api/v1/alerts: meter offline, data gap, anomaly against the day-type baseline,
// and the GB/T 51161 constraint value (an "unverified" notice where no verified value exists).

import { get } from './api.js';
import { t, pick } from './i18n.js';
import { el, beijing } from './format.js';

export async function render(section) {
  const d = await get('alerts');
  if (!d.alerts.length) {
    section.replaceChildren(el('p', { class: 'muted', 'data-k': 'alerts.none' }, t('alerts.none')));
    return;
  }
  const list = el('ul', { class: 'alerts' }, d.alerts.map((a) => el('li', { class: `alert ${a.severity}`, 'data-kind': a.kind, 'data-account': a.account },
    el('span', { class: `sev ${a.severity}` }, t(`sev.${a.severity}`)),
    el('span', { class: 'kind' }, t(`alerts.kind.${a.kind}`)),
    el('span', { class: 'when' }, beijing(a.ts)),
    el('span', { class: 'msg' }, pick(a, 'message')))));
  const omitted = Object.values(d.omitted ?? {}).reduce((s, n) => s + n, 0);
  section.replaceChildren(...[list, omitted ? el('p', { class: 'muted' }, t('alerts.omitted', { n: omitted })) : null].filter(Boolean));
}
