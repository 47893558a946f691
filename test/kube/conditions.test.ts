// The ready-made conditions and how an object's state reads, on objects as the API serves them.
import { describe, expect, it } from 'vitest';
import {
  deleted,
  exists,
  deploymentAvailable,
  describeCondition,
  describeState,
  jobComplete,
  jobFailed,
  podReady,
  podRunning,
  podSucceeded,
} from '../../src/kube/conditions.js';

const pod = (phase: string, ready = 'False') => ({
  kind: 'Pod',
  metadata: { name: 'web' },
  status: { phase, conditions: [{ type: 'Ready', status: ready }] },
});

const deployment = (spec: number, status: Record<string, unknown>, generation = 2) => ({
  kind: 'Deployment',
  metadata: { name: 'web', generation },
  spec: { replicas: spec },
  status: { observedGeneration: 2, ...status },
});

describe('pod conditions', () => {
  it('podRunning holds for a Running pod, waits for a Pending one and fails for one that ended', () => {
    expect(podRunning(pod('Running'))).toBe(true);
    expect(podRunning(pod('Pending'))).toBe(false);
    expect(podRunning(undefined)).toBe(false);
    expect(podRunning(pod('Succeeded'))).toEqual({ failed: expect.stringMatching(/phase Succeeded/) });
  });

  it('podReady needs the Ready condition True, not only the phase', () => {
    expect(podReady(pod('Running', 'False'))).toBe(false);
    expect(podReady(pod('Running', 'True'))).toBe(true);
    expect(podReady(pod('Failed'))).toEqual({ failed: expect.stringMatching(/Failed/) });
  });

  it('podSucceeded fails at once for a Failed pod', () => {
    expect(podSucceeded(pod('Succeeded'))).toBe(true);
    expect(podSucceeded(pod('Running'))).toBe(false);
    expect(podSucceeded(pod('Failed'))).toEqual({ failed: 'the Pod Failed' });
  });
});

describe('deploymentAvailable, as kubectl rollout status judges', () => {
  it('holds when every replica is updated and available and the controller saw the latest spec', () => {
    expect(deploymentAvailable(deployment(2, { replicas: 2, updatedReplicas: 2, availableReplicas: 2 }))).toBe(true);
  });

  it('waits while the controller has not observed the latest generation', () => {
    expect(deploymentAvailable(deployment(2, { replicas: 2, updatedReplicas: 2, availableReplicas: 2 }, 3))).toBe(false);
  });

  it('waits while replicas are not yet updated, old replicas remain, or updated ones are not available', () => {
    expect(deploymentAvailable(deployment(2, { replicas: 2, updatedReplicas: 1, availableReplicas: 2 }))).toBe(false);
    expect(deploymentAvailable(deployment(2, { replicas: 3, updatedReplicas: 2, availableReplicas: 3 }))).toBe(false);
    expect(deploymentAvailable(deployment(2, { replicas: 2, updatedReplicas: 2, availableReplicas: 1 }))).toBe(false);
  });

  it('fails at once when the rollout exceeded its progress deadline', () => {
    const stuck = deployment(1, {
      conditions: [
        {
          type: 'Progressing',
          status: 'False',
          reason: 'ProgressDeadlineExceeded',
          message: 'ReplicaSet "web-1" has timed out progressing.',
        },
      ],
    });
    expect(deploymentAvailable(stuck)).toEqual({ failed: expect.stringMatching(/progress deadline: ReplicaSet "web-1" has timed out/) });
  });

  it('counts one replica when the spec leaves replicas out', () => {
    const one = {
      metadata: { generation: 1 },
      spec: {},
      status: { observedGeneration: 1, replicas: 1, updatedReplicas: 1, availableReplicas: 1 },
    };
    expect(deploymentAvailable(one)).toBe(true);
  });
});

describe('job conditions', () => {
  const job = (type: string) => ({
    status: {
      conditions: [{ type, status: 'True', reason: 'BackoffLimitExceeded', message: 'Job has reached the specified backoff limit' }],
    },
  });
  it('jobComplete holds on Complete and fails at once on Failed, with the reason', () => {
    expect(jobComplete(job('Complete'))).toBe(true);
    expect(jobComplete({ status: {} })).toBe(false);
    expect(jobComplete(job('Failed'))).toEqual({
      failed: 'the Job Failed (BackoffLimitExceeded: Job has reached the specified backoff limit)',
    });
  });
  it('jobFailed holds on Failed and fails at once when the Job completed', () => {
    expect(jobFailed(job('Failed'))).toBe(true);
    expect(jobFailed(job('Complete'))).toEqual({ failed: 'the Job completed instead' });
  });
});

describe('deleted, exists and descriptions', () => {
  it('deleted holds only while the object does not exist', () => {
    expect(deleted(undefined)).toBe(true);
    expect(deleted(pod('Running'))).toBe(false);
  });

  it('exists holds only while the object exists, and says "created"', () => {
    expect(exists(pod('Pending'))).toBe(true);
    expect(exists(undefined)).toBe(false);
    expect(describeCondition(exists)).toBe('created');
  });

  it('describes a ready-made condition by its description and a function by its name', () => {
    expect(describeCondition(podReady)).toBe('Ready');
    const hasTwoReplicas = () => true;
    expect(describeCondition(hasTwoReplicas)).toBe('as hasTwoReplicas requires');
  });

  it("reads an object's phase, conditions and each container's state in one line", () => {
    const waiting = {
      status: {
        phase: 'Pending',
        conditions: [{ type: 'Ready', status: 'False', reason: 'ContainersNotReady', message: 'containers with unready status: [app]' }],
        containerStatuses: [
          { name: 'app', ready: false, restartCount: 0, state: { waiting: { reason: 'ErrImageNeverPull', message: 'image not present' } } },
        ],
      },
    };
    expect(describeState(waiting)).toBe(
      'phase Pending; conditions Ready=False (ContainersNotReady: containers with unready status: [app]); containers app waiting (ErrImageNeverPull: image not present)',
    );
    expect(describeState(undefined)).toBe('it does not exist');
    expect(describeState({ status: { replicas: 2, availableReplicas: 1 } })).toBe('replicas 2, availableReplicas 1');
  });
});
