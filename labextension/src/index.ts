import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  Clipboard,
  Dialog,
  ICommandPalette,
  InputDialog,
  MainAreaWidget,
  Notification,
  showDialog
} from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { humanBytes, IActionRequest, modelpackIcon, ModelPackPanel } from './panel';
import { APIError, postAPI, requestAPI } from './request';
import { IDetail, IJob, IVersion } from './types';

namespace CommandIDs {
  export const open = 'nbmodelpack:open';
  export const refresh = 'nbmodelpack:refresh';
  export const load = 'nbmodelpack:load-bundle';
  export const details = 'nbmodelpack:show-details';
  export const publish = 'nbmodelpack:publish-bundle';
  export const pull = 'nbmodelpack:pull-bundle';
  export const serve = 'nbmodelpack:serve-bundle';
  export const stop = 'nbmodelpack:stop-bundle';
  export const copy = 'nbmodelpack:copy-reference';
  export const remove = 'nbmodelpack:delete-bundle';
}

const CATEGORY = 'Model bundles';

/** A Python identifier for the variable a bundle is loaded into: `mnist-mlp` -> `mnist_mlp`. */
export function variableFor(name: string): string {
  const ident = name.replace(/[^A-Za-z0-9_]/g, '_').replace(/^(\d)/, '_$1');
  return ident || 'model';
}

/** A background job that failed; its notification already says why. */
class JobFailed extends APIError {}

function message(error: unknown): string {
  return error instanceof APIError || error instanceof Error ? error.message : String(error);
}

/** Insert `%modelpack load REF as VAR` below the active cell and run it. */
async function loadIntoNotebook(
  tracker: INotebookTracker,
  shell: JupyterFrontEnd.IShell,
  ref: string,
  name: string
): Promise<void> {
  const panel = tracker.currentWidget;
  if (!panel) {
    Notification.warning('Open a notebook first, then load the bundle into it.', {
      autoClose: 5000
    });
    return;
  }
  shell.activateById(panel.id);
  await panel.context.sessionContext.ready;
  const notebook = panel.content;
  const lines: string[] = [];
  // Loading the extension is written into the notebook (once) so that it reruns from the top.
  const hasLoadExt = panel.content.widgets.some(cell =>
    /^\s*%(re)?load_ext\s+nbmodelpack\b/m.test(cell.model.sharedModel.getSource())
  );
  if (!hasLoadExt) {
    lines.push('%load_ext nbmodelpack');
  } else {
    // Already in the notebook but maybe not run in this kernel: load it silently (idempotent).
    const kernel = panel.context.sessionContext.session?.kernel;
    await kernel?.requestExecute({
      code: "get_ipython().extension_manager.load_extension('nbmodelpack')",
      silent: true,
      store_history: false
    }).done;
  }
  lines.push(`%modelpack load ${ref} as ${variableFor(name)}`);
  if (notebook.activeCell === null && notebook.widgets.length > 0) {
    notebook.activeCellIndex = notebook.widgets.length - 1;
  }
  const active = notebook.activeCell;
  if (active && active.model.type === 'code' && active.model.sharedModel.getSource().trim() === '') {
    active.model.sharedModel.setSource(lines.join('\n'));
  } else {
    NotebookActions.insertBelow(notebook);
    notebook.activeCell?.model.sharedModel.setSource(lines.join('\n'));
  }
  const ok = await NotebookActions.run(notebook, panel.context.sessionContext);
  if (!ok) {
    Notification.error(`Loading ${ref} failed: see the cell's output.`, { autoClose: 8000 });
  }
}

