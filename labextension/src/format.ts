/**
 * Pure functions of the sidebar (no DOM, no JupyterLab): filtering, sorting,
 * number formatting, variable names, the curl line. Unit-tested with Jest.
 */
import type { IBundle, IVersion } from './types';

/** `1.2 MB` (powers of 1000, as the CLI prints). Example: `humanBytes(950000)` is `'950.0 kB'`. */
export function humanBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let value = n;
  for (const unit of units) {
    if (value < 1000 || unit === 'TB') {
      return unit === 'B' ? `${value} B` : `${value.toFixed(1)} ${unit}`;
    }
    value /= 1000;
  }
  return `${value.toFixed(1)} TB`;
}

/** A count with thousands separators, whatever the browser's locale. Example: `242,762`. */
export function humanCount(n: number): string {
  return Math.round(n)
    .toString()
    .replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

/**
 * A metric as people read it: integers without decimals (`epochs 2`), small
 * fractions with three significant digits (`acc 0.981`).
 */
export function humanMetric(value: unknown): string {
  if (typeof value !== 'number' || !Number.isFinite(value)) {
    return String(value);
  }
  if (Number.isInteger(value)) {
    return humanCount(value);
  }
  return Math.abs(value) >= 1000 ? humanCount(value) : String(Number(value.toPrecision(3)));
}

/** Words of the text a version is found by: its ref, tags, badges, architecture, precision, remotes. */
function versionWords(v: IVersion): string {
  const published = v.published?.length ? ['published', ...v.published] : [];
  return [v.ref, ...v.tags, ...v.badges, v.architecture, v.precision, ...published]
    .join(' ')
    .toLowerCase();
}

/**
 * Narrow bundles to the versions that match every word of `query` (a word
 * matches the bundle's name or description, or the version's own words).
 * Bundles with no matching version are dropped; an empty query keeps all.
 *
 * Example: `filterBundles(bundles, 'compressed')` keeps only compressed versions.
 */
export function filterBundles(bundles: IBundle[], query: string): IBundle[] {
  const words = query.trim().toLowerCase().split(/\s+/).filter(Boolean);
  if (words.length === 0) {
    return bundles;
  }
  const out: IBundle[] = [];
  for (const bundle of bundles) {
    const own = `${bundle.name} ${bundle.description}`.toLowerCase();
    const versions = bundle.versions.filter(v => {
      const text = `${own} ${versionWords(v)}`;
      return words.every(word => text.includes(word));
    });
    if (versions.length) {
      out.push({ ...bundle, versions });
    }
  }
  return out;
}

/** How many versions the bundles hold (the count a section shows). */
export function versionCount(bundles: IBundle[]): number {
  return bundles.reduce((n, b) => n + b.versions.length, 0);
}

/** Versions newest first: by version number, unnumbered ones last, then by creation time. */
export function sortVersions(versions: IVersion[]): IVersion[] {
  return [...versions].sort((a, b) => {
    if (a.version !== b.version) {
      return (b.version ?? -1) - (a.version ?? -1);
    }
    return (b.created ?? '').localeCompare(a.created ?? '');
  });
}

const PYTHON_KEYWORDS = new Set(
  (
    'False None True and as assert async await break class continue def del elif else except ' +
    'finally for from global if import in is lambda nonlocal not or pass raise return try while with yield'
  ).split(' ')
);

/**
 * Why `name` cannot be the variable a bundle is loaded into, or '' if it can.
 * (The default name comes from Python; this only checks what the user types.)
 *
 * Example: `variableProblem('class')` says it is a Python keyword.
 */
export function variableProblem(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
    return `"${name}" is not a Python name (letters, digits and _, not starting with a digit)`;
  }
  if (PYTHON_KEYWORDS.has(name)) {
    return `"${name}" is a Python keyword`;
  }
  return '';
}

/**
 * Quote one shell word (POSIX single quotes), so a path with spaces or quotes
 * is one argument. Example: `shellQuote("my key.txt")` is `'my key.txt'` in quotes.
 */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, "'\"'\"'")}'`;
}

/**
 * The `%modelpack load` line the sidebar inserts. A key file goes in the line; a
 * passphrase never does (`--passphrase` makes the kernel ask for it).
 */
export function loadLine(ref: string, variable: string, identity = '', passphrase = false): string {
  const key = passphrase ? ' --passphrase' : identity ? ` --identity ${shellQuote(identity)}` : '';
  return `%modelpack load ${ref} as ${variable}${key}`;
}

/** A curl line that asks a model server for its metadata (Open Inference Protocol v2). */
export function curlLine(url: string): string {
  return `curl -s ${url.replace(/\/$/, '')}/v2`;
}

/** A parent digest as `name:version` when this store knows it, else a short digest. */
export function parentLabel(
  digest: string,
  names: Map<string, string>,
  known?: string | null
): string {
  return known || names.get(digest) || `${digest.slice(0, 19)}…`;
}
