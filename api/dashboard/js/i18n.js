// Labels in zh-CN and English. The choice is remembered in localStorage; the page's numbers
// and the server's messages (alerts, savings) come in both languages from the API.

const TEXT = {
  zh: {
    'title': '节能驾驶舱',
    'nav.live': '实时', 'nav.history': '历史', 'nav.tree': '户表', 'nav.savings': '节能潜力', 'nav.alerts': '告警',
    'wall': '大屏', 'wall.exit': '退出大屏', 'logout': '退出',
    'login.title': '请输入 API 密钥',
    'login.help': '密钥只保存在本标签页（sessionStorage），以 Bearer 令牌发送。',
    'login.submit': '登录',
    'login.bad': '密钥无效或无权访问',
    'loading': '加载中…', 'error': '出错了', 'none': '无', 'refreshed': '更新于',
    'forbidden': '此密钥无权查看该视图',
    'live.power': '当前功率', 'live.energy': '今日用电', 'live.kgce': '今日标煤', 'live.co2': '今日碳排放',
    'live.water': '今日用水', 'live.accounts': '各户今日', 'live.as_of': '数据时间',
    'col.account': '户号', 'col.name': '名称', 'col.power': '功率 kW', 'col.energy': '用电 kWh',
    'col.kgce': '标煤 kgce', 'col.co2': '碳 kgCO2e', 'col.water': '用水 m³',
    'col.period': '时段', 'col.total': '用量', 'col.year_before': '去年同期', 'col.yoy': '同比',
    'col.item': '分项', 'col.share': '占比',
    'hist.account': '户', 'hist.all': '全部（合计）', 'hist.granularity': '粒度', 'hist.day': '按日', 'hist.month': '按月',
    'hist.category': '分类', 'hist.this': '本期', 'hist.last_year': '去年同期', 'hist.items': '分项构成',
    'hist.categories': '分类构成', 'hist.latest': '最近一期', 'hist.no_data': '该时段无数据',
    'tree.province': '省', 'tree.city': '市', 'tree.county': '区县', 'tree.institution': '单位',
    'tree.online': '在线', 'tree.offline': '离线', 'tree.last': '最后读数', 'tree.meters': '计量表',
    'tree.main': '总表', 'tree.sub': '分表', 'tree.meter': '表',
    'tree.summary': '{online} 在线 / {offline} 离线',
    'quality.estimated': '估算', 'quality.rollover': '计数翻转', 'quality.reset': '表计复位',
    'quality.gap': '缺数', 'quality.out_of_range': '超出范围', 'quality.stale': '数值陈旧',
    'quality.replaced': '换表', 'quality.glitch': '异常读数（不计量）',
    'savings.title': '节能机会', 'savings.unavailable': '节能潜力接口暂不可用（/api/v1/savings 未提供）。',
    'savings.kwh': '节电 kWh/年', 'savings.kgce': '标煤 kgce/年', 'savings.co2': '减碳 kgCO2e/年',
    'savings.kind': '类型', 'savings.fit': '基线拟合', 'savings.none': '未发现节能机会',
    'savings.verified': '已核实', 'savings.unverified': '未核实',
    'alerts.none': '当前无告警', 'alerts.kind.meter_offline': '表计离线', 'alerts.kind.data_gap': '数据缺失',
    'alerts.kind.anomaly': '用量异常', 'alerts.kind.over_constraint': '超约束值',
    'alerts.kind.benchmark_unverified': '限值未核实',
    'alerts.kind.calendar_missing': '节假日未录入',
    'sev.critical': '严重', 'sev.warning': '警告', 'sev.info': '提示',
    'alerts.omitted': '另有 {n} 条未列出',
  },
  en: {
    'title': 'Energy dashboard',
    'nav.live': 'Live', 'nav.history': 'History', 'nav.tree': 'Accounts', 'nav.savings': 'Savings', 'nav.alerts': 'Alerts',
    'wall': 'Wall', 'wall.exit': 'Exit wall', 'logout': 'Log out',
    'login.title': 'Enter an API key',
    'login.help': 'The key stays in this tab (sessionStorage) and is sent as a bearer token.',
    'login.submit': 'Log in',
    'login.bad': 'Unknown key, or it may not read this',
    'loading': 'Loading…', 'error': 'Error', 'none': 'none', 'refreshed': 'Updated',
    'forbidden': 'This key may not read this view',
    'live.power': 'Current power', 'live.energy': 'Electricity today', 'live.kgce': 'Standard coal today',
    'live.co2': 'CO2 today', 'live.water': 'Water today', 'live.accounts': 'Today by account', 'live.as_of': 'As of',
    'col.account': 'Account', 'col.name': 'Name', 'col.power': 'Power kW', 'col.energy': 'Electricity kWh',
    'col.kgce': 'kgce', 'col.co2': 'kgCO2e', 'col.water': 'Water m³',
    'col.period': 'Period', 'col.total': 'Use', 'col.year_before': 'Year before', 'col.yoy': 'YoY',
    'col.item': 'Item', 'col.share': 'Share',
    'hist.account': 'Account', 'hist.all': 'All (sum)', 'hist.granularity': 'By', 'hist.day': 'Day', 'hist.month': 'Month',
    'hist.category': 'Category', 'hist.this': 'This period', 'hist.last_year': 'Year before', 'hist.items': 'Items',
    'hist.categories': 'Categories', 'hist.latest': 'latest period', 'hist.no_data': 'No data in this period',
    'tree.province': 'Province', 'tree.city': 'City', 'tree.county': 'County', 'tree.institution': 'Institution',
    'tree.online': 'online', 'tree.offline': 'offline', 'tree.last': 'Last reading', 'tree.meters': 'meters',
    'tree.main': 'main', 'tree.sub': 'sub-meter', 'tree.meter': 'meter',
    'tree.summary': '{online} online / {offline} offline',
    'quality.estimated': 'estimated', 'quality.rollover': 'rollover', 'quality.reset': 'reset',
    'quality.gap': 'gap', 'quality.out_of_range': 'out of range', 'quality.stale': 'stale',
    'quality.replaced': 'replaced', 'quality.glitch': 'glitch (not counted)',
    'savings.title': 'Savings opportunities', 'savings.unavailable': 'Savings analysis is not available on this server (/api/v1/savings is missing).',
    'savings.kwh': 'kWh/year', 'savings.kgce': 'kgce/year', 'savings.co2': 'kgCO2e/year',
    'savings.kind': 'Kind', 'savings.fit': 'Baseline fit', 'savings.none': 'No savings opportunity found',
    'savings.verified': 'verified', 'savings.unverified': 'UNVERIFIED',
    'alerts.none': 'No alerts', 'alerts.kind.meter_offline': 'Meter offline', 'alerts.kind.data_gap': 'Data gap',
    'alerts.kind.anomaly': 'Anomaly', 'alerts.kind.over_constraint': 'Over constraint',
    'alerts.kind.benchmark_unverified': 'Benchmark unverified',
    'alerts.kind.calendar_missing': 'Holiday calendar missing',
    'sev.critical': 'critical', 'sev.warning': 'warning', 'sev.info': 'info',
    'alerts.omitted': '{n} more not listed',
  },
};

let lang = localStorage.getItem('jieneng.lang') === 'en' ? 'en' : 'zh';

export function language() { return lang; }

export function setLanguage(l) {
  lang = l === 'en' ? 'en' : 'zh';
  localStorage.setItem('jieneng.lang', lang);
  document.documentElement.lang = lang === 'en' ? 'en' : 'zh-CN';
}

/** The label of `key`, with `{name}` placeholders filled from `vars`. */
export function t(key, vars = {}) {
  const s = TEXT[lang][key] ?? TEXT.zh[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
}

/** The zh or en field of an API object: `pick(a, 'name')` is a.name_zh or a.name_en. */
export function pick(obj, field) {
  const v = lang === 'en' ? obj[`${field}_en`] : obj[`${field}_zh`];
  return v || obj[`${field}_zh`] || obj[`${field}_en`] || '';
}

/** Relabels every element with a data-i18n key. */
export function relabel(root = document) {
  for (const el of root.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
}