/** Poll a background job until it ends, showing its progress as a notification. */
async function followJob(job: IJob, label: string): Promise<IJob> {
  const id = Notification.emit(`${label}…`, 'in-progress', { autoClose: false });
  let current = job;
  while (current.state === 'running') {
    await new Promise(resolve => setTimeout(resolve, 500));
    try {
      current = (await requestAPI<{ job: IJob }>(`jobs/${current.id}`))!.job;
    } catch (error) {
      Notification.update({ id, message: `${label}: ${message(error)}`, type: 'error', autoClose: 8000 });
      throw new JobFailed(message(error), 0);
    }
    const p = current.progress;
    if (current.state === 'running' && p.total) {
      const pct = Math.floor((100 * p.done) / p.total);
      Notification.update({ id, message: `${label}: ${p.step} ${pct}%`, type: 'in-progress', autoClose: false });
    }
  }
  if (current.state === 'error') {
    Notification.update({ id, message: `${label} failed: ${current.error}`, type: 'error', autoClose: 10000 });
    throw new JobFailed(current.error ?? 'failed', 0);
  }
  Notification.update({ id, message: `${label}: done`, type: 'success', autoClose: 4000 });
  return current;
}

/** Pick a remote (and an optional tag) for Publish…; null if cancelled. */
async function askPublishTarget(
  panel: ModelPackPanel,
  ref: string
): Promise<{ remote: string; tag: string } | null> {
  if (panel.remotes.length === 0) {
    Notification.warning('No remotes configured: add one with `modelpack remote add NAME URL`.', {
      autoClose: 8000
    });
    return null;
  }
  const body = new Widget();
  body.addClass('jp-ModelPack-dialog');
  const select = document.createElement('select');
  select.className = 'jp-mod-styled';
  select.setAttribute('aria-label', 'Remote');
  for (const r of panel.remotes) {
    const option = document.createElement('option');
    option.value = r.name;
    option.textContent = `${r.name} (${r.url})`;
    select.appendChild(option);
  }
  const tag = document.createElement('input');
  tag.className = 'jp-mod-styled';
  tag.placeholder = 'extra tag (optional)';
  tag.setAttribute('aria-label', 'Tag');
  const l1 = document.createElement('label');
  l1.textContent = 'Remote';
  const l2 = document.createElement('label');
  l2.textContent = 'Tag';
  body.node.append(l1, select, l2, tag);
  const result = await showDialog({
    title: `Publish ${ref}`,
    body,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Publish' })],
    focusNodeSelector: 'select'
  });
  if (!result.button.accept) {
    return null;
  }
  return { remote: select.value, tag: tag.value.trim() };
}

