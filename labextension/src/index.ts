/** The nbmodelpack JupyterLab plugin: the sidebar, its commands, restored with the layout. */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';

import { addCommands, CommandIDs } from './commands';
import { ModelPackPanel } from './panel';

const CATEGORY = 'Model bundles';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbmodelpack:plugin',
  description: 'Sidebar for nbmodelpack: local and published model bundles.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    const panel = new ModelPackPanel({ canLoad: () => tracker.currentWidget !== null });
    app.shell.add(panel, 'left', { rank: 650 });
    // The sidebar reopens (or stays closed) as the user left it.
    restorer?.add(panel, 'nbmodelpack-sidebar');
    tracker.currentChanged.connect(() => panel.update());
    addCommands(app, panel, tracker);
    if (palette) {
      for (const command of [CommandIDs.open, CommandIDs.refresh, CommandIDs.load]) {
        palette.addItem({ command, category: CATEGORY });
      }
    }
  }
};

export default plugin;
