/** The sidebar's dialogs: where to publish, what to load into, which key, where it is served. */
import { Clipboard, Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { curlLine, variableProblem } from './format';
import { IRemote, IVersion } from './types';

function labelled(body: Widget, label: string, input: HTMLElement): void {
  const l = document.createElement('label');
  l.textContent = label;
  body.node.append(l, input);
}

function textInput(label: string, value = '', placeholder = ''): HTMLInputElement {
  const input = document.createElement('input');
  input.className = 'jp-mod-styled';
  input.value = value;
  input.placeholder = placeholder;
  input.setAttribute('aria-label', label);
  return input;
}

function dialogBody(): Widget {
  const body = new Widget();
  body.addClass('jp-ModelPack-dialog');
  return body;
}

const KEY_HINT = 'path of an age identity file on the Jupyter server';

/** Pick a remote (and an optional tag) for Publish…; null if cancelled. */
export async function askPublishTarget(
  remotes: IRemote[],
  ref: string
): Promise<{ remote: string; tag: string } | null> {
  if (remotes.length === 0) {
    Notification.warning('No remotes configured: add one with `modelpack remote add NAME URL`.', {
      autoClose: 8000
    });
    return null;
  }
  const body = dialogBody();
  const select = document.createElement('select');
  select.className = 'jp-mod-styled';
  select.setAttribute('aria-label', 'Remote');
  for (const r of remotes) {
    const option = document.createElement('option');
    option.value = r.name;
    option.textContent = `${r.name} (${r.url})`;
    select.appendChild(option);
  }
  const tag = textInput('Tag', '', 'extra tag (optional)');
  labelled(body, 'Remote', select);
  labelled(body, 'Tag', tag);
  const result = await showDialog({
    title: `Publish ${ref}`,
    body,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Publish' })],
    focusNodeSelector: 'select'
  });
  return result.button.accept ? { remote: select.value, tag: tag.value.trim() } : null;
}

/** What opens an encrypted version: a key file, a passphrase, or neither (the default keys). */
export interface IKey {
  identity: string;
  passphrase: string;
}

/** Key file and passphrase inputs for an encrypted version (both empty: the default keys). */
function keyInputs(
  body: Widget,
  passphraseLabel: string
): { file: HTMLInputElement; secret: HTMLInputElement } {
  const file = textInput('Key file', '', KEY_HINT);
  labelled(body, 'Key file (empty: the keys in $NBMODELPACK_HOME/keys)', file);
  const secret = textInput('Passphrase');
  secret.type = 'password';
  labelled(body, passphraseLabel, secret);
  return { file, secret };
}

/**
 * Ask for the variable to load into (default: Python's name for the bundle) and,
 * for an encrypted version, a key file or a passphrase; null if cancelled.
 */
export async function askLoad(
  version: IVersion
): Promise<{ variable: string; identity: string; passphrase: boolean } | null> {
  const body = dialogBody();
  const variable = textInput('Variable', version.var_name);
  labelled(body, 'Variable', variable);
  let ask: HTMLInputElement | null = null;
  let file: HTMLInputElement | null = null;
  if (version.encrypted) {
    file = textInput('Key file', '', KEY_HINT);
    labelled(body, 'Key file (empty: the keys in $NBMODELPACK_HOME/keys)', file);
    ask = document.createElement('input');
    ask.type = 'checkbox';
    ask.setAttribute('aria-label', 'Passphrase');
    const row = document.createElement('label');
    row.append(ask, ' passphrase-encrypted: the notebook asks for it (never written in the cell)');
    body.node.appendChild(row);
  }
  for (;;) {
    const result = await showDialog({
      title: `Load ${version.ref}`,
      body,
      buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Load' })],
      focusNodeSelector: version.encrypted ? 'input[aria-label="Key file"]' : 'input'
    });
    if (!result.button.accept) {
      return null;
    }
    const name = variable.value.trim();
    const problem = variableProblem(name);
    if (!problem) {
      return {
        variable: name,
        identity: file?.value.trim() ?? '',
        passphrase: ask?.checked ?? false
      };
    }
    Notification.warning(problem, { autoClose: 5000 });
  }
}

/** The key to serve an encrypted version with (empty fields: the default keys); null if cancelled. */
export async function askServeKey(version: IVersion): Promise<IKey | null> {
  const body = dialogBody();
  const { file, secret } = keyInputs(body, 'Passphrase (for a passphrase-encrypted bundle)');
  const result = await showDialog({
    title: `Serve ${version.ref} (encrypted)`,
    body,
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Serve' })],
    focusNodeSelector: 'input'
  });
  if (!result.button.accept) {
    return null;
  }
  return { identity: file.value.trim(), passphrase: secret.value };
}

/** Say where a version is served, with a curl line to copy. */
export async function showServed(ref: string, url: string): Promise<void> {
  const body = dialogBody();
  body.addClass('jp-ModelPack-served');
  const where = document.createElement('p');
  where.append(`${ref} is served at `);
  const link = document.createElement('a');
  link.href = url;
  link.target = '_blank';
  link.rel = 'noopener';
  link.textContent = url;
  where.appendChild(link);
  const curl = document.createElement('pre');
  curl.className = 'jp-ModelPack-snippet';
  curl.textContent = curlLine(url);
  body.node.append(where, curl);
  const result = await showDialog({
    title: `Serving ${ref}`,
    body,
    buttons: [Dialog.cancelButton({ label: 'Close' }), Dialog.okButton({ label: 'Copy curl line' })]
  });
  if (result.button.accept) {
    Clipboard.copyToSystem(curlLine(url));
    Notification.info('Copied the curl line', { autoClose: 2000 });
  }
}