/** The details view: model card (Markdown via rendermime), lineage and layers. */
async function openDetails(
  app: JupyterFrontEnd,
  rendermime: IRenderMimeRegistry,
  version: IVersion
): Promise<void> {
  const tag = version.version !== null ? String(version.version) : '';
  const query = tag ? `?ref=${encodeURIComponent(tag)}` : '';
  const reply = await requestAPI<IDetail>(`bundles/${encodeURIComponent(version.name)}${query}`);
  if (!reply) {
    return;
  }
  const d = reply.detail;
  const content = new Widget();
  content.addClass('jp-ModelPack-details');
  const head = document.createElement('div');
  head.className = 'jp-ModelPack-detailsHead';
  const h = document.createElement('h2');
  h.textContent = d.ref;
  head.appendChild(h);
  for (const badge of d.badges) {
    const chip = document.createElement('span');
    chip.className = `jp-ModelPack-chip jp-ModelPack-badge jp-ModelPack-badge-${badge}`;
    chip.textContent = badge;
    head.appendChild(chip);
  }
  const digest = document.createElement('code');
  digest.className = 'jp-ModelPack-digest';
  digest.textContent = d.digest;
  head.appendChild(digest);
  content.node.appendChild(head);

  const card = rendermime.createRenderer('text/markdown');
  // The card's YAML front matter is metadata, shown below as tables rather than as text.
  const markdown = d.card.replace(/^---\n[\s\S]*?\n---\n/, '');
  await card.renderModel(new MimeModel({ data: { 'text/markdown': markdown } }));
  card.addClass('jp-ModelPack-card');
  content.node.appendChild(card.node);

  const lineageTitle = document.createElement('h3');
  lineageTitle.textContent = 'Recipe';
  const lineage = document.createElement('ol');
  lineage.className = 'jp-ModelPack-lineage';
  for (const step of d.lineage) {
    const li = document.createElement('li');
    const p = step['params'] as Record<string, unknown> | undefined;
    const params = p && Object.keys(p).length ? ` ${JSON.stringify(p)}` : '';
    const parent = step['parent'] ? ` ← ${String(step['parent']).slice(0, 19)}…` : '';
    li.textContent = `${String(step['op'] ?? 'pack')}${params}${parent}`;
    lineage.appendChild(li);
  }
  const layersTitle = document.createElement('h3');
  layersTitle.textContent = 'Layers';
  const table = document.createElement('table');
  table.className = 'jp-ModelPack-layers';
  table.innerHTML = '<thead><tr><th>file</th><th>media type</th><th>size</th></tr></thead>';
  const tbody = document.createElement('tbody');
  for (const layer of d.layers) {
    const row = document.createElement('tr');
    for (const text of [layer.filepath, layer.mediaType, humanBytes(layer.size)]) {
      const cell = document.createElement('td');
      cell.textContent = text;
      row.appendChild(cell);
    }
    tbody.appendChild(row);
  }
  table.appendChild(tbody);
  content.node.append(lineageTitle, lineage, layersTitle, table);

  const widget = new MainAreaWidget({ content });
  widget.id = `nbmodelpack-details-${d.digest.slice(7, 19)}`;
  widget.title.label = d.ref;
  widget.title.icon = modelpackIcon;
  widget.title.closable = true;
  const existing = Array.from(app.shell.widgets('main')).find(w => w.id === widget.id);
  if (existing) {
    existing.dispose();
  }
  app.shell.add(widget, 'main');
  app.shell.activateById(widget.id);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbmodelpack:plugin',
  description: 'Sidebar for nbmodelpack: local and published model bundles.',
  autoStart: true,
  requires: [INotebookTracker, IRenderMimeRegistry],
  optional: [ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    rendermime: IRenderMimeRegistry,
    palette: ICommandPalette | null
  ) => {
    const panel = new ModelPackPanel({ canLoad: () => tracker.currentWidget !== null });
    app.shell.add(panel, 'left', { rank: 650 });
    tracker.currentChanged.connect(() => panel.update());

    const { commands } = app;
    const versionArg = (args: any): IVersion | undefined =>
      panel.localVersions.find(v => v.ref === args['ref']);
    const run = async (label: string, work: () => Promise<unknown>) => {
      try {
        await work();
      } catch (error) {
        if (!(error instanceof JobFailed)) {
          Notification.error(`${label}: ${message(error)}`, { autoClose: 8000 });
        }
      }
    };

    commands.addCommand(CommandIDs.open, {
      label: 'Show Model Bundles',
      caption: 'Open the nbmodelpack sidebar',
      icon: modelpackIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    commands.addCommand(CommandIDs.refresh, {
      label: 'Refresh Model Bundles',
      execute: () => panel.refresh()
    });
    commands.addCommand(CommandIDs.load, {
      label: args => (args['ref'] ? `Load ${args['ref']} into Notebook` : 'Load Model Bundle into Notebook…'),
      caption: 'Insert and run %modelpack load REF as VAR in the active notebook',
      isEnabled: () => tracker.currentWidget !== null,
      execute: async args => {
        let ref = args['ref'] as string | undefined;
        if (!ref) {
          const items = panel.localVersions.map(v => v.ref);
          if (items.length === 0) {
            Notification.info('No local bundles to load yet.', { autoClose: 5000 });
            return;
          }
          const choice = await InputDialog.getItem({ title: 'Load bundle', items });
          if (!choice.button.accept || !choice.value) {
            return;
          }
          ref = choice.value;
        }
        const name = ref.split(/[:@]/)[0];
        await run(`Load ${ref}`, () => loadIntoNotebook(tracker, app.shell, ref!, name));
      }
    });
    commands.addCommand(CommandIDs.details, {
      label: 'Show Model Card',
      execute: args => {
        const v = versionArg(args);
        return v && run(`Details of ${v.ref}`, () => openDetails(app, rendermime, v));
      }
    });
    commands.addCommand(CommandIDs.publish, {
      label: 'Publish Model Bundle…',
      execute: args => {
        const v = versionArg(args);
        if (!v) {
          return;
        }
        return run(`Publish ${v.ref}`, async () => {
          const target = await askPublishTarget(panel, v.ref);
          if (!target) {
            return;
          }
          const body: Record<string, string> = { ref: v.ref, remote: target.remote };
          if (target.tag) {
            body.tag = target.tag;
          }
          const reply = await postAPI<{ job: IJob }>('actions/publish', body);
          await followJob(reply!.job, `Publish ${v.ref} to ${target.remote}`);
          await panel.refresh();
        });
      }
    });
    commands.addCommand(CommandIDs.pull, {
      label: 'Pull Model Bundle',
      execute: args => {
        const remote = String(args['remote'] ?? '');
        const ref = String(args['ref'] ?? '');
        return run(`Pull ${remote}/${ref}`, async () => {
          const reply = await postAPI<{ job: IJob }>('actions/pull', { remote, ref });
          await followJob(reply!.job, `Pull ${remote}/${ref}`);
          await panel.refresh();
        });
      }
    });
    commands.addCommand(CommandIDs.serve, {
      label: 'Serve Model Bundle',
      execute: args => {
        const ref = String(args['ref'] ?? '');
        return run(`Serve ${ref}`, async () => {
          const reply = await postAPI<{ job: IJob }>('actions/serve', { ref });
          const job = await followJob(reply!.job, `Serve ${ref}`);
          const url = (job.result as any)?.url;
          if (url) {
            Notification.success(`${ref} is served at ${url}`, { autoClose: 8000 });
          }
          await panel.refresh();
        });
      }
    });
    commands.addCommand(CommandIDs.stop, {
      label: 'Stop Model Server',
      execute: args => {
        const ref = String(args['ref'] ?? '');
        return run(`Stop ${ref}`, async () => {
          await postAPI('actions/stop', { ref });
          Notification.success(`Stopped the server of ${ref}`, { autoClose: 4000 });
          await panel.refresh();
        });
      }
    });
    commands.addCommand(CommandIDs.copy, {
      label: 'Copy Bundle Reference',
      execute: args => {
        const ref = String(args['ref'] ?? '');
        Clipboard.copyToSystem(ref);
        Notification.info(`Copied ${ref}`, { autoClose: 2000 });
      }
    });
    commands.addCommand(CommandIDs.remove, {
      label: 'Delete Model Bundle Version…',
      execute: args => {
        const ref = String(args['ref'] ?? '');
        return run(`Delete ${ref}`, async () => {
          const answer = await showDialog({
            title: `Delete ${ref}?`,
            body: 'This removes the version and all its tags from the local store. Published copies stay on their remotes.',
            buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Delete' })]
          });
          if (!answer.button.accept) {
            return;
          }
          await postAPI('actions/delete', { ref });
          Notification.success(`Deleted ${ref}`, { autoClose: 3000 });
          await panel.refresh();
        });
      }
    });

    panel.actionRequested.connect((_, request: IActionRequest) => {
      const v = request.version;
      switch (request.action) {
        case 'load':
          void commands.execute(CommandIDs.load, { ref: v.ref });
          break;
        case 'details':
          void commands.execute(CommandIDs.details, { ref: v.ref });
          break;
        case 'publish':
          void commands.execute(CommandIDs.publish, { ref: v.ref });
          break;
        case 'pull':
          void commands.execute(CommandIDs.pull, { remote: request.remote ?? '', ref: v.ref });
          break;
        case 'serve':
          void commands.execute(CommandIDs.serve, { ref: v.ref });
          break;
        case 'stop':
          void commands.execute(CommandIDs.stop, { ref: v.ref });
          break;
        case 'copy':
          void commands.execute(CommandIDs.copy, {
            ref: request.remote ? `${request.remote}/${v.ref}` : v.ref
          });
          break;
        case 'delete':
          void commands.execute(CommandIDs.remove, { ref: v.ref });
          break;
      }
    });

    if (palette) {
      for (const command of [CommandIDs.open, CommandIDs.refresh, CommandIDs.load]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
  }
};

export default plugin;
