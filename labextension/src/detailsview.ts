/**
 * The DOM of the Details tab of one version: facts, metrics, lineage, how to load
 * it, its layers, and the model card as written. Everything from the bundle is set
 * as text (never parsed as Markdown or HTML), so `__main__.Net` shows as written.
 * No JupyterLab imports: unit-tested with Jest in jsdom.
 */
import { humanBytes, humanCount, humanMetric, parentLabel } from './format';
import { IDetail } from './types';

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text = '',
  className = ''
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text) {
    node.textContent = text;
  }
  if (className) {
    node.className = className;
  }
  return node;
}

/** A two-column table of label / value rows (no header row: the labels say what each is). */
function factsTable(rows: [string, string | HTMLElement][], className: string): HTMLTableElement {
  const table = el('table', '', className);
  const body = el('tbody');
  for (const [label, value] of rows) {
    const row = el('tr');
    const cell = el('td');
    cell.append(value);
    row.append(el('th', label), cell);
    body.appendChild(row);
  }
  table.appendChild(body);
  return table;
}

function code(text: string): HTMLElement {
  return el('code', text);
}

/** One lineage step as a line: `compress quantize=fp16 ← mnist-mlp:1`. */
function stepLine(step: Record<string, unknown>, names: Map<string, string>): string {
  const params = (step['params'] ?? {}) as Record<string, unknown>;
  const shown = Object.entries(params)
    .filter(([, v]) => v !== null && v !== false && v !== 0)
    .map(([k, v]) => `${k}=${typeof v === 'object' ? JSON.stringify(v) : String(v)}`);
  const parent = typeof step['parent'] === 'string' ? step['parent'] : '';
  const from = parent
    ? ` ← ${parentLabel(parent, names, step['parent_ref'] as string | null)}`
    : '';
  return [String(step['op'] ?? 'pack'), ...shown].join(' ') + from;
}

/** The DOM of the Details tab (exported for reuse; no JupyterLab state). */
export function detailsNode(d: IDetail['detail'], names: Map<string, string>): HTMLElement {
  const root = el('div');
  const head = el('div', '', 'jp-ModelPack-detailsHead');
  head.appendChild(el('h2', d.ref));
  for (const badge of d.badges) {
    head.appendChild(
      el('span', badge, `jp-ModelPack-chip jp-ModelPack-badge jp-ModelPack-badge-${badge}`)
    );
  }
  head.appendChild(el('code', d.digest, 'jp-ModelPack-digest'));
  root.appendChild(head);

  const card = el('div', '', 'jp-ModelPack-card');
  if (d.description) {
    card.appendChild(el('p', d.description, 'jp-ModelPack-detailsDescription'));
  }
  const facts: [string, string | HTMLElement][] = [
    ['Architecture', code(d.architecture || '—')],
    ['Parameters', d.parameters ? humanCount(d.parameters) : '—'],
    ['Precision', d.quantization ? `${d.precision} (${d.quantization})` : d.precision || '—'],
    ['Size', humanBytes(d.size)],
    ['Tags', d.tags.join(', ')],
    ['Created', d.created ?? '']
  ];
  if (d.published.length) {
    facts.push(['Published', d.published.join(', ')]);
  }
  if (d.serving) {
    facts.push(['Serving', d.serving]);
  }
  card.appendChild(factsTable(facts, 'jp-ModelPack-facts'));

  const metrics = Object.entries(d.metrics ?? {});
  if (metrics.length) {
    card.appendChild(el('h3', 'Metrics'));
    card.appendChild(
      factsTable(
        metrics.map(([k, v]) => [k, humanMetric(v)]),
        'jp-ModelPack-metrics'
      )
    );
  }

  card.appendChild(el('h3', 'Lineage'));
  const lineage = el('ol', '', 'jp-ModelPack-lineage');
  for (const step of d.lineage) {
    lineage.appendChild(el('li', stepLine(step, names)));
  }
  card.appendChild(lineage);

  card.appendChild(el('h3', 'Load'));
  card.appendChild(el('pre', `%modelpack load ${d.ref} as ${d.var_name}`, 'jp-ModelPack-snippet'));
  if (d.encrypted) {
    card.appendChild(
      el(
        'p',
        'Encrypted: add --identity FILE (or --passphrase) unless its key is in $NBMODELPACK_HOME/keys.',
        'jp-ModelPack-dim'
      )
    );
  }

  card.appendChild(el('h3', 'Layers'));
  const table = el('table', '', 'jp-ModelPack-layers');
  const thead = el('thead');
  const headRow = el('tr');
  for (const label of ['file', 'media type', 'size']) {
    headRow.appendChild(el('th', label));
  }
  thead.appendChild(headRow);
  const tbody = el('tbody');
  for (const layer of d.layers) {
    const row = el('tr');
    for (const text of [layer.filepath, layer.mediaType, humanBytes(layer.size)]) {
      row.appendChild(el('td', text));
    }
    tbody.appendChild(row);
  }
  table.append(thead, tbody);
  card.appendChild(table);

  // The card as stored (README.md), literally: it may be hand-written, and it is the bundle's text.
  const source = el('details', '', 'jp-ModelPack-cardSource');
  source.append(el('summary', 'Model card (README.md)'), el('pre', d.card));
  card.appendChild(source);
  root.appendChild(card);
  return root;
}
