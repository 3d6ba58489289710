import {
  curlLine,
  filterBundles,
  humanBytes,
  humanCount,
  humanMetric,
  loadLine,
  parentLabel,
  shellQuote,
  sortVersions,
  variableProblem,
  versionCount
} from '../format';
import { IBundle, IVersion } from '../types';

function version(ref: string, extra: Partial<IVersion> = {}): IVersion {
  const [name, tag] = ref.split(':');
  return {
    ref,
    name,
    version: Number(tag),
    digest: `sha256:${tag.padStart(64, '0')}`,
    tags: [tag],
    created: `2026-01-0${tag}T00:00:00Z`,
    size: 1000,
    parameters: 10,
    precision: 'float32',
    quantization: '',
    architecture: 'models:MLP (class)',
    description: '',
    metrics: {},
    op: 'pack',
    parent: null,
    badges: [],
    encrypted: false,
    var_name: name.replace(/-/g, '_'),
    published: [],
    serving: null,
    remote: null,
    ...extra
  };
}

const BUNDLES: IBundle[] = [
  {
    name: 'mnist-mlp',
    latest: 'mnist-mlp:3',
    description: 'digits',
    versions: [
      version('mnist-mlp:3', { badges: ['compressed', 'signed'], precision: 'int8' }),
      version('mnist-mlp:2', { badges: ['compressed'] }),
      version('mnist-mlp:1', { tags: ['1', 'prod'], published: ['team/mnist-mlp:1'] })
    ]
  },
  { name: 'resnet', latest: 'resnet:1', description: 'images', versions: [version('resnet:1')] }
];

describe('filterBundles', () => {
  it('keeps everything for an empty query', () => {
    expect(filterBundles(BUNDLES, '  ')).toBe(BUNDLES);
    expect(versionCount(BUNDLES)).toBe(4);
  });

  it('narrows a badge word to the versions that carry it, and the count follows', () => {
    const shown = filterBundles(BUNDLES, 'compressed');
    expect(shown.map(b => b.name)).toEqual(['mnist-mlp']);
    expect(shown[0].versions.map(v => v.ref)).toEqual(['mnist-mlp:3', 'mnist-mlp:2']);
    expect(versionCount(shown)).toBe(2);
  });

  it('needs every word, each from the bundle or the version', () => {
    expect(versionCount(filterBundles(BUNDLES, 'digits signed'))).toBe(1);
    expect(versionCount(filterBundles(BUNDLES, 'DIGITS prod'))).toBe(1);
    expect(filterBundles(BUNDLES, 'images signed')).toEqual([]);
    expect(versionCount(filterBundles(BUNDLES, 'published team/'))).toBe(1);
  });

  it('keeps all versions when the name matches', () => {
    expect(versionCount(filterBundles(BUNDLES, 'mnist'))).toBe(3);
  });
});

describe('sortVersions', () => {
  it('puts the newest version first and unnumbered ones last', () => {
    const vs = [version('m:1'), version('m:3'), version('m:2', { version: null })];
    expect(sortVersions(vs).map(v => v.ref)).toEqual(['m:3', 'm:1', 'm:2']);
  });
});

describe('formatting', () => {
  it('writes sizes in powers of 1000 as the CLI does', () => {
    expect(humanBytes(999)).toBe('999 B');
    expect(humanBytes(950_000)).toBe('950.0 kB');
    expect(humanBytes(1_234_567)).toBe('1.2 MB');
  });

  it('groups thousands in counts', () => {
    expect(humanCount(242762)).toBe('242,762');
    expect(humanCount(12)).toBe('12');
  });

  it('shows whole metrics without decimals and others with three digits', () => {
    expect(humanMetric(2)).toBe('2');
    expect(humanMetric(2.0)).toBe('2');
    expect(humanMetric(0.98123)).toBe('0.981');
    expect(humanMetric('n/a')).toBe('n/a');
  });

  it('names a parent by name:version when known, else by a short digest', () => {
    const d = `sha256:${'a'.repeat(64)}`;
    expect(parentLabel(d, new Map([[d, 'm:1']]))).toBe('m:1');
    expect(parentLabel(d, new Map(), 'm:7')).toBe('m:7');
    expect(parentLabel(d, new Map())).toBe(`sha256:${'a'.repeat(12)}…`);
  });
});

describe('variable names and inserted lines', () => {
  it('accepts identifiers and refuses keywords and non-names', () => {
    expect(variableProblem('mnist_mlp')).toBe('');
    expect(variableProblem('class')).toMatch(/keyword/);
    expect(variableProblem('1net')).toMatch(/not a Python name/);
    expect(variableProblem('my-net')).toMatch(/not a Python name/);
  });

  it('writes the load line with a quoted key file', () => {
    expect(loadLine('m:1', 'm')).toBe('%modelpack load m:1 as m');
    expect(loadLine('m:2', 'net', 'keys/me.txt')).toBe(
      '%modelpack load m:2 as net --identity keys/me.txt'
    );
    expect(loadLine('m:2', 'net', 'my key.txt')).toBe(
      "%modelpack load m:2 as net --identity 'my key.txt'"
    );
    expect(loadLine('m:2', 'net', 'ignored', true)).toBe('%modelpack load m:2 as net --passphrase');
    expect(shellQuote("it's")).toBe(`'it'"'"'s'`);
  });

  it('gives a curl line for a served model', () => {
    expect(curlLine('http://127.0.0.1:4000/')).toBe('curl -s http://127.0.0.1:4000/v2');
  });
});
