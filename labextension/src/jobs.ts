/** Background jobs of the REST API (publish, pull, serve), followed in a notification. */
import { Notification } from '@jupyterlab/apputils';

import { APIError, requestAPI } from './request';
import { IJob } from './types';

/** A background job that failed; its notification already says why. */
export class JobFailed extends APIError {}

/** The one line to show for an error. */
export function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Poll a background job until it ends, showing its progress as a notification.
 *
 * Example: `const job = await followJob(reply.job, 'Publish m:1');`
 */
export async function followJob(job: IJob, label: string): Promise<IJob> {
  const id = Notification.emit(`${label}…`, 'in-progress', { autoClose: false });
  let current = job;
  while (current.state === 'running') {
    await new Promise(resolve => setTimeout(resolve, 500));
    try {
      current = (await requestAPI<{ job: IJob }>(`jobs/${current.id}`))!.job;
    } catch (error) {
      Notification.update({
        id,
        message: `${label}: ${message(error)}`,
        type: 'error',
        autoClose: 8000
      });
      throw new JobFailed(message(error), 0);
    }
    const p = current.progress;
    if (current.state === 'running' && p.total) {
      const pct = Math.floor((100 * p.done) / p.total);
      Notification.update({
        id,
        message: `${label}: ${p.step} ${pct}%`,
        type: 'in-progress',
        autoClose: false
      });
    }
  }
  if (current.state === 'error') {
    Notification.update({
      id,
      message: `${label} failed: ${current.error}`,
      type: 'error',
      autoClose: 10000
    });
    throw new JobFailed(current.error ?? 'failed', 0);
  }
  Notification.update({ id, message: `${label}: done`, type: 'success', autoClose: 4000 });
  return current;
}
