import { Notification } from '@jupyterlab/apputils';
import {
  caretDownIcon,
  caretRightIcon,
  refreshIcon,
  LabIcon
} from '@jupyterlab/ui-components';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { requestAPI } from './request';
import { IBundle, IListing, IRemote, IRemoteListing, IVersion } from './types';

/** The sidebar's icon: a box (a packed model). */
export const modelpackIcon = new LabIcon({
  name: 'nbmodelpack:box',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">' +
    '<path class="jp-icon3" fill="#616161" d="M12 2 3 6.5v11L12 22l9-4.5v-11L12 2zm0 2.2 6.6 3.3L12 10.8 5.4 7.5 12 4.2zM5 9.1l6 3v7.6l-6-3V9.1zm8 10.6v-7.6l6-3v7.6l-6 3z"/>' +
    '</svg>'
});

/** What a version row asks its owner to do. */
export type Action =
  | 'load'
  | 'details'
  | 'publish'
  | 'pull'
  | 'serve'
  | 'stop'
  | 'copy'
  | 'delete';

export interface IActionRequest {
  action: Action;
  version: IVersion;
  remote: string | null;
}

const POLL_MS = 2000;

/**
 * The left-sidebar panel: **Local** and **Published** (per remote) bundles,
 * a filter box, version lists with badges and one row of actions per version.
 */
export class ModelPackPanel extends Widget {
  constructor(options: { canLoad: () => boolean }) {
    super();
    this._canLoad = options.canLoad;
    this.id = 'nbmodelpack-sidebar';
    this.addClass('jp-ModelPack');
    this.title.icon = modelpackIcon;
    this.title.caption = 'Model bundles (nbmodelpack)';
    this._build();
    this._poll = new Poll({
      auto: true,
      factory: () => this._refreshLocal(),
      frequency: { interval: POLL_MS, backoff: true, max: 30 * 1000 },
      name: 'nbmodelpack:bundles',
      // Nothing to poll while the panel is closed or the browser tab is hidden.
      standby: () => !this.isVisible || 'when-hidden'
    });
    void this.refreshRemotes();
  }

  /** Emitted when the user clicks an action of a version. */
  get actionRequested(): ISignal<this, IActionRequest> {
    return this._actionRequested;
  }

  /** Every local version (for the load command's picker). */
  get localVersions(): IVersion[] {
    return this._local.flatMap(b => b.versions);
  }

  /** Remote names configured in config.toml. */
  get remotes(): IRemote[] {
    return this._remotes;
  }

  /** Refresh local and published lists now. */
  async refresh(): Promise<void> {
    this._etag = '';
    await Promise.all([this._poll.refresh(), this.refreshRemotes()]);
  }

  /** Re-render (e.g. when the active notebook changes). */
  update(): void {
    this._render();
  }

  protected onAfterShow(): void {
    void this._poll.refresh();
  }

  dispose(): void {
    this._poll.dispose();
    super.dispose();
  }

  /** Reload the configured remotes and what is published on each. */
  async refreshRemotes(): Promise<void> {
    try {
      const reply = await requestAPI<{ remotes: IRemote[] }>('remotes');
      this._remotes = reply?.remotes ?? [];
    } catch (error) {
      this._remotes = [];
      this._remoteErrors.set('', String((error as Error).message));
    }
    await Promise.all(
      this._remotes.map(async r => {
        try {
          const listing = await requestAPI<IRemoteListing>(
            `remotes/${encodeURIComponent(r.name)}/bundles`
          );
          this._published.set(r.name, listing?.bundles ?? []);
          this._remoteErrors.delete(r.name);
        } catch (error) {
          this._published.set(r.name, []);
          this._remoteErrors.set(r.name, String((error as Error).message));
        }
      })
    );
    for (const name of [...this._published.keys()]) {
      if (!this._remotes.some(r => r.name === name)) {
        this._published.delete(name);
      }
    }
    this._render();
  }

