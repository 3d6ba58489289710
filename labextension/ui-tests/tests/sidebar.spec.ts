import { expect, test } from '@jupyterlab/galata';
import type { Page } from '@playwright/test';

/**
 * The nbmodelpack sidebar in a real JupyterLab (started by
 * tests/e2e/test_sidebar_browser.py), driven in Debian's Chromium.
 */
const artifacts = process.env.NBMODELPACK_ARTIFACTS ?? '../../test-artifacts';
const remote = process.env.NBMODELPACK_E2E_REMOTE ?? 'team';
const NAME = 'sidebar-demo';

const PACK_CELL = [
  'import torch, nbmodelpack',
  'from models import MLP  # tests/models.py',
  `info = nbmodelpack.pack(MLP(hidden=8), "${NAME}", example=torch.zeros(1, 1, 28, 28),`,
  '                        description="packed by a notebook cell", labels=range(10))',
  'print("packed", info.ref)'
].join('\n');

const sidebar = (page: Page) => page.locator('#nbmodelpack-sidebar');
const localBundle = (page: Page) =>
  sidebar(page).locator(`[data-section="local"] .jp-ModelPack-bundle[data-name="${NAME}"]`);
const localVersion = (page: Page, ref: string) =>
  sidebar(page).locator(`[data-section="local"] .jp-ModelPack-version[data-ref="${ref}"]`);

async function expand(bundle: ReturnType<typeof localBundle>): Promise<void> {
  const head = bundle.locator('.jp-ModelPack-bundleHead');
  if ((await head.getAttribute('aria-expanded')) !== 'true') {
    await head.click();
  }
}

test.use({ autoGoto: true });
test.describe.configure({ mode: 'serial' });

