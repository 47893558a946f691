// The pure parts of exec, logs, port-forward and diagnostics: container and port resolution,
// exit codes, ready endpoints, bounded log tails, event lines.
import { describe, expect, it } from 'vitest';
import type { V1Pod, V1Service } from '@kubernetes/client-node';
import { chooseContainer, exitCodeOf } from '../../src/kube/pods.js';
import { podPortFor, readyPodsOf, servicePortFor } from '../../src/kube/port-forward.js';
import { tailOf } from '../../src/kube/diagnostics.js';
import { formatEvent } from '../../src/kube/events.js';
import { K3sVmError } from '../../src/errors.js';

const pod: V1Pod = {
  metadata: { name: 'web', namespace: 'ns' },
  spec: {
    initContainers: [{ name: 'setup' }],
    containers: [
      { name: 'app', ports: [{ name: 'http', containerPort: 8080 }] },
      { name: 'sidecar', ports: [{ containerPort: 9090 }] },
    ],
  },
};

const refusal = (fn: () => unknown) => {
  try {
    fn();
  } catch (error) {
    return error as K3sVmError;
  }
  throw new Error('expected a refusal');
};

describe('chooseContainer', () => {
  it('takes a container the pod has, init containers included', () => {
    expect(chooseContainer(pod, 'sidecar')).toBe('sidecar');
    expect(chooseContainer(pod, 'setup')).toBe('setup');
  });

  it('names the pod and the containers it has when the container is not one of them', () => {
    const error = refusal(() => chooseContainer(pod, 'db'));
    expect(error.code).toBe('OBJECT_NOT_FOUND');
    expect(error.message).toBe('Pod ns/web has no container db; it has the containers app, sidecar and the init container setup');
  });

  it('asks for a container when there are several, unless the pod names its default', () => {
    expect(refusal(() => chooseContainer(pod, undefined)).message).toMatch(/has more than one container: name one/);
    const annotated = { ...pod, metadata: { ...pod.metadata, annotations: { 'kubectl.kubernetes.io/default-container': 'sidecar' } } };
    expect(chooseContainer(annotated, undefined)).toBe('sidecar');
    expect(chooseContainer({ metadata: {}, spec: { containers: [{ name: 'only' }] } }, undefined)).toBe('only');
  });
});

describe('exitCodeOf', () => {
  it("reads the command's own exit code from the exec status", () => {
    expect(exitCodeOf({ status: 'Success' })).toBe(0);
    expect(exitCodeOf({ status: 'Failure', reason: 'NonZeroExitCode', details: { causes: [{ reason: 'ExitCode', message: '3' }] } })).toBe(
      3,
    );
  });

  it('has none for a command that did not run', () => {
    expect(exitCodeOf({ status: 'Failure', reason: 'InternalError', message: 'executable file not found in $PATH' })).toBeUndefined();
  });
});

describe('ports', () => {
  it('resolves a pod port by name, or a number it declares', () => {
    expect(podPortFor(pod, 'http')).toBe(8080);
    expect(podPortFor(pod, 9090)).toBe(9090);
  });

  it('refuses a port the pod does not expose, naming the ones it does', () => {
    const error = refusal(() => podPortFor(pod, 81));
    expect(error.message).toBe('Pod ns/web does not expose port 81; it declares the ports 8080 (http), 9090');
    expect(refusal(() => podPortFor(pod, 'grpc')).message).toBe(
      'Pod ns/web has no port named grpc; it declares the ports 8080 (http), 9090',
    );
  });

  it('takes any number on a pod that declares no ports', () => {
    expect(podPortFor({ metadata: {}, spec: { containers: [{ name: 'a' }] } }, 1234)).toBe(1234);
  });

  const service: V1Service = {
    metadata: { name: 'web', namespace: 'ns' },
    spec: {
      ports: [
        { name: 'http', port: 80, targetPort: 'http' as never },
        { port: 9000, targetPort: 9090 as never },
      ],
    },
  };

  it('finds a service port by number or name, and refuses another with what it exposes', () => {
    expect(servicePortFor(service, 80).targetPort).toBe('http');
    expect(servicePortFor(service, 'http').port).toBe(80);
    expect(refusal(() => servicePortFor(service, 8080)).message).toBe(
      'Service ns/web does not expose port 8080; it exposes 80 (http → http), 9000 (→ 9090)',
    );
  });

  it('counts endpoints whose ready condition is true or unset as ready, pods only', () => {
    expect(
      readyPodsOf([
        {
          endpoints: [
            { conditions: { ready: true }, targetRef: { kind: 'Pod', name: 'b' } },
            { conditions: { ready: false }, targetRef: { kind: 'Pod', name: 'c' } },
            { conditions: {}, targetRef: { kind: 'Pod', name: 'a' } },
            { conditions: { ready: true } },
          ],
        },
      ]),
    ).toEqual(['a', 'b']);
  });
});

describe('diagnostics text', () => {
  it('keeps the end of a long log, cut at a line, and says how much was cut', () => {
    const log = Array.from({ length: 100 }, (_, i) => `line ${i}`).join('\n');
    const tail = tailOf(log, 40);
    expect(tail).toMatch(/^\[… \d+ earlier bytes cut\]\n/);
    expect(tail.endsWith('line 99')).toBe(true);
    expect(Buffer.byteLength(tail.split('\n').slice(1).join('\n'))).toBeLessThanOrEqual(40);
    expect(tailOf('short', 40)).toBe('short');
  });

  it('writes an event as time, type, reason, object and message, with its count', () => {
    expect(
      formatEvent({
        type: 'Warning',
        reason: 'BackOff',
        message: 'Back-off restarting failed container app ',
        count: 3,
        lastTimestamp: '2025-01-02T12:01:02Z',
        involvedObject: { kind: 'Pod', name: 'web' },
      }),
    ).toBe('12:01:02 Warning BackOff Pod/web: Back-off restarting failed container app (×3)');
  });
});