  private async _refreshLocal(): Promise<void> {
    const since = this._etag ? `?since=${encodeURIComponent(this._etag)}` : '';
    try {
      const listing = await requestAPI<IListing>(`bundles${since}`);
      if (listing) {
        this._etag = listing.etag;
        this._local = listing.bundles;
        this._localError = '';
        this._render();
        // Published from a notebook or terminal: the remotes' listings are stale too.
        const published = JSON.stringify(this.localVersions.map(v => v.published));
        if (this._publishedSeen !== null && published !== this._publishedSeen) {
          void this.refreshRemotes();
        }
        this._publishedSeen = published;
      }
    } catch (error) {
      const message = String((error as Error).message);
      if (message !== this._localError) {
        this._localError = message;
        Notification.error(`nbmodelpack: ${message}`, { autoClose: 8000 });
        this._render();
      }
      throw error; // lets the poll back off
    }
  }

  private _build(): void {
    const header = document.createElement('div');
    header.className = 'jp-ModelPack-header';
    const title = document.createElement('span');
    title.className = 'jp-ModelPack-title';
    title.textContent = 'Model bundles';
    const refresh = document.createElement('button');
    refresh.className = 'jp-ModelPack-iconButton';
    refresh.title = 'Refresh';
    refresh.setAttribute('aria-label', 'Refresh');
    refresh.appendChild(refreshIcon.element({ tag: 'span' }));
    refresh.onclick = () => void this.refresh();
    header.append(title, refresh);

    this._search = document.createElement('input');
    this._search.className = 'jp-ModelPack-search jp-mod-styled';
    this._search.type = 'search';
    this._search.placeholder = 'Filter bundles';
    this._search.setAttribute('aria-label', 'Filter bundles');
    this._search.oninput = () => this._render();

    this._hint = document.createElement('div');
    this._hint.className = 'jp-ModelPack-hint';

    this._body = document.createElement('div');
    this._body.className = 'jp-ModelPack-body';
    this.node.append(header, this._search, this._hint, this._body);
  }

  private _matches(bundle: IBundle): boolean {
    const query = this._search.value.trim().toLowerCase();
    if (!query) {
      return true;
    }
    const text = [
      bundle.name,
      bundle.description,
      ...bundle.versions.flatMap(v => [...v.tags, ...v.badges, v.architecture])
    ]
      .join(' ')
      .toLowerCase();
    return query.split(/\s+/).every(word => text.includes(word));
  }

  private _render(): void {
    const canLoad = this._canLoad();
    this._hint.textContent = canLoad
      ? ''
      : 'Open a notebook to load bundles into it.';
    this._hint.hidden = canLoad;

    const publishedBy = new Map<string, string[]>();
    for (const [remote, bundles] of this._published) {
      for (const v of bundles.flatMap(b => b.versions)) {
        publishedBy.set(v.digest, [...(publishedBy.get(v.digest) ?? []), remote]);
      }
    }

    this._body.replaceChildren();
    const local = this._section('Local', 'local');
    if (this._localError) {
      local.list.appendChild(this._note(this._localError, true));
    }
    const bundles = this._local.filter(b => this._matches(b));
    if (bundles.length === 0 && !this._localError) {
      local.list.appendChild(
        this._note(
          this._local.length
            ? 'No bundle matches the filter.'
            : 'No bundles yet: run nbmodelpack.pack(model, "name") or %modelpack pack in a notebook.'
        )
      );
    }
    for (const bundle of bundles) {
      local.list.appendChild(
        this._bundle(bundle, null, canLoad, v => publishedBy.get(v.digest) ?? [])
      );
    }
    local.count.textContent = String(this._local.length);
    this._body.appendChild(local.section);

    const published = this._section('Published', 'published');
    if (this._remotes.length === 0) {
      published.list.appendChild(
        this._note(
          this._remoteErrors.get('') ??
            'No remotes: add one with `modelpack remote add NAME URL`.'
        )
      );
    }
    for (const remote of this._remotes) {
      const group = document.createElement('div');
      group.className = 'jp-ModelPack-remote';
      group.dataset.remote = remote.name;
      const head = document.createElement('div');
      head.className = 'jp-ModelPack-remoteName';
      head.textContent = remote.name;
      head.title = remote.url;
      const url = document.createElement('span');
      url.className = 'jp-ModelPack-dim';
      url.textContent = ` ${remote.url}`;
      head.appendChild(url);
      group.appendChild(head);
      const error = this._remoteErrors.get(remote.name);
      if (error) {
        group.appendChild(this._note(error, true));
      }
      const remoteBundles = (this._published.get(remote.name) ?? []).filter(b =>
        this._matches(b)
      );
      if (!error && remoteBundles.length === 0) {
        group.appendChild(this._note('Nothing published here yet.'));
      }
      for (const bundle of remoteBundles) {
        group.appendChild(this._bundle(bundle, remote.name, canLoad, () => []));
      }
      published.list.appendChild(group);
    }
    published.count.textContent = String(this._remotes.length);
    this._body.appendChild(published.section);
  }

