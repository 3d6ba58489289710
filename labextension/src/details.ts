/** The Details tab of one version, opened in the main area (its DOM: ./detailsview). */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { detailsNode } from './detailsview';
import { modelpackIcon } from './icon';
import { requestAPI } from './request';
import { IDetail, IVersion } from './types';

/**
 * Open (or replace) the Details tab of a local version.
 *
 * Example: `await openDetails(app, version, panel.versionNames)`
 */
export async function openDetails(
  app: JupyterFrontEnd,
  version: IVersion,
  names: Map<string, string>
): Promise<void> {
  const tag = version.version !== null ? String(version.version) : '';
  const query = tag ? `?ref=${encodeURIComponent(tag)}` : '';
  const reply = await requestAPI<IDetail>(`bundles/${encodeURIComponent(version.name)}${query}`);
  if (!reply) {
    return;
  }
  const d = reply.detail;
  const content = new Widget({ node: detailsNode(d, names) });
  content.addClass('jp-ModelPack-details');
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
