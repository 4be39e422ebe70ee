// Pilotfish dashboard: reads the control plane's /v1 API with a read-only token, every few
// seconds, and shows the mesh: a topology graph, golden metrics per service and per edge,
// proxies and their certificates, rollouts and the latest configuration events.
//
// The page runs under a Content-Security-Policy with Trusted Types enforced: it builds the DOM
// with createElement and textContent only, never from markup, so nothing the API returns (a
// service name, an event's document) can become code.
'use strict';

(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const TOKEN_KEY = 'pilotfish.token';
  const REFRESH_MS = 5000;
  /** Configuration events shown, and how far back in the log to look for them. */
  const EVENTS_SHOWN = 10;
  const EVENTS_SCANNED = 200;
  /** Kiali's defaults: 5xx at 0.1% or more is degraded, over 10% failing. */
  const DEGRADED_AT = 0.001;
  const FAILING_OVER = 0.1;
  /** Above this many lines either side, a diff shows both documents instead of a line diff. */
  const DIFF_MAX_LINES = 1500;

  const $ = (id) => document.getElementById(id);

  /** An HTML element with attributes and children (text or nodes). */
  function h(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  /** An SVG element with attributes and children. */
  function s(tag, attrs, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  }

  function build(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null && value !== false) {
        node.setAttribute(name, value === true ? '' : String(value));
      }
    }
    for (const child of children.flat()) {
      if (child !== undefined && child !== null) node.append(child);
    }
    return node;
  }

  // ---- token ------------------------------------------------------------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  /** `#token=…` (what `pilotfish up` prints): kept for this tab, then removed from the URL
   *  and the history so it is neither shared with a copied link nor left in the address bar. */
  function takeTokenFromUrl() {
    const found = /^#token=([^&]+)$/.exec(location.hash);
    if (!found) return false;
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(found[1]));
    history.replaceState(null, '', location.pathname + location.search);
    return true;
  }

  class Refused extends Error {}

  /** A GET of the API as JSON. */
  async function api(path) {
    const response = await fetch(path, {
      headers: { Authorization: `Bearer ${token()}`, Accept: 'application/json' },
      cache: 'no-store',
      credentials: 'omit',
    });
    if (response.status === 401) {
      throw new Refused('The control plane refused the token (expired, or not a read-only or admin token).');
    }
    if (!response.ok) {
      let detail = '';
      try {
        detail = (await response.json()).error || '';
      } catch (_) {
        detail = response.statusText;
      }
      throw new Error(`${path.split('?')[0]} answered ${response.status}: ${detail}`);
    }
    return response.json();
  }

  // ---- formatting ---------------------------------------------------------------------------

  /** healthy | degraded | failing | idle, from requests and successes. */
  function health(requests, successes) {
    if (!requests) return 'idle';
    const failed = (requests - successes) / requests;
    if (failed > FAILING_OVER) return 'failing';
    if (failed >= DEGRADED_AT) return 'degraded';
    return 'healthy';
  }

  const HEALTH_TEXT = { healthy: 'Healthy', degraded: 'Degraded', failing: 'Failing', idle: 'No traffic' };

  const healthCell = (state) => h('td', {}, h('span', { class: `health health-${state}` }, HEALTH_TEXT[state]));
  const rps = (v) => (v >= 10 ? v.toFixed(1) : v.toFixed(2));
  const percent = (rate) => (rate === undefined || rate === null ? '-' : `${(rate * 100).toFixed(2)}%`);
  const ms = (v) => (v === undefined || v === null ? '-' : `${v} ms`);
  const num = (text) => h('td', { class: 'num' }, text);
  const when = (iso) => {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
  };

  /** "in 23 h 5 min" / "expired 3 min ago". */
  function relative(iso) {
    const left = new Date(iso).getTime() - Date.now();
    if (Number.isNaN(left)) return iso;
    const minutes = Math.round(Math.abs(left) / 60000);
    const span = minutes >= 2880 ? `${Math.round(minutes / 1440)} days`
      : minutes >= 60 ? `${Math.floor(minutes / 60)} h ${minutes % 60} min` : `${minutes} min`;
    return left >= 0 ? `in ${span}` : `expired ${span} ago`;
  }

  function fillTable(table, rows, emptyText) {
    const body = table.tBodies[0];
    if (!rows.length) {
      const columns = table.tHead.rows[0].cells.length;
      body.replaceChildren(h('tr', {}, h('td', { colspan: columns, class: 'empty' }, emptyText)));
    } else {
      body.replaceChildren(...rows);
    }
  }

  // ---- services, edges, graph --------------------------------------------------------------

  function renderServices(list) {
    const rows = list.items;
    const showBreakers = rows.some((r) => r.breakersOpen !== undefined);
    $('breakers-col').hidden = !showBreakers;
    fillTable($('services-table'), rows.map((r) => {
      const state = health(r.requests, r.successes);
      const meshed = r.meshed ? `${r.meshed.current}/${r.meshed.total}` : '-';
      const breakers = r.breakersOpen || 0;
      return h('tr', { 'data-service': r.service },
        h('th', { scope: 'row' }, r.service),
        healthCell(state),
        h('td', {}, meshed),
        num(percent(r.successRate)),
        num(rps(r.rps)),
        num(ms(r.p50Ms)), num(ms(r.p95Ms)), num(ms(r.p99Ms)),
        num(String(r.tcpOpen)),
        showBreakers ? h('td', { class: breakers ? 'num bad' : 'num' }, String(breakers)) : null);
    }), 'No service has reported traffic in this window.');
  }

  const display = (name) => name || '(outside the mesh)';

  function renderEdges(list) {
    fillTable($('edges-table'), list.items.map((e) => {
      const state = health(e.requests, e.successes);
      return h('tr', { 'data-edge': `${e.src}>${e.dst}` },
        h('td', {}, display(e.src)),
        h('td', {}, display(e.dst)),
        healthCell(state),
        h('td', {}, e.secured ? 'yes' : 'no'),
        h('td', {}, e.srcIdentity || '-'),
        h('td', {}, e.dstIdentity || '-'),
        num(rps(e.rps)),
        num(percent(e.successRate)),
        num(ms(e.p99Ms)));
    }), 'No calls between services in this window.');
  }

  /** The graph's edges: rows of the same source and destination (different identities or
   *  mTLS) merged into one. */
  function graphEdges(rows) {
    const merged = new Map();
    for (const r of rows) {
      const key = `${r.src}>${r.dst}`;
      const m = merged.get(key) || { src: r.src, dst: r.dst, requests: 0, successes: 0, rps: 0, p99Ms: undefined, secured: true };
      m.requests += r.requests;
      m.successes += r.successes;
      m.rps += r.rps;
      if (r.p99Ms !== undefined) m.p99Ms = Math.max(m.p99Ms || 0, r.p99Ms);
      m.secured = m.secured && Boolean(r.secured);
      merged.set(key, m);
    }
    return [...merged.values()];
  }

  /** Layers for a left-to-right drawing: back edges (found by a depth-first search from the
   *  nodes nobody calls) are set aside, then each node goes one layer past its furthest caller. */
  function layout(names, edges) {
    const out = new Map(names.map((n) => [n, []]));
    const incoming = new Map(names.map((n) => [n, 0]));
    for (const e of edges) {
      if (e.src === e.dst) continue;
      out.get(e.src).push(e.dst);
      incoming.set(e.dst, incoming.get(e.dst) + 1);
    }
    const state = new Map();
    const back = new Set();
    const finished = [];
    const visit = (n) => {
      state.set(n, 'open');
      for (const m of out.get(n)) {
        if (state.get(m) === 'open') back.add(`${n}>${m}`);
        else if (!state.has(m)) visit(m);
      }
      state.set(n, 'done');
      finished.push(n);
    };
    const starts = [...names].sort((a, b) => incoming.get(a) - incoming.get(b) || a.localeCompare(b));
    for (const n of starts) if (!state.has(n)) visit(n);
    const layer = new Map(names.map((n) => [n, 0]));
    for (const n of finished.reverse()) {
      for (const m of out.get(n)) {
        if (!back.has(`${n}>${m}`)) layer.set(m, Math.max(layer.get(m), layer.get(n) + 1));
      }
    }
    // Within a layer: by the mean position of the callers (fewer crossings), then by name.
    const columns = [];
    for (const n of names) (columns[layer.get(n)] ||= []).push(n);
    const row = new Map();
    columns.forEach((column, i) => {
      const key = (n) => {
        const callers = edges.filter((e) => e.dst === n && layer.get(e.src) < i).map((e) => row.get(e.src));
        return callers.length ? callers.reduce((a, b) => a + b, 0) / callers.length : -1;
      };
      const keys = new Map(column.map((n) => [n, key(n)]));
      column.sort((a, b) => keys.get(a) - keys.get(b) || a.localeCompare(b));
      column.forEach((n, j) => row.set(n, j));
    });
    return { layer, row, columns, back };
  }

  const NODE_W = 170;
  const NODE_H = 48;
  const COLUMN_W = 440;
  const ROW_H = 110;
  const MARGIN = 30;

  function padlock(x, y) {
    return s('g', { class: 'lock', transform: `translate(${x} ${y})`, 'aria-hidden': 'true' },
      s('rect', { x: 0, y: 5, width: 10, height: 8, rx: 1.5 }),
      s('path', { d: 'M2.5 5.5V3.5a2.5 2.5 0 0 1 5 0v2', fill: 'none', stroke: 'currentColor', 'stroke-width': 1.6 }));
  }

  function arrowhead(tip, from) {
    const angle = Math.atan2(tip.y - from.y, tip.x - from.x);
    const point = (da, len) => `${tip.x - len * Math.cos(angle + da)},${tip.y - len * Math.sin(angle + da)}`;
    return s('polygon', { class: 'arrow', points: `${tip.x},${tip.y} ${point(0.45, 11)} ${point(-0.45, 11)}` });
  }

  function renderGraph(services, edgeRows) {
    const frame = $('graph-frame');
    const edges = graphEdges(edgeRows);
    const names = [...new Set([...services.map((r) => r.service), ...edges.flatMap((e) => [e.src, e.dst])])].sort();
    if (!names.length) {
      frame.replaceChildren(h('p', { class: 'empty muted' }, 'No traffic in this window yet: send requests through a sidecar.'));
      return;
    }
    const { layer, row, columns, back } = layout(names, edges);
    const tallest = Math.max(...columns.map((c) => c.length));
    const width = MARGIN * 2 + (columns.length - 1) * COLUMN_W + NODE_W;
    const height = MARGIN * 2 + (tallest - 1) * ROW_H + NODE_H + (back.size ? 50 : 0);
    const at = (n) => ({ x: MARGIN + layer.get(n) * COLUMN_W, y: MARGIN + row.get(n) * ROW_H });
    const byService = new Map(services.map((r) => [r.service, r]));

    const graph = s('svg', {
      width, height, viewBox: `0 0 ${width} ${height}`, role: 'group',
      'aria-labelledby': 'topology-title', 'aria-describedby': 'topology-help', id: 'graph',
    });
    const edgeLayer = s('g', { class: 'edges' });
    const nodeLayer = s('g', { class: 'nodes' });
    const labelLayer = s('g', { class: 'labels' });

    for (const n of names) {
      const { x, y } = at(n);
      const r = byService.get(n);
      const state = r ? health(r.requests, r.successes) : 'idle';
      const [name, namespace] = n ? [n.split('.')[0], n.split('.').slice(1).join('.')] : ['(outside the mesh)', ''];
      const detail = r && r.requests ? `${rps(r.rps)} rps, ${percent(r.successRate)} success` : 'no requests in';
      const label = `Service ${display(n)}: ${HEALTH_TEXT[state].toLowerCase()}, ${detail}`;
      nodeLayer.append(s('g', {
        class: `node health-${state}`, 'data-service': n, tabindex: 0, role: 'img', 'aria-label': label,
      },
      s('title', {}, label),
      s('rect', { x, y, width: NODE_W, height: NODE_H, rx: 8 }),
      s('text', { x: x + 12, y: y + 20 }, name),
      s('text', { x: x + 12, y: y + 38, class: 'sub' }, state === 'idle' ? namespace : `${namespace} · ${HEALTH_TEXT[state].toLowerCase()}`)));
    }

    for (const e of edges) {
      const a = at(e.src);
      const b = at(e.dst);
      const state = health(e.requests, e.successes);
      let path;
      let mid;
      let tip;
      let before;
      if (e.src === e.dst) {
        const x = a.x + NODE_W - 30;
        path = `M${x} ${a.y} C${x - 10} ${a.y - 45} ${x + 50} ${a.y - 45} ${x + 30} ${a.y}`;
        tip = { x: x + 30, y: a.y };
        before = { x: x + 40, y: a.y - 20 };
        mid = { x: x + 15, y: a.y - 38 };
      } else if (back.has(`${e.src}>${e.dst}`) || layer.get(e.dst) <= layer.get(e.src)) {
        // Against the flow: under the nodes, from the caller's bottom to the callee's.
        const p0 = { x: a.x + NODE_W / 2, y: a.y + NODE_H };
        const p3 = { x: b.x + NODE_W / 2 + 12, y: b.y + NODE_H + 2 };
        const low = Math.max(a.y, b.y) + NODE_H + 60;
        const c1 = { x: p0.x, y: low };
        const c2 = { x: p3.x, y: low };
        path = `M${p0.x} ${p0.y} C${c1.x} ${c1.y} ${c2.x} ${c2.y} ${p3.x} ${p3.y}`;
        tip = p3;
        before = c2;
        mid = { x: (p0.x + 3 * c1.x + 3 * c2.x + p3.x) / 8, y: (p0.y + 3 * c1.y + 3 * c2.y + p3.y) / 8 };
      } else {
        const p0 = { x: a.x + NODE_W, y: a.y + NODE_H / 2 };
        const p3 = { x: b.x - 2, y: b.y + NODE_H / 2 };
        const bend = (p3.x - p0.x) / 2;
        const c1 = { x: p0.x + bend, y: p0.y };
        const c2 = { x: p3.x - bend, y: p3.y };
        path = `M${p0.x} ${p0.y} C${c1.x} ${c1.y} ${c2.x} ${c2.y} ${p3.x} ${p3.y}`;
        tip = p3;
        before = c2;
        mid = { x: (p0.x + 3 * c1.x + 3 * c2.x + p3.x) / 8, y: (p0.y + 3 * c1.y + 3 * c2.y + p3.y) / 8 };
      }
      const success = e.requests ? percent(e.successes / e.requests) : '-';
      const text = e.requests ? `${rps(e.rps)} rps · ${success} · p99 ${ms(e.p99Ms)}` : 'no requests';
      const label = `${display(e.src)} calls ${display(e.dst)}: ${HEALTH_TEXT[state].toLowerCase()}, `
        + `${rps(e.rps)} requests per second, ${success} success, p99 ${ms(e.p99Ms)}, `
        + `${e.secured ? 'mTLS' : 'not mTLS'}`;
      edgeLayer.append(s('g', { class: `edge health-${state}`, 'data-edge': `${e.src}>${e.dst}`, 'aria-hidden': 'true' },
        s('path', { class: 'line', d: path }),
        arrowhead(tip, before)));
      // The label: just above the line's middle, its letters haloed in white so the line stays
      // visible between them, the padlock first; focusable, and read out as one sentence.
      const textWidth = text.length * 6.6 + (e.secured ? 16 : 0) + 12;
      const x = mid.x - textWidth / 2;
      const y = mid.y - 22;
      labelLayer.append(s('g', {
        class: `edge edge-label health-${state}`, 'data-edge': `${e.src}>${e.dst}`, tabindex: 0, role: 'img', 'aria-label': label,
      },
      s('title', {}, label),
      s('rect', { class: 'label-ground', x, y, width: textWidth, height: 20, rx: 4 }),
      e.secured ? padlock(x + 6, y + 3) : null,
      s('text', { x: x + (e.secured ? 22 : 6), y: y + 14 }, text)));
    }
    graph.append(edgeLayer, nodeLayer, labelLayer);
    frame.replaceChildren(graph);
  }

  // ---- proxies ------------------------------------------------------------------------------

  function renderProxies(list) {
    $('proxies-version').textContent = `Configuration version in force: ${list.version}.`;
    fillTable($('proxies-table'), list.items.map((p) => {
      const config = p.current
        ? h('td', { class: 'ok' }, `current (version ${p.ackedVersion})`)
        : h('td', { class: 'bad' }, `stale: acknowledged ${p.ackedVersion}, sent ${p.sentVersion}`);
      const connected = p.connected ? 'yes' : `no, since ${when(p.disconnectedAt)}`;
      let certificate = h('td', { class: 'muted' }, 'none reported');
      if (p.certificate) {
        const cell = [h('span', { title: p.certificate.identity }, `${relative(p.certificate.notAfter)} (${when(p.certificate.notAfter)})`)];
        if (p.certificateWarning) cell.push(h('br'), h('span', { class: 'bad' }, p.certificateWarning));
        certificate = h('td', {}, cell);
      }
      const nack = p.lastNack ? h('td', { class: 'bad' }, `version ${p.lastNack.version}: ${p.lastNack.error}`) : h('td', {}, '-');
      return h('tr', { 'data-proxy': p.id },
        h('th', { scope: 'row' }, p.id),
        h('td', {}, `${p.service}.${p.namespace}`),
        h('td', {}, connected),
        config, certificate, nack);
    }), 'No proxy has connected.');
  }

  // ---- rollouts -----------------------------------------------------------------------------

  function renderRollouts(list) {
    const body = $('rollouts-body');
    const items = list.items;
    if (!items.length) {
      body.replaceChildren(h('p', { class: 'muted' }, 'No rollouts.'));
      return;
    }
    const rows = items.map((r) => {
      const verdict = (r.verdicts || [])[0];
      const bad = r.phase === 'Aborted' || r.phase === 'RollingBack';
      return h('tr', { 'data-rollout': `${r.namespace}/${r.name}` },
        h('th', { scope: 'row' }, `${r.namespace}/${r.name}`),
        h('td', { class: bad ? 'bad' : '' }, r.phase),
        h('td', {}, `${Math.min(r.step + 1, r.steps)} of ${r.steps}`),
        h('td', {},
          `${r.stable} ${r.stableWeight}% · ${r.canary} ${r.canaryWeight}% `,
          h('meter', { min: 0, max: 100, value: r.canaryWeight, 'aria-label': `${r.canary}'s weight` })),
        h('td', { class: r.failures ? 'bad' : '' }, r.failureLimit ? `${r.failures} of ${r.failureLimit}` : String(r.failures || 0)),
        h('td', {}, verdict
          ? `${verdict.result}: ${verdict.requests} requests`
            + (verdict.requests ? `, ${percent(verdict.successRate)} success, p99 ${ms(verdict.p99Ms)}` : '')
            + (verdict.reason && verdict.reason !== r.message ? ` (${verdict.reason})` : '')
          : '-'),
        h('td', {}, r.message || '-'));
    });
    const table = h('table', { id: 'rollouts-table' },
      h('caption', { class: 'visually-hidden' }, 'Progressive deliveries and their latest verdicts'),
      h('thead', {}, h('tr', {}, ['Rollout', 'Phase', 'Step', 'Weights', 'Failed intervals', 'Latest verdict', 'Message'].map((c) => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows));
    body.replaceChildren(h('div', { class: 'scroll' }, table));
  }

  // ---- configuration events and their diffs ------------------------------------------------

  /** What changed the mesh's configuration: resources, rollout steps, the CA's roots; not
   *  registrations, tokens or a rollout's every verdict. */
  const isConfiguration = (e) => !/^(Endpoint|Token)/.test(e.kind) && e.kind !== 'RolloutVerdict';

  let head = 0;

  /** The latest configuration events, newest first, from the last EVENTS_SCANNED of the log. */
  async function latestEvents() {
    let since = Math.max(0, head - EVENTS_SCANNED);
    let page = await api(`/v1/events?since=${since}&limit=${EVENTS_SCANNED}`);
    if (page.head > since + EVENTS_SCANNED) {
      since = page.head - EVENTS_SCANNED;
      page = await api(`/v1/events?since=${since}&limit=${EVENTS_SCANNED}`);
    }
    head = page.head;
    return page.events.filter(isConfiguration).slice(-EVENTS_SHOWN).reverse();
  }

  function renderEvents(events) {
    fillTable($('events-table'), events.map((e) => h('tr', { 'data-seq': e.seq },
      num(String(e.seq)),
      h('td', {}, when(e.at)),
      h('td', {}, e.kind),
      h('th', { scope: 'row' }, e.aggregate),
      h('td', {}, e.actor),
      h('td', {}, h('a', { href: `#diff-${e.seq}`, 'aria-label': `Diff of event ${e.seq}, ${e.aggregate}` }, 'diff')))),
    'No configuration applied yet.');
  }

  const pretty = (doc) => (doc === null || doc === undefined ? [] : JSON.stringify(doc, null, 2).split('\n'));

  /** Lines of a line diff (longest common subsequence): [' ' | '+' | '-', text]. */
  function lineDiff(a, b) {
    const n = a.length;
    const m = b.length;
    const common = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        common[i][j] = a[i] === b[j] ? common[i + 1][j + 1] + 1 : Math.max(common[i + 1][j], common[i][j + 1]);
      }
    }
    const lines = [];
    let i = 0;
    let j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && a[i] === b[j]) {
        lines.push([' ', a[i++]]);
        j++;
      } else if (i < n && (j === m || common[i + 1][j] >= common[i][j + 1])) {
        lines.push(['-', a[i++]]);
      } else {
        lines.push(['+', b[j++]]);
      }
    }
    return lines;
  }

  function diffBlock(change) {
    const before = pretty(change.before);
    const after = pretty(change.after);
    const lines = before.length > DIFF_MAX_LINES || after.length > DIFF_MAX_LINES
      ? [...before.map((l) => ['-', l]), ...after.map((l) => ['+', l])]
      : lineDiff(before, after);
    const what = change.before === null || change.before === undefined ? 'added'
      : change.after === null || change.after === undefined ? 'deleted' : 'changed';
    const kinds = { ' ': 'same', '+': 'add', '-': 'del' };
    return [
      h('h4', {}, `${change.aggregate} (${what})`),
      h('div', { class: 'diff', role: 'region', 'aria-label': `${change.aggregate}, ${what}`, tabindex: 0 },
        lines.map(([mark, text]) => h('span', { class: kinds[mark] }, `${mark} ${text}`))),
    ];
  }

  async function showDiff(seq) {
    const section = $('diff');
    $('diff-title').textContent = `What event ${seq} changed`;
    section.hidden = false;
    try {
      const diff = await api(`/v1/diff?from=${seq - 1}&to=${seq}`);
      $('diff-body').replaceChildren(...(diff.changes.length
        ? diff.changes.flatMap(diffBlock)
        : [h('p', { class: 'muted' }, 'No configuration change at this event.')]));
    } catch (e) {
      $('diff-body').replaceChildren(h('p', { class: 'bad' }, e.message));
    }
    section.focus();
  }

  function onHash() {
    if (takeTokenFromUrl()) {
      showDashboard();
      return;
    }
    const diff = /^#diff-(\d+)$/.exec(location.hash);
    if (diff && token()) showDiff(Number(diff[1]));
    else $('diff').hidden = true;
  }

  // ---- overview and the refresh loop ---------------------------------------------------------

  function renderCards(data) {
    const cards = [];
    const card = (label, value, warn) => cards.push(h('li', { class: warn ? 'warn' : '' }, h('span', { class: 'value' }, value), label));
    if (data.services) {
      card('services', String(data.services.items.length));
      card('requests per second', rps(data.services.items.reduce((sum, r) => sum + r.rps, 0)));
      if (data.services.items.some((r) => r.breakersOpen !== undefined)) {
        const open = data.services.items.reduce((sum, r) => sum + (r.breakersOpen || 0), 0);
        card('circuit breakers open', String(open), open > 0);
      }
    }
    if (data.edges) {
      const failing = graphEdges(data.edges.items).filter((e) => health(e.requests, e.successes) === 'failing').length;
      card('failing edges', String(failing), failing > 0);
    }
    if (data.proxies) {
      const current = data.proxies.items.filter((p) => p.current).length;
      card('proxies current', `${current}/${data.proxies.items.length}`, current < data.proxies.items.length);
    }
    $('cards').replaceChildren(...cards);
  }

  let timer = null;
  let running = false;

  /** A selector for the focused graph node, edge or diff link, which a refresh redraws: focus
   *  returns to its new self, so a keyboard user is not thrown back to the top every 5 s. */
  function focusedKey() {
    const active = document.activeElement;
    if (!active || !active.matches) return null;
    if (active.matches('g.node')) return `g.node[data-service="${CSS.escape(active.dataset.service)}"]`;
    if (active.matches('g.edge-label')) return `g.edge-label[data-edge="${CSS.escape(active.dataset.edge)}"]`;
    if (active.matches('#events-table a')) return `#events-table a[href="${CSS.escape(active.getAttribute('href'))}"]`;
    return null;
  }

  async function refresh() {
    const span = $('window').value;
    const [services, edges, proxies, events, rollouts] = await Promise.allSettled([
      api(`/v1/stats?window=${span}&by=service`),
      api(`/v1/stats?window=${span}&by=edge`),
      api('/v1/proxies'),
      latestEvents(),
      api('/v1/rollouts'),
    ]);
    const all = [services, edges, proxies, events, rollouts];
    const refused = all.find((r) => r.status === 'rejected' && r.reason instanceof Refused);
    if (refused) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin(refused.reason.message);
      return false;
    }
    const value = (r) => (r.status === 'fulfilled' ? r.value : undefined);
    const focused = focusedKey();
    if (services.status === 'fulfilled') renderServices(services.value);
    if (edges.status === 'fulfilled') renderEdges(edges.value);
    if (services.status === 'fulfilled' && edges.status === 'fulfilled') {
      renderGraph(services.value.items, edges.value.items);
    }
    if (proxies.status === 'fulfilled') renderProxies(proxies.value);
    if (events.status === 'fulfilled') renderEvents(events.value);
    if (rollouts.status === 'fulfilled') renderRollouts(rollouts.value);
    renderCards({ services: value(services), edges: value(edges), proxies: value(proxies) });
    const refocus = focused && document.querySelector(focused);
    if (refocus && refocus !== document.activeElement) refocus.focus({ preventScroll: true });
    const failed = all.filter((r) => r.status === 'rejected').map((r) => r.reason.message);
    problem(failed.length ? `Some data could not be read (retrying every ${REFRESH_MS / 1000} s): ${failed.join('; ')}` : '');
    $('updated').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = 'true';
    return true;
  }

  async function refreshNow() {
    clearTimeout(timer);
    if (running) return;
    // A hidden tab asks nothing; it refreshes when shown again.
    if (document.hidden) return;
    running = true;
    let again = false;
    try {
      again = await refresh();
    } catch (e) {
      problem(`Cannot reach the control plane (retrying every ${REFRESH_MS / 1000} s): ${e.message}`);
      again = true;
    } finally {
      running = false;
    }
    if (again && token()) timer = setTimeout(refreshNow, REFRESH_MS);
  }

  function problem(text) {
    const p = $('problem');
    p.textContent = text;
    p.hidden = !text;
  }

  function showLogin(message) {
    clearTimeout(timer);
    for (const id of ['content', 'nav', 'controls']) $(id).hidden = true;
    $('login').hidden = false;
    problem(message || '');
    $('token').focus();
  }

  function showDashboard() {
    $('login').hidden = true;
    for (const id of ['content', 'nav', 'controls']) $(id).hidden = false;
    problem('');
    refreshNow();
    onHashDiffOnly();
  }

  function onHashDiffOnly() {
    const diff = /^#diff-(\d+)$/.exec(location.hash);
    if (diff) showDiff(Number(diff[1]));
  }

  function start() {
    takeTokenFromUrl();
    window.addEventListener('hashchange', onHash);
    $('login-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const given = $('token').value.trim();
      if (!given) return;
      sessionStorage.setItem(TOKEN_KEY, given);
      $('token').value = '';
      showDashboard();
    });
    $('forget').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin('The token is forgotten in this tab.');
    });
    $('window').addEventListener('change', refreshNow);
    document.addEventListener('visibilitychange', () => {
      if (!document.hidden && token() && $('login').hidden) refreshNow();
    });
    if (token()) showDashboard();
    else showLogin();
  }

  start();
})();
