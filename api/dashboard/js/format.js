// Number and time formatting shared by the views. Numbers are shown with a fixed number of
// decimals and digit grouping; the exact value the API gave stays in a data-value attribute.

import { language } from './i18n.js';

function locale() { return language() === 'en' ? 'en-US' : 'zh-CN'; }

export function num(x, decimals = 1) {
  if (x === null || x === undefined || Number.isNaN(x)) return '—';
  return Number(x).toLocaleString(locale(), { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

export function pct(x) {
  if (x === null || x === undefined) return '—';
  return `${x > 0 ? '+' : ''}${num(x, 1)}%`;
}

/** A span showing `x` with `decimals`, carrying the exact value and a test key. */
export function numEl(x, decimals, key) {
  const s = document.createElement('span');
  s.className = 'num';
  s.textContent = num(x, decimals);
  if (x !== null && x !== undefined) s.dataset.value = String(x);
  s.dataset.decimals = String(decimals);
  if (key) s.dataset.k = key;
  return s;
}

/** Beijing time of an RFC 3339 instant: `2026-11-27 14:05`. */
export function beijing(iso) {
  if (!iso) return '—';
  const d = new Date(Date.parse(iso) + 8 * 3600e3);
  return d.toISOString().slice(0, 16).replace('T', ' ');
}

/** Today's Beijing date, `YYYY-MM-DD`. */
export function beijingToday() {
  return new Date(Date.now() + 8 * 3600e3).toISOString().slice(0, 10);
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else if (k === 'text') e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
