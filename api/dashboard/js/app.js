// The page: asks for an API key, then shows one view at a time (#/live, #/history, #/tree,
// #/savings, #/alerts). Each view module exports `render(section, ctx)`, which may return a
// function that stops its timers when another view takes over. `?wall=1` (or the button) is the
// wall-display mode: larger type, no controls in the way; the language toggle is remembered.

import { get, apiKey, setApiKey, clearApiKey, ApiError } from './api.js';
import { t, relabel, language, setLanguage } from './i18n.js';
import * as live from './live.js';
import * as history from './history.js';
import * as tree from './tree.js';
import * as savings from './savings.js';
import * as alerts from './alerts.js';

const VIEWS = { live, history, tree, savings, alerts };
const $ = (id) => document.getElementById(id);
let stopView = null;
let ctx = null;

function status(text) { $('status').textContent = text; }

async function accountsOrNone() {
  try {
    return (await get('accounts')).accounts;
  } catch (e) {
    // The statistics role may not list accounts; its views say so themselves.
    if (e instanceof ApiError && e.status === 403) return null;
    throw e;
  }
}

async function login(key) {
  setApiKey(key);
  try {
    const accounts = await accountsOrNone();
    ctx = { accounts };
    $('login').hidden = true;
    $('nav').hidden = false;
    $('logout').hidden = false;
    $('who').textContent = accounts ? accounts.map((a) => a.code).join(' · ') : '';
    refreshAlertCount();
    show();
  } catch (e) {
    clearApiKey();
    showLogin(e instanceof ApiError && (e.status === 401 || e.status === 403) ? t('login.bad') : e.message);
  }
}

function showLogin(error) {
  if (stopView) stopView();
  stopView = null;
  ctx = null;
  $('view').replaceChildren();
  $('nav').hidden = true;
  $('logout').hidden = true;
  $('who').textContent = '';
  $('login').hidden = false;
  $('login-error').hidden = !error;
  $('login-error').textContent = error ?? '';
  $('key').focus();
}

async function refreshAlertCount() {
  try {
    const a = await get('alerts');
    const n = a.alerts.filter((x) => x.severity !== 'info').length;
    $('alert-count').hidden = n === 0;
    $('alert-count').textContent = String(n);
  } catch { $('alert-count').hidden = true; }
}

function currentView() {
  const name = (location.hash.match(/^#\/(\w+)/) ?? [])[1];
  return VIEWS[name] ? name : 'live';
}

async function show() {
  if (!ctx) return;
  if (stopView) stopView();
  stopView = null;
  const name = currentView();
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === name);
  const section = $('view');
  section.dataset.view = name;
  section.replaceChildren(Object.assign(document.createElement('p'), { className: 'muted', textContent: t('loading') }));
  try {
    stopView = (await VIEWS[name].render(section, ctx)) ?? null;
    section.dataset.ready = name;
    status(`${t('refreshed')} ${new Date().toLocaleTimeString(language() === 'en' ? 'en-GB' : 'zh-CN')}`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return showLogin(t('login.bad'));
    section.replaceChildren(Object.assign(document.createElement('p'), {
      className: 'error',
      textContent: e instanceof ApiError && e.status === 403 ? t('forbidden') : `${t('error')}: ${e.message}`,
    }));
    section.dataset.ready = name;
  }
}

function applyLanguage() {
  relabel();
  $('lang').textContent = language() === 'en' ? '中文' : 'EN';
  document.title = `${t('title')} · jieneng`;
  $('wall').textContent = document.body.classList.contains('wall') ? t('wall.exit') : t('wall');
}

function setWall(on) {
  document.body.classList.toggle('wall', on);
  $('wall').textContent = on ? t('wall.exit') : t('wall');
}

window.addEventListener('DOMContentLoaded', () => {
  setLanguage(language());
  applyLanguage();
  setWall(new URLSearchParams(location.search).get('wall') === '1');
  $('lang').addEventListener('click', () => {
    setLanguage(language() === 'en' ? 'zh' : 'en');
    applyLanguage();
    show();
  });
  $('wall').addEventListener('click', () => {
    const on = !document.body.classList.contains('wall');
    setWall(on);
    if (on && document.documentElement.requestFullscreen) document.documentElement.requestFullscreen().catch(() => {});
    if (!on && document.fullscreenElement) document.exitFullscreen().catch(() => {});
  });
  $('logout').addEventListener('click', () => { clearApiKey(); showLogin(); });
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    login($('key').value.trim());
  });
  window.addEventListener('hashchange', show);
  if (apiKey()) login(apiKey()); else showLogin();
});