  private _section(
    label: string,
    key: string
  ): { section: HTMLElement; list: HTMLElement; count: HTMLElement } {
    const section = document.createElement('section');
    section.className = 'jp-ModelPack-section';
    section.dataset.section = key;
    const head = document.createElement('h3');
    head.className = 'jp-ModelPack-sectionTitle';
    head.textContent = label;
    const count = document.createElement('span');
    count.className = 'jp-ModelPack-count';
    head.appendChild(count);
    const list = document.createElement('div');
    list.className = 'jp-ModelPack-list';
    section.append(head, list);
    return { section, list, count };
  }

  private _note(text: string, error = false): HTMLElement {
    const note = document.createElement('div');
    note.className = error ? 'jp-ModelPack-note jp-ModelPack-error' : 'jp-ModelPack-note';
    note.textContent = text;
    return note;
  }

  private _bundle(
    bundle: IBundle,
    remote: string | null,
    canLoad: boolean,
    publishedOn: (v: IVersion) => string[]
  ): HTMLElement {
    const key = `${remote ?? ''}/${bundle.name}`;
    const open = this._open.has(key) || this._search.value.trim() !== '';
    const node = document.createElement('div');
    node.className = 'jp-ModelPack-bundle';
    node.dataset.name = bundle.name;
    const head = document.createElement('div');
    head.className = 'jp-ModelPack-bundleHead';
    head.tabIndex = 0;
    head.setAttribute('role', 'button');
    head.setAttribute('aria-expanded', String(open));
    head.appendChild((open ? caretDownIcon : caretRightIcon).element({ tag: 'span' }));
    const name = document.createElement('span');
    name.className = 'jp-ModelPack-bundleName';
    name.textContent = bundle.name;
    const count = document.createElement('span');
    count.className = 'jp-ModelPack-dim';
    count.textContent = `${bundle.versions.length} version${bundle.versions.length === 1 ? '' : 's'}`;
    head.append(name, count);
    if (bundle.description) {
      head.title = bundle.description;
    }
    const toggle = () => {
      if (this._open.has(key)) {
        this._open.delete(key);
      } else {
        this._open.add(key);
      }
      this._render();
    };
    head.onclick = toggle;
    head.onkeydown = event => {
      if (event.key === 'Enter' || event.key === ' ') {
        event.preventDefault();
        toggle();
      }
    };
    node.appendChild(head);
    if (bundle.description) {
      const description = document.createElement('div');
      description.className = 'jp-ModelPack-description';
      description.textContent = bundle.description;
      node.appendChild(description);
    }
    if (open) {
      const versions = document.createElement('ul');
      versions.className = 'jp-ModelPack-versions';
      for (const v of bundle.versions) {
        versions.appendChild(this._version(v, remote, canLoad, publishedOn(v)));
      }
      node.appendChild(versions);
    }
    return node;
  }

