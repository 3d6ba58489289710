/** One bundle version as listed by `GET bundles` / `GET remotes/R/bundles`. */
export interface IVersion {
  ref: string;
  name: string;
  version: number | null;
  digest: string;
  tags: string[];
  created: string;
  size: number;
  parameters: number;
  precision: string;
  quantization: string;
  architecture: string;
  description: string;
  metrics: Record<string, unknown>;
  op: string;
  parent: string | null;
  badges: string[];
  /** Some layer is age-encrypted: loading or serving needs a key. */
  encrypted: boolean;
  /** The variable `%modelpack load` binds by default (Python's rule, from the server). */
  var_name: string;
  published: string[];
  serving: string | null;
  remote: string | null;
}

export interface IBundle {
  name: string;
  latest: string;
  description: string;
  versions: IVersion[];
}

export interface IListing {
  etag: string;
  store: string;
  remotes: IRemote[];
  bundles: IBundle[];
}

export interface IRemote {
  name: string;
  url: string;
}

export interface IRemoteListing {
  remote: string;
  bundles: IBundle[];
}

export interface IDetail {
  name: string;
  versions: IVersion[];
  detail: IVersion & {
    card: string;
    recipe: Record<string, unknown>;
    lineage: Record<string, unknown>[];
    layers: { filepath: string; mediaType: string; digest: string; size: number }[];
  };
}

export interface IJob {
  id: string;
  action: string;
  ref: string;
  state: 'running' | 'done' | 'error';
  progress: { step: string; done: number; total: number | null };
  result: unknown;
  error: string | null;
}
