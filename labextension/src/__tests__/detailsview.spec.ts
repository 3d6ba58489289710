/**
 * @jest-environment jsdom
 */
import { detailsNode } from '../detailsview';
import { IDetail } from '../types';

const PARENT = `sha256:${'a'.repeat(64)}`;

function detail(extra: Partial<IDetail['detail']> = {}): IDetail['detail'] {
  return {
    ref: 'net:2',
    name: 'net',
    version: 2,
    digest: `sha256:${'b'.repeat(64)}`,
    tags: ['2', 'latest'],
    created: '2026-01-02T00:00:00Z',
    size: 950_000,
    parameters: 242762,
    precision: 'float16',
    quantization: '',
    architecture: '__main__.Net (export)',
    description: 'a **bold** claim <b>not html</b>',
    metrics: { epochs: 2, accuracy: 0.98123 },
    op: 'compress',
    parent: PARENT,
    badges: ['compressed'],
    encrypted: false,
    var_name: 'net',
    published: [],
    serving: null,
    remote: null,
    card: '# net\n\n__main__ stays literal',
    recipe: {},
    lineage: [
      { op: 'pack', parent: null, params: {} },
      { op: 'compress', parent: PARENT, params: { quantize: 'fp16', prune: 0 } }
    ],
    layers: [{ filepath: 'model.safetensors', mediaType: 'x', digest: 'd', size: 1234 }],
    ...extra
  };
}

function rows(node: HTMLElement, selector: string): Record<string, string> {
  const out: Record<string, string> = {};
  node.querySelectorAll(`${selector} tr`).forEach(tr => {
    out[tr.querySelector('th')!.textContent!] = tr.querySelector('td')!.textContent!;
  });
  return out;
}

describe('detailsNode', () => {
  it('shows what the bundle says literally, never as Markdown or HTML', () => {
    const node = detailsNode(detail(), new Map());
    expect(rows(node, '.jp-ModelPack-facts')['Architecture']).toBe('__main__.Net (export)');
    expect(node.querySelector('.jp-ModelPack-detailsDescription')!.textContent).toBe(
      'a **bold** claim <b>not html</b>'
    );
    expect(node.querySelector('b, strong')).toBeNull();
    expect(node.querySelector('.jp-ModelPack-cardSource pre')!.textContent).toContain(
      '__main__ stays literal'
    );
  });

  it('writes numbers for people and has no empty header row', () => {
    const node = detailsNode(detail(), new Map());
    const facts = rows(node, '.jp-ModelPack-facts');
    expect(facts['Parameters']).toBe('242,762');
    expect(facts['Size']).toBe('950.0 kB');
    expect(rows(node, '.jp-ModelPack-metrics')).toEqual({ epochs: '2', accuracy: '0.981' });
    expect(node.querySelector('.jp-ModelPack-facts thead')).toBeNull();
    node.querySelectorAll('th').forEach(th => expect(th.textContent).not.toBe(''));
  });

  it('has one lineage, with parents by name:version when the store knows them', () => {
    const known = detailsNode(detail(), new Map([[PARENT, 'net:1']]));
    const headings = Array.from(known.querySelectorAll('h3')).map(h => h.textContent);
    expect(headings.filter(h => h === 'Lineage')).toHaveLength(1);
    expect(headings).not.toContain('Recipe');
    const steps = Array.from(known.querySelectorAll('.jp-ModelPack-lineage li')).map(
      li => li.textContent
    );
    expect(steps).toEqual(['pack', 'compress quantize=fp16 ← net:1']);
    const unknown = detailsNode(detail(), new Map());
    expect(unknown.querySelector('.jp-ModelPack-lineage li:last-child')!.textContent).toBe(
      `compress quantize=fp16 ← sha256:${'a'.repeat(12)}…`
    );
  });
});