  private _version(
    v: IVersion,
    remote: string | null,
    canLoad: boolean,
    publishedOn: string[]
  ): HTMLElement {
    const item = document.createElement('li');
    item.className = 'jp-ModelPack-version';
    item.dataset.ref = v.ref;
    const line = document.createElement('div');
    line.className = 'jp-ModelPack-versionLine';
    const ref = document.createElement('span');
    ref.className = 'jp-ModelPack-ref';
    ref.textContent = v.version !== null ? `:${v.version}` : v.digest.slice(0, 19);
    ref.title = `${v.ref}\n${v.digest}`;
    line.appendChild(ref);
    for (const tag of v.tags.filter(t => !/^\d+$/.test(t))) {
      line.appendChild(this._chip(tag, 'tag'));
    }
    const badges = [...v.badges];
    if (publishedOn.length && !badges.includes('published')) {
      badges.push('published');
    }
    for (const badge of badges) {
      const chip = this._chip(badge, `badge jp-ModelPack-badge-${badge}`);
      if (badge === 'published' && publishedOn.length) {
        chip.title = `published on ${publishedOn.join(', ')}`;
      }
      if (badge === 'serving' && v.serving) {
        chip.title = `serving at ${v.serving}`;
      }
      line.appendChild(chip);
    }
    const meta = document.createElement('div');
    meta.className = 'jp-ModelPack-meta';
    const metrics = Object.entries(v.metrics ?? {})
      .slice(0, 2)
      .map(([k, m]) => `${k} ${typeof m === 'number' ? m.toPrecision(3) : String(m)}`);
    meta.textContent = [
      humanBytes(v.size),
      v.parameters ? `${v.parameters.toLocaleString()} params` : '',
      v.precision,
      ...metrics
    ]
      .filter(Boolean)
      .join(' · ');
    const actions = document.createElement('div');
    actions.className = 'jp-ModelPack-actions';
    const add = (action: Action, label: string, enabled = true, hint = '') => {
      const button = document.createElement('button');
      button.className = 'jp-ModelPack-action';
      button.dataset.action = action;
      button.textContent = label;
      button.disabled = !enabled;
      button.title = hint || label;
      button.onclick = event => {
        event.stopPropagation();
        this._actionRequested.emit({ action, version: v, remote });
      };
      actions.appendChild(button);
    };
    if (remote === null) {
      add(
        'load',
        'Load into notebook',
        canLoad,
        canLoad
          ? `Insert and run %modelpack load ${v.ref} in the active notebook`
          : 'Open a notebook first'
      );
      add('details', 'Details');
      add('publish', 'Publish…', true, 'Publish this version to a remote');
      if (v.serving) {
        add('stop', 'Stop', true, `Stop the server at ${v.serving}`);
      } else {
        add('serve', 'Serve', true, 'Serve this version over HTTP (Open Inference Protocol v2)');
      }
      add('copy', 'Copy ref', true, `Copy "${v.ref}"`);
      add('delete', 'Delete', true, `Delete ${v.ref} from the local store`);
    } else {
      add('pull', 'Pull', true, `Pull ${remote}/${v.ref} into the local store`);
      add('copy', 'Copy ref', true, `Copy "${remote}/${v.ref}"`);
    }
    item.append(line, meta, actions);
    return item;
  }

  private _chip(text: string, kind: string): HTMLElement {
    const chip = document.createElement('span');
    chip.className = `jp-ModelPack-chip jp-ModelPack-${kind}`;
    chip.textContent = text;
    return chip;
  }

  private _canLoad: () => boolean;
  private _poll: Poll;
  private _etag = '';
  private _local: IBundle[] = [];
  private _localError = '';
  private _publishedSeen: string | null = null;
  private _remotes: IRemote[] = [];
  private _published = new Map<string, IBundle[]>();
  private _remoteErrors = new Map<string, string>();
  private _open = new Set<string>();
  private _search!: HTMLInputElement;
  private _hint!: HTMLElement;
  private _body!: HTMLElement;
  private _actionRequested = new Signal<this, IActionRequest>(this);
}

/** `1.2 MB` (powers of 1000, as the CLI prints). */
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
