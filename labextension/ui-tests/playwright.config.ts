/**
 * Galata/Playwright configuration for the sidebar's browser tests.
 *
 * Started by tests/e2e/test_sidebar_browser.py, which runs JupyterLab and passes
 * TARGET_URL, JUPYTER_TOKEN and NBMODELPACK_ARTIFACTS. The browser is Debian's
 * Chromium (never a Playwright download).
 */
const baseConfig = require('@jupyterlab/galata/lib/playwright-config');

const artifacts = process.env.NBMODELPACK_ARTIFACTS ?? '../../test-artifacts';

module.exports = {
  ...baseConfig,
  testDir: './tests',
  outputDir: `${artifacts}/playwright`,
  timeout: 180 * 1000,
  expect: { timeout: 30 * 1000 },
  workers: 1,
  retries: 0,
  reporter: [['list']],
  use: {
    ...baseConfig.use,
    baseURL: process.env.TARGET_URL ?? 'http://127.0.0.1:8888',
    // Jupyter's own token auth stays on: every request carries it.
    extraHTTPHeaders: { Authorization: `token ${process.env.JUPYTER_TOKEN ?? ''}` },
    viewport: { width: 1280, height: 800 },
    trace: 'retain-on-failure',
    video: 'off',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/lib/chromium/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--no-first-run'
      ]
    }
  }
};