test('sidebar lists a bundle packed by a cell, loads it into the notebook, serves, publishes and pulls it', async ({
  page
}) => {
  // The sidebar is there, with its sections, before anything is packed.
  await page.sidebar.openTab('nbmodelpack-sidebar');
  await expect(sidebar(page)).toBeVisible();
  await expect(sidebar(page).locator('[data-section="local"]')).toContainText('Local');
  await expect(sidebar(page).locator('[data-section="published"]')).toContainText('Published');
  await expect(localBundle(page)).toHaveCount(0);

  // A notebook cell packs a bundle; the open sidebar shows it without a reload (its poll).
  await page.notebook.createNew('pack.ipynb');
  await page.sidebar.openTab('nbmodelpack-sidebar');
  await expect(localBundle(page)).toHaveCount(0);
  await page.notebook.setCell(0, 'code', PACK_CELL);
  await page.notebook.runCell(0);
  expect(await page.notebook.getCellTextOutput(0)).toEqual([`packed ${NAME}:1\n`]);
  expect(await page.sidebar.isTabOpen('nbmodelpack-sidebar')).toBe(true);
  await expect(localBundle(page)).toBeVisible({ timeout: 15000 });
  await expand(localBundle(page));
  const v1 = localVersion(page, `${NAME}:1`);
  await expect(v1).toContainText('latest');
  await expect(v1.locator('[data-action="load"]')).toBeEnabled();

  // The filter box narrows the list by name, description, tags and badges.
  const search = sidebar(page).locator('.jp-ModelPack-search');
  await search.fill('no-such-model');
  await expect(localBundle(page)).toHaveCount(0);
  await expect(sidebar(page)).toContainText('No bundle matches the filter.');
  await search.fill('notebook cell');
  await expect(localBundle(page)).toBeVisible();
  await search.fill('');

  await page.screenshot({ path: `${artifacts}/sidebar-light.png` });

  // Load into notebook: asks for the variable (Python's default name), inserts
  // `%modelpack load …` below, runs it, and shows the card.
  await v1.locator('[data-action="load"]').click();
  const loadDialog = page.locator('.jp-Dialog');
  await expect(loadDialog.locator('input[aria-label="Variable"]')).toHaveValue('sidebar_demo');
  await expect(loadDialog.locator('input[aria-label="Key file"]')).toHaveCount(0);
  await loadDialog.getByRole('button', { name: 'Load' }).click();
  const cells = page.locator('.jp-NotebookPanel:visible .jp-Notebook .jp-Cell');
  await expect(cells).toHaveCount(2, { timeout: 15000 });
  const loadCell = cells.nth(1);
  await expect(loadCell.locator('.jp-InputArea-editor')).toContainText(
    `%modelpack load ${NAME}:1 as sidebar_demo`
  );
  await expect(loadCell.locator('.jp-InputPrompt')).toHaveText(/\[\d+\]/, { timeout: 90000 });
  // No error output (a traceback would quote the source line), then the card, rendered as HTML.
  await expect(
    loadCell.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
  ).toHaveCount(0);
  await expect(loadCell.locator('.jp-OutputArea-output[data-mime-type="text/html"]')).toContainText(
    `${NAME}:1`
  );
  await page.notebook.save();

  // The details view renders the model card with JupyterLab's Markdown renderer.
  await v1.locator('[data-action="details"]').click();
  const details = page.locator('.jp-ModelPack-details:visible');
  await expect(details.locator('.jp-ModelPack-detailsHead h2')).toHaveText(`${NAME}:1`);
  await expect(details.locator('.jp-ModelPack-card')).toContainText('packed by a notebook cell');
  await expect(details.locator('.jp-ModelPack-layers')).toContainText('model.safetensors');
  // Facts as written and as people read them: the architecture literally, counts grouped,
  // sizes in kB; one lineage, no empty header row.
  const facts = details.locator('.jp-ModelPack-facts');
  await expect(facts.locator('tr', { hasText: 'Architecture' })).toContainText('models:MLP');
  await expect(facts.locator('tr', { hasText: 'Parameters' })).toContainText('6,370');
  await expect(facts.locator('tr', { hasText: 'Size' })).toContainText(/\d+\.\d kB/);
  await expect(facts.locator('thead')).toHaveCount(0);
  await expect(details.locator('h3', { hasText: 'Lineage' })).toHaveCount(1);
  await expect(details.locator('h3', { hasText: 'Recipe' })).toHaveCount(0);
  await page.screenshot({ path: `${artifacts}/details-light.png` });
  await page.activity.activateTab('pack.ipynb');

  // Dark theme: same sidebar, JupyterLab's dark variables.
  await page.theme.setDarkTheme();
  await expect(page.locator('body')).toHaveAttribute('data-jp-theme-light', 'false');
  await page.sidebar.openTab('nbmodelpack-sidebar');
  await expect(localBundle(page)).toBeVisible();
  // The panel follows the theme: once the dark CSS is in, its background is dark.
  const brightness = () =>
    sidebar(page).evaluate(node => {
      const rgb = getComputedStyle(node).backgroundColor.match(/\d+/g) ?? [
        '255',
        '255',
        '255',
        '0'
      ];
      return rgb.length > 3 && rgb[3] === '0'
        ? 765
        : Number(rgb[0]) + Number(rgb[1]) + Number(rgb[2]);
    });
  await expect.poll(brightness, { timeout: 15000 }).toBeLessThan(200);
  await page.screenshot({ path: `${artifacts}/sidebar-dark.png` });
  await page.theme.setLightTheme();

  // Serve: a model server starts and the version shows a serving badge; Stop ends it.
  await page.sidebar.openTab('nbmodelpack-sidebar');
  await expand(localBundle(page));
  await localVersion(page, `${NAME}:1`).locator('[data-action="serve"]').click();
  // Ready (not just started): the job's result names the URL.
  // The URL is shown, with a curl line to copy; the version row shows it too.
  const served = page.locator('.jp-Dialog .jp-ModelPack-served');
  await expect(served).toContainText(`${NAME}:1 is served at http://127.0.0.1:`, {
    timeout: 90000
  });
  await expect(served.locator('.jp-ModelPack-snippet')).toHaveText(
    /^curl -s http:\/\/127\.0\.0\.1:\d+\/v2$/
  );
  await page.locator('.jp-Dialog').getByRole('button', { name: 'Close' }).click();
  await expect(localVersion(page, `${NAME}:1`).locator('.jp-ModelPack-serving')).toContainText(
    'serving at http://127.0.0.1:'
  );
  await expect(
    localVersion(page, `${NAME}:1`).locator('.jp-ModelPack-badge-serving')
  ).toBeVisible();
  await localVersion(page, `${NAME}:1`).locator('[data-action="stop"]').click();
  await expect(localVersion(page, `${NAME}:1`).locator('.jp-ModelPack-badge-serving')).toHaveCount(
    0,
    {
      timeout: 15000
    }
  );

  // Publish… to the test remote, see it under Published.
  await localVersion(page, `${NAME}:1`).locator('[data-action="publish"]').click();
  const dialog = page.locator('.jp-Dialog');
  await dialog.locator('select').selectOption(remote);
  await dialog.getByRole('button', { name: 'Publish' }).click();
  const published = sidebar(page).locator(
    `.jp-ModelPack-remote[data-remote="${remote}"] .jp-ModelPack-bundle[data-name="${NAME}"]`
  );
  await expect(published).toBeVisible({ timeout: 60000 });
  await expect(localVersion(page, `${NAME}:1`)).toContainText('published');

  // Delete the local copy (confirm dialog), then pull it back from the remote.
  await localVersion(page, `${NAME}:1`).locator('[data-action="delete"]').click();
  await page.locator('.jp-Dialog').getByRole('button', { name: 'Delete' }).click();
  await expect(localBundle(page)).toHaveCount(0, { timeout: 15000 });
  await expand(published);
  await published.locator('.jp-ModelPack-version').first().locator('[data-action="pull"]').click();
  await expect(localBundle(page)).toBeVisible({ timeout: 60000 });
  await expand(localBundle(page));
  await expect(localVersion(page, `${NAME}:1`)).toBeVisible();
  // Every action ended well: no error was shown, and the success toasts close by themselves.
  await expect(page.locator('.Toastify__toast--error')).toHaveCount(0);
  await expect(page.locator('.Toastify__toast')).toHaveCount(0, { timeout: 20000 });
  await page.screenshot({ path: `${artifacts}/sidebar-published.png` });

  // With no notebook open, Load is disabled and the panel says why.
  await page.notebook.close(true);
  await page.sidebar.openTab('nbmodelpack-sidebar');
  await expand(localBundle(page));
  await expect(sidebar(page).locator('.jp-ModelPack-hint')).toHaveText(
    'Open a notebook to load bundles into it.'
  );
  await expect(localVersion(page, `${NAME}:1`).locator('[data-action="load"]')).toBeDisabled();
});

