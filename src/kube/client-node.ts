// @kubernetes/client-node, loaded on first use: importing it costs a few hundred milliseconds,
// which paths that never talk to the API (stop, status, the CLI's help) should not pay.
import { createRequire } from 'node:module';
import type * as ClientNode from '@kubernetes/client-node';

const require = createRequire(import.meta.url);
let loaded: typeof ClientNode | undefined;

/** The client-node module (synchronous: Node loads this ES module through require on first use). */
export function clientNode(): typeof ClientNode {
  loaded ??= require('@kubernetes/client-node') as typeof ClientNode;
  return loaded;
}
