/** The sidebar's commands (palette, context and the version rows' buttons all go through these). */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Clipboard, Dialog, InputDialog, Notification, showDialog } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';

import { openDetails } from './details';
import { askLoad, askPublishTarget, askServeKey, showServed } from './dialogs';
import { loadLine } from './format';
import { modelpackIcon } from './icon';
import { followJob, JobFailed, message } from './jobs';
import { loadIntoNotebook } from './notebook';
import { IActionRequest, ModelPackPanel } from './panel';
import { postAPI } from './request';
import { IJob, IVersion } from './types';

export namespace CommandIDs {
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

/** Register every command and route the panel's action buttons to them. */
export function addCommands(
  app: JupyterFrontEnd,
  panel: ModelPackPanel,
  tracker: INotebookTracker
): void {
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
    label: args =>
      args['ref'] ? `Load ${args['ref']} into Notebook` : 'Load Model Bundle into Notebook…',
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
      const version = panel.localVersions.find(v => v.ref === ref);
      if (!version) {
        return;
      }
      await run(`Load ${ref}`, async () => {
        const answer = await askLoad(version);
        if (answer) {
          await loadIntoNotebook(
            tracker,
            app.shell,
            loadLine(version.ref, answer.variable, answer.identity, answer.passphrase)
          );
        }
      });
    }
  });
  commands.addCommand(CommandIDs.details, {
    label: 'Show Model Card',
    execute: args => {
      const v = versionArg(args);
      return v && run(`Details of ${v.ref}`, () => openDetails(app, v, panel.versionNames));
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
        const target = await askPublishTarget(panel.remotes, v.ref);
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
      const v = versionArg(args);
      if (!v) {
        return;
      }
      return run(`Serve ${v.ref}`, async () => {
        const body: Record<string, string> = { ref: v.ref };
        if (v.encrypted) {
          const key = await askServeKey(v);
          if (key === null) {
            return;
          }
          // One of the two (the REST API refuses both); a passphrase wins over a file.
          if (key.passphrase) {
            body.passphrase = key.passphrase;
          } else if (key.identity) {
            body.identity = key.identity;
          }
        }
        const reply = await postAPI<{ job: IJob }>('actions/serve', body);
        const job = await followJob(reply!.job, `Serve ${v.ref}`);
        await panel.refresh();
        const url = (job.result as any)?.url;
        if (url) {
          await showServed(v.ref, url);
        }
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

  const byAction: Record<
    IActionRequest['action'],
    (r: IActionRequest) => [string, Record<string, string>]
  > = {
    load: r => [CommandIDs.load, { ref: r.version.ref }],
    details: r => [CommandIDs.details, { ref: r.version.ref }],
    publish: r => [CommandIDs.publish, { ref: r.version.ref }],
    pull: r => [CommandIDs.pull, { remote: r.remote ?? '', ref: r.version.ref }],
    serve: r => [CommandIDs.serve, { ref: r.version.ref }],
    stop: r => [CommandIDs.stop, { ref: r.version.ref }],
    copy: r => [
      CommandIDs.copy,
      { ref: r.remote ? `${r.remote}/${r.version.ref}` : r.version.ref }
    ],
    delete: r => [CommandIDs.remove, { ref: r.version.ref }]
  };
  panel.actionRequested.connect((_, request) => {
    const [id, args] = byAction[request.action](request);
    void commands.execute(id, args);
  });
}