test('commands are in the palette', async ({ page }) => {
  await page.keyboard.press('Control+Shift+C');
  const palette = page.locator('#command-palette');
  await palette.locator('input').fill('Model Bundle');
  const labels = palette.locator('.lm-CommandPalette-itemLabel');
  await expect(labels).toHaveCount(3);
  expect((await labels.allTextContents()).sort()).toEqual([
    'Load Model Bundle into Notebook…',
    'Refresh Model Bundles',
    'Show Model Bundles'
  ]);
});

/** Run `source` in a new last cell of the open notebook; its text output. */
async function runNewCell(page: Page, source: string): Promise<string[] | null> {
  await page.notebook.addCell('code', source);
  const index = (await page.notebook.getCellCount()) - 1;
  await page.notebook.runCell(index);
  return page.notebook.getCellTextOutput(index);
}

const publishedGroup = (page: Page, name: string) =>
  sidebar(page).locator(`.jp-ModelPack-remote[data-remote="${name}"]`);

test('a remote added and a version published from a cell show under Published without a click', async ({
  page
}) => {
  await page.notebook.createNew('publish.ipynb');
  await page.sidebar.openTab('nbmodelpack-sidebar');
  await expect(localBundle(page)).toBeVisible({ timeout: 15000 });
  await expect(publishedGroup(page, 'share')).toHaveCount(0);

  // A remote added from a cell (config.toml) appears by the panel's own poll.
  await page.notebook.setCell(
    0,
    'code',
    [
      'import tempfile, nbmodelpack',
      'nbmodelpack.add_remote("share", "file://" + tempfile.mkdtemp(prefix="share-"))',
      'print("added")'
    ].join('\n')
  );
  await page.notebook.runCell(0);
  expect(await page.notebook.getCellTextOutput(0)).toEqual(['added\n']);
  await expect(publishedGroup(page, 'share')).toContainText('Nothing published here yet.', {
    timeout: 15000
  });

  // A version published from a cell appears under that remote, again without ⟳.
  expect(
    await runNewCell(page, `nbmodelpack.publish("${NAME}:1", "share"); print("published")`)
  ).toEqual(['published\n']);
  await expect(
    publishedGroup(page, 'share').locator(`.jp-ModelPack-bundle[data-name="${NAME}"]`)
  ).toBeVisible({ timeout: 15000 });
  await expect(page.locator('.Toastify__toast--error')).toHaveCount(0);

  // The `ls` table, as a notebook user sees it.
  await page.notebook.addCell('code', '%load_ext nbmodelpack\n%modelpack ls');
  const lsIndex = (await page.notebook.getCellCount()) - 1;
  await page.notebook.runCell(lsIndex);
  const table = page
    .locator('.jp-NotebookPanel:visible .jp-Cell')
    .nth(lsIndex)
    .locator('.jp-OutputArea-output');
  await expect(table).toContainText(`${NAME}:1`);
  await table.screenshot({ path: `${artifacts}/ls-table-light.png` });
  await page.notebook.save();
  await page.notebook.close(true);
});

