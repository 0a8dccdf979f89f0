// Hand-drawn SVG charts: a column chart with an optional "year before" series beside each
// column, and a horizontal bar chart for breakdowns. Sized by viewBox, so they scale with the
// layout (laptop or wall display) without redrawing.

import { num } from './format.js';

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A "nice" upper bound and step for an axis up to `max`. */
function niceScale(max, ticks = 4) {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / ticks;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  return { top: step * Math.ceil(max / step), step };
}

/**
 * Columns per label: `series` is [{ name, values, cls }] (values may hold null). The first series
 * is drawn in front; the others beside it, thinner.
 */
export function columnChart({ labels, series, unit, height = 260, width = 900 }) {
  const pad = { l: 64, r: 12, t: 24, b: 48 };
  const w = width - pad.l - pad.r;
  const h = height - pad.t - pad.b;
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  const { top, step } = niceScale(Math.max(0, ...all));
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, class: 'chart', role: 'img' });
  const y = (v) => pad.t + h - (Math.max(0, v) / top) * h;
  for (let v = 0; v <= top + 1e-9; v += step) {
    root.append(svg('line', { x1: pad.l, x2: pad.l + w, y1: y(v), y2: y(v), class: 'grid' }));
    root.append(svg('text', { x: pad.l - 6, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, num(v, step < 1 ? 2 : 0)));
  }
  root.append(svg('text', { x: 4, y: 14, class: 'unit' }, unit ?? ''));
  const n = Math.max(1, labels.length);
  const band = w / n;
  const groupW = band * 0.76;
  const widths = series.map((_, i) => (i === 0 ? 0.6 : 0.4 / Math.max(1, series.length - 1)));
  labels.forEach((label, i) => {
    let x = pad.l + i * band + (band - groupW) / 2;
    series.forEach((s, j) => {
      const v = s.values[i];
      const bw = groupW * widths[j];
      if (v !== null && v !== undefined) {
        const bar = svg('rect', { x, y: y(v), width: Math.max(1, bw - 1), height: Math.max(0, pad.t + h - y(v)), class: `bar ${s.cls ?? ''}` });
        bar.append(svg('title', {}, `${label} ${s.name}: ${num(v, 2)} ${unit ?? ''}`));
        root.append(bar);
      }
      x += bw;
    });
    // Label every column when they fit, else about twelve of them.
    const every = Math.ceil(n / 12);
    if (i % every === 0) {
      root.append(svg('text', { x: pad.l + i * band + band / 2, y: pad.t + h + 16, class: 'tick', 'text-anchor': 'middle' }, label));
    }
  });
  root.append(svg('line', { x1: pad.l, x2: pad.l + w, y1: pad.t + h, y2: pad.t + h, class: 'axis' }));
  // Legend.
  let lx = pad.l;
  for (const s of series) {
    root.append(svg('rect', { x: lx, y: height - 16, width: 12, height: 12, class: `bar ${s.cls ?? ''}` }));
    const label = svg('text', { x: lx + 16, y: height - 6, class: 'legend' }, s.name);
    root.append(label);
    lx += 24 + s.name.length * 13;
  }
  return root;
}

/** Horizontal bars: rows [{ label, value, cls }], longest first as given. */
export function barList({ rows, unit, width = 520, rowH = 26 }) {
  const pad = { l: 170, r: 90, t: 6, b: 6 };
  const height = pad.t + pad.b + rows.length * rowH;
  const w = width - pad.l - pad.r;
  const max = Math.max(0, ...rows.map((r) => Math.abs(r.value ?? 0)));
  const root = svg('svg', { viewBox: `0 0 ${width} ${Math.max(height, 20)}`, class: 'chart bars', role: 'img' });
  rows.forEach((r, i) => {
    const y = pad.t + i * rowH;
    const len = max > 0 ? (Math.max(0, r.value ?? 0) / max) * w : 0;
    root.append(svg('text', { x: pad.l - 8, y: y + rowH * 0.65, class: 'tick', 'text-anchor': 'end' }, r.label));
    root.append(svg('rect', { x: pad.l, y: y + 4, width: Math.max(len, 1), height: rowH - 8, class: `bar ${r.cls ?? ''}` }));
    root.append(svg('text', { x: pad.l + len + 6, y: y + rowH * 0.65, class: 'tick' }, `${num(r.value, 1)} ${unit ?? ''}`));
  });
  return root;
}
