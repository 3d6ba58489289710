/**
 * The left-sidebar panel: **Local** and **Published** (per remote) bundles, a
 * filter box, version lists with badges and one row of actions per version.
 *
 * The list is rendered with Lumino's keyed virtual DOM: a refresh patches the
 * nodes that changed and keeps the others (and so keyboard focus) in place.
 */
import { Notification } from '@jupyterlab/apputils';
import { refreshIcon } from '@jupyterlab/ui-components';
import { Poll } from '@lumino/polling';
import { ISignal, Signal } from '@lumino/signaling';
import { h, VirtualDOM, VirtualElement } from '@lumino/virtualdom';
import { Widget } from '@lumino/widgets';

import { filterBundles, humanBytes, humanCount, humanMetric, versionCount } from './format';
import { modelpackIcon } from './icon';
import { requestAPI } from './request';
import { IBundle, IListing, IRemote, IRemoteListing, IVersion } from './types';

export { modelpackIcon };

/** What a version row asks its owner to do. */
export type Action = 'load' | 'details' | 'publish' | 'pull' | 'serve' | 'stop' | 'copy' | 'delete';

export interface IActionRequest {
  action: Action;
  version: IVersion;
  remote: string | null;
}

const POLL_MS = 2000;

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
  }

  /** Emitted when the user clicks an action of a version. */
  get actionRequested(): ISignal<this, IActionRequest> {
    return this._actionRequested;
  }

  /** Every local version (for the load command's picker). */
  get localVersions(): IVersion[] {
    return this._local.flatMap(b => b.versions);
  }

  /** Manifest digest -> `name:version` of every local version (lineage shows parents by name). */
  get versionNames(): Map<string, string> {
    return new Map(this.localVersions.map(v => [v.digest, v.ref]));
  }

  /** Remote names configured in config.toml. */
  get remotes(): IRemote[] {
    return this._remotes;
  }

  /** Refresh local and published lists now (expanded groups and focus stay as they are). */
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
      this._remoteErrors.delete('');
    } catch (error) {
      this._remotes = [];
      this._remoteErrors.set('', String((error as Error).message));
    }
    await this._listRemotes();
  }

  private async _listRemotes(): Promise<void> {
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
        // The listing's etag covers config.toml and published.json: a remote added or a
        // version published from a cell or a terminal shows here, so re-list the remotes.
        const seen = JSON.stringify([listing.remotes, this.localVersions.map(v => v.published)]);
        if (seen !== this._remotesSeen) {
          this._remotesSeen = seen;
          this._remotes = listing.remotes ?? [];
          this._remoteErrors.delete('');
          await this._listRemotes();
        }
        this._render();
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
    this._search.placeholder = 'Filter: name, tag, badge…';
    this._search.setAttribute('aria-label', 'Filter bundles');
    this._search.oninput = () => this._render();

    this._hint = document.createElement('div');
    this._hint.className = 'jp-ModelPack-hint';

    this._body = document.createElement('div');
    this._body.className = 'jp-ModelPack-body';
    this.node.append(header, this._search, this._hint, this._body);
  }

  private _render(): void {
    const canLoad = this._canLoad();
    this._hint.textContent = canLoad ? '' : 'Open a notebook to load bundles into it.';
    this._hint.hidden = canLoad;
    const query = this._search.value;

    const publishedBy = new Map<string, string[]>();
    for (const [remote, bundles] of this._published) {
      for (const v of bundles.flatMap(b => b.versions)) {
        publishedBy.set(v.digest, [...(publishedBy.get(v.digest) ?? []), remote]);
      }
    }

    const localBundles = filterBundles(this._local, query);
    const localItems: VirtualElement[] = [];
    if (this._localError) {
      localItems.push(this._note(this._localError, true));
    } else if (localBundles.length === 0) {
      localItems.push(
        this._note(
          this._local.length
            ? 'No bundle matches the filter.'
            : 'No bundles yet: run nbmodelpack.pack(model, "name") or %modelpack pack in a notebook.'
        )
      );
    }
    for (const bundle of localBundles) {
      localItems.push(
        this._bundle(bundle, null, canLoad, v => publishedBy.get(v.digest) ?? [], query)
      );
    }

    const remoteItems: VirtualElement[] = [];
    let publishedShown = 0;
    if (this._remotes.length === 0) {
      remoteItems.push(
        this._note(
          this._remoteErrors.get('') ?? 'No remotes: add one with `modelpack remote add NAME URL`.'
        )
      );
    }
    for (const remote of this._remotes) {
      const error = this._remoteErrors.get(remote.name);
      const bundles = filterBundles(this._published.get(remote.name) ?? [], query);
      publishedShown += versionCount(bundles);
      remoteItems.push(
        h.div(
          {
            className: 'jp-ModelPack-remote',
            key: `remote/${remote.name}`,
            dataset: { remote: remote.name }
          },
          h.div(
            { className: 'jp-ModelPack-remoteName', title: remote.url },
            remote.name,
            h.span({ className: 'jp-ModelPack-dim' }, ` ${remote.url}`)
          ),
          error ? this._note(error, true) : null,
          !error && bundles.length === 0
            ? this._note(
                query.trim() ? 'No version here matches the filter.' : 'Nothing published here yet.'
              )
            : null,
          ...bundles.map(b => this._bundle(b, remote.name, canLoad, () => [], query))
        )
      );
    }

    VirtualDOM.render(
      [
        this._section('Local', 'local', versionCount(localBundles), localItems),
        this._section('Published', 'published', publishedShown, remoteItems)
      ],
      this._body
    );
  }

  private _section(
    label: string,
    key: string,
    count: number,
    items: VirtualElement[]
  ): VirtualElement {
    return h.section(
      { className: 'jp-ModelPack-section', key: `section/${key}`, dataset: { section: key } },
      h.h3(
        { className: 'jp-ModelPack-sectionTitle' },
        label,
        h.span(
          {
            className: 'jp-ModelPack-count',
            title: `${count} version${count === 1 ? '' : 's'} shown`
          },
          String(count)
        )
      ),
      h.div({ className: 'jp-ModelPack-list' }, ...items)
    );
  }

  private _note(text: string, error = false): VirtualElement {
    return h.div(
      { className: error ? 'jp-ModelPack-note jp-ModelPack-error' : 'jp-ModelPack-note' },
      text
    );
  }

  private _bundle(
    bundle: IBundle,
    remote: string | null,
    canLoad: boolean,
    publishedOn: (v: IVersion) => string[],
    query: string
  ): VirtualElement {
    const key = `${remote ?? ''}/${bundle.name}`;
    const open = this._open.has(key) || query.trim() !== '';
    const n = bundle.versions.length;
    const toggle = () => {
      if (this._open.has(key)) {
        this._open.delete(key);
      } else {
        this._open.add(key);
      }
      this._render();
    };
    return h.div(
      { className: 'jp-ModelPack-bundle', key: `bundle${key}`, dataset: { name: bundle.name } },
      h.button(
        {
          className: 'jp-ModelPack-bundleHead',
          'aria-expanded': String(open),
          'aria-label': `${bundle.name}, ${n} version${n === 1 ? '' : 's'}`,
          title: bundle.description || bundle.name,
          onclick: toggle
        },
        h.span({ className: 'jp-ModelPack-caret', 'aria-hidden': 'true' }, open ? '▾' : '▸'),
        h.span({ className: 'jp-ModelPack-bundleName' }, bundle.name),
        h.span({ className: 'jp-ModelPack-dim' }, `${n} version${n === 1 ? '' : 's'}`)
      ),
      bundle.description
        ? h.div({ className: 'jp-ModelPack-description' }, bundle.description)
        : null,
      open
        ? h.ul(
            { className: 'jp-ModelPack-versions' },
            ...bundle.versions.map(v => this._version(v, remote, canLoad, publishedOn(v)))
          )
        : null
    );
  }

  private _version(
    v: IVersion,
    remote: string | null,
    canLoad: boolean,
    publishedOn: string[]
  ): VirtualElement {
    const badges = [...v.badges];
    if (publishedOn.length && !badges.includes('published')) {
      badges.push('published');
    }
    const chips = [
      ...v.tags.filter(t => !/^\d+$/.test(t)).map(t => this._chip(t, 'tag', '')),
      ...badges.map(b =>
        this._chip(
          b,
          `badge jp-ModelPack-badge-${b}`,
          b === 'published' && publishedOn.length
            ? `published on ${publishedOn.join(', ')}`
            : b === 'serving' && v.serving
              ? `serving at ${v.serving}`
              : ''
        )
      )
    ];
    const metrics = Object.entries(v.metrics ?? {})
      .slice(0, 2)
      .map(([k, m]) => `${k} ${humanMetric(m)}`);
    const meta = [
      humanBytes(v.size),
      v.parameters ? `${humanCount(v.parameters)} params` : '',
      v.precision,
      ...metrics
    ]
      .filter(Boolean)
      .join(' · ');
    const shownRef = remote ? `${remote}/${v.ref}` : v.ref;
    const button = (action: Action, label: string, aria: string, enabled = true, hint = '') =>
      h.button(
        {
          className: 'jp-ModelPack-action',
          key: action,
          dataset: { action },
          'aria-label': aria,
          title: hint || aria,
          ...(enabled ? {} : { disabled: 'true' }),
          onclick: (event: MouseEvent) => {
            event.stopPropagation();
            this._actionRequested.emit({ action, version: v, remote });
          }
        },
        label
      );
    const actions =
      remote === null
        ? [
            button(
              'load',
              'Load into notebook',
              `Load ${v.ref} into the notebook`,
              canLoad,
              canLoad
                ? `Insert and run %modelpack load ${v.ref} in the active notebook`
                : 'Open a notebook first'
            ),
            button('details', 'Details', `Details of ${v.ref}`),
            button('publish', 'Publish…', `Publish ${v.ref}`),
            v.serving
              ? button(
                  'stop',
                  'Stop',
                  `Stop serving ${v.ref}`,
                  true,
                  `Stop the server at ${v.serving}`
                )
              : button(
                  'serve',
                  'Serve',
                  `Serve ${v.ref}`,
                  true,
                  'Serve this version over HTTP (Open Inference Protocol v2)'
                ),
            button('copy', 'Copy ref', `Copy ${v.ref}`),
            button(
              'delete',
              'Delete',
              `Delete ${v.ref}`,
              true,
              `Delete ${v.ref} from the local store`
            )
          ]
        : [
            button(
              'pull',
              'Pull',
              `Pull ${shownRef}`,
              true,
              `Pull ${shownRef} into the local store`
            ),
            button('copy', 'Copy ref', `Copy ${shownRef}`)
          ];
    return h.li(
      { className: 'jp-ModelPack-version', key: v.digest, dataset: { ref: v.ref } },
      h.div(
        { className: 'jp-ModelPack-versionLine' },
        h.span(
          { className: 'jp-ModelPack-ref', title: `${v.ref}\n${v.digest}` },
          v.version !== null ? `:${v.version}` : v.digest.slice(0, 19)
        ),
        ...chips
      ),
      h.div({ className: 'jp-ModelPack-meta' }, meta),
      v.serving && remote === null
        ? h.div(
            { className: 'jp-ModelPack-serving' },
            'serving at ',
            h.a({ href: v.serving, target: '_blank', rel: 'noopener' }, v.serving)
          )
        : null,
      h.div({ className: 'jp-ModelPack-actions' }, ...actions)
    );
  }

  private _chip(text: string, kind: string, title: string): VirtualElement {
    return h.span(
      {
        className: `jp-ModelPack-chip jp-ModelPack-${kind}`,
        key: `chip/${text}`,
        ...(title ? { title } : {})
      },
      text
    );
  }

  private _canLoad: () => boolean;
  private _poll: Poll;
  private _etag = '';
  private _local: IBundle[] = [];
  private _localError = '';
  private _remotesSeen: string | null = null;
  private _remotes: IRemote[] = [];
  private _published = new Map<string, IBundle[]>();
  private _remoteErrors = new Map<string, string>();
  private _open = new Set<string>();
  private _search!: HTMLInputElement;
  private _hint!: HTMLElement;
  private _body!: HTMLElement;
  private _actionRequested = new Signal<this, IActionRequest>(this);
}