test('keyboard-only use of the sidebar keeps focus and open groups across refreshes', async ({
  page
}) => {
  await page.sidebar.openTab('nbmodelpack-sidebar');
  await expect(localBundle(page)).toBeVisible({ timeout: 15000 });
  const search = sidebar(page).locator('.jp-ModelPack-search');
  await search.focus();
  await page.keyboard.press('Tab'); // the first bundle's expander: a real button
  const head = localBundle(page).locator('.jp-ModelPack-bundleHead');
  await expect(head).toBeFocused();
  expect(await head.evaluate(node => node.tagName)).toBe('BUTTON');
  await expect(head).toHaveAttribute('aria-expanded', 'false');
  await page.keyboard.press('Enter');
  await expect(head).toHaveAttribute('aria-expanded', 'true');
  await expect(head).toBeFocused();
  // Load is disabled without a notebook, so the next stop is Details, named by its ref.
  await page.keyboard.press('Tab');
  const focused = () => page.evaluate(() => document.activeElement?.getAttribute('aria-label'));
  expect(await focused()).toBe(`Details of ${NAME}:1`);
  // The focus ring is visible.
  const outline = await page.evaluate(() => getComputedStyle(document.activeElement!).outlineStyle);
  expect(outline).not.toBe('none');

  // A change made elsewhere (a new tag) re-renders the list: focus stays on the same button.
  const reply = await page.request.post('/nbmodelpack/api/actions/tag', {
    data: { ref: `${NAME}:1`, tag: 'kbd' }
  });
  expect(reply.status()).toBe(200);
  await expect(localVersion(page, `${NAME}:1`)).toContainText('kbd', { timeout: 15000 });
  expect(await focused()).toBe(`Details of ${NAME}:1`);

  // ⟳ keeps the group open.
  await sidebar(page).getByRole('button', { name: 'Refresh' }).click();
  await expect(page.locator('.Toastify__toast--error')).toHaveCount(0);
  await expect(head).toHaveAttribute('aria-expanded', 'true');

  // A badge word narrows to versions, and the count follows.
  await search.fill('published kbd');
  await expect(sidebar(page).locator('[data-section="local"] .jp-ModelPack-version')).toHaveCount(
    1
  );
  await expect(sidebar(page).locator('[data-section="local"] .jp-ModelPack-count')).toHaveText('1');
  await search.fill('');

  // The layout restorer brings the sidebar back after a reload.
  await page.reload();
  await expect(sidebar(page)).toBeVisible({ timeout: 30000 });
  expect(await page.sidebar.isTabOpen('nbmodelpack-sidebar')).toBe(true);
});

test('an encrypted bundle loads from the sidebar with a key file', async ({ page }) => {
  await page.notebook.createNew('encrypted.ipynb');
  await page.notebook.setCell(
    0,
    'code',
    [
      'import nbmodelpack',
      'key, recipient = nbmodelpack.keygen_age("sidebar-key.txt")',
      `print(nbmodelpack.encrypt("${NAME}:1", recipients=[recipient]).ref)`
    ].join('\n')
  );
  await page.notebook.runCell(0);
  expect(await page.notebook.getCellTextOutput(0)).toEqual([`${NAME}:2\n`]);
  await page.sidebar.openTab('nbmodelpack-sidebar');
  await expect(localBundle(page)).toBeVisible({ timeout: 15000 });
  await expand(localBundle(page));
  const v2 = localVersion(page, `${NAME}:2`);
  await expect(v2.locator('.jp-ModelPack-badge-encrypted')).toBeVisible({ timeout: 15000 });
  await expect(v2.locator('[data-action="load"]')).toHaveAttribute(
    'aria-label',
    `Load ${NAME}:2 into the notebook`
  );
  await v2.locator('[data-action="load"]').click();
  const dialog = page.locator('.jp-Dialog');
  await dialog.locator('input[aria-label="Variable"]').fill('secret_net');
  await dialog.locator('input[aria-label="Key file"]').fill('sidebar-key.txt');
  await dialog.getByRole('button', { name: 'Load' }).click();
  const cells = page.locator('.jp-NotebookPanel:visible .jp-Notebook .jp-Cell');
  await expect(cells).toHaveCount(2, { timeout: 15000 });
  const loadCell = cells.nth(1);
  await expect(loadCell.locator('.jp-InputArea-editor')).toContainText(
    `%modelpack load ${NAME}:2 as secret_net --identity sidebar-key.txt`
  );
  await expect(loadCell.locator('.jp-InputPrompt')).toHaveText(/\[\d+\]/, { timeout: 90000 });
  await expect(
    loadCell.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
  ).toHaveCount(0);
  await expect(loadCell.locator('.jp-OutputArea-output[data-mime-type="text/html"]')).toContainText(
    `${NAME}:2`
  );
  await page.notebook.save();

  // Its Details name the parent by name:version, not by digest.
  await page.sidebar.openTab('nbmodelpack-sidebar');
  await v2.locator('[data-action="details"]').click();
  const details = page.locator('.jp-ModelPack-details:visible');
  await expect(details.locator('.jp-ModelPack-lineage li').last()).toHaveText(
    new RegExp(`^encrypt .* ← ${NAME}:1$`)
  );
  await page.screenshot({ path: `${artifacts}/details-encrypted-light.png` });
  await page.notebook.close(true);
});
