/** Loading a bundle into the active notebook: insert `%modelpack load …` below and run it. */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';

/**
 * Insert `line` (a `%modelpack load …` line) below the active cell and run it,
 * loading the extension first if the notebook does not.
 *
 * Example: `await loadIntoNotebook(tracker, app.shell, '%modelpack load m:1 as m')`
 */
export async function loadIntoNotebook(
  tracker: INotebookTracker,
  shell: JupyterFrontEnd.IShell,
  line: string
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
  lines.push(line);
  if (notebook.activeCell === null && notebook.widgets.length > 0) {
    notebook.activeCellIndex = notebook.widgets.length - 1;
  }
  const active = notebook.activeCell;
  if (
    active &&
    active.model.type === 'code' &&
    active.model.sharedModel.getSource().trim() === ''
  ) {
    active.model.sharedModel.setSource(lines.join('\n'));
  } else {
    NotebookActions.insertBelow(notebook);
    notebook.activeCell?.model.sharedModel.setSource(lines.join('\n'));
  }
  const ok = await NotebookActions.run(notebook, panel.context.sessionContext);
  if (!ok) {
    Notification.error("Loading failed: see the cell's output.", { autoClose: 8000 });
  }
}
