// The one error type the library throws: a stable code to branch on, a hint with the remedy.

/** Stable codes callers (and the CLI's exit codes) branch on; the message text may change. */
export type K3sVmErrorCode =
  | 'CONFIG_INVALID'
  | 'STATE_INVALID'
  | 'STATE_WRITE_FAILED'
  | 'LOCK_TIMEOUT'
  | 'NIX_MISSING'
  | 'NIXPKGS_MISSING'
  | 'NIXPKGS_UNAVAILABLE'
  | 'NIX_EVAL_FAILED'
  | 'NIX_BUILD_FAILED'
  | 'RUN_SCRIPT_MISSING'
  | 'KVM_UNUSABLE'
  | 'TOOL_MISSING'
  | 'QEMU_START_FAILED'
  | 'QEMU_EXITED'
  | 'DISK_DAMAGED'
  | 'KUBECONFIG_INVALID'
  | 'QMP_FAILED'
  | 'PORT_IN_USE'
  | 'SSH_FAILED'
  | 'NOT_READY'
  | 'NOT_RUNNING'
  | 'STILL_RUNNING'
  | 'CONFIG_MISMATCH'
  | 'DISK_MISMATCH'
  | 'DISK_GROW_FAILED'
  | 'CONTEXT_NOT_ALLOWED'
  | 'WORKLOAD_INVALID'
  | 'IMAGE_IMPORT_FAILED'
  | 'APPLY_FAILED'
  | 'TARGET_INVALID'
  | 'OBJECT_NOT_FOUND'
  | 'KUBE_REQUEST_FAILED'
  | 'WAIT_TIMEOUT'
  | 'WAIT_FAILED'
  | 'EXEC_FAILED'
  | 'PORT_FORWARD_FAILED'
  | 'TEST_DIAGNOSTICS'
  | 'SNAPSHOT_REFUSED'
  | 'SNAPSHOT_FAILED'
  | 'REWIND_FAILED'
  | 'VM_IN_USE'
  | 'ABORTED';

export interface K3sVmErrorOptions {
  /** What the user can do about it; printed on its own line by the CLI. */
  readonly hint?: string | undefined;
  readonly cause?: unknown;
  /** Extra lines worth showing (for example the tail of the VM's serial log). */
  readonly details?: string | undefined;
}

/** Every failure the library reports on purpose is a K3sVmError. */
export class K3sVmError extends Error {
  override readonly name = 'K3sVmError';
  readonly code: K3sVmErrorCode;
  readonly hint: string | undefined;
  readonly details: string | undefined;

  constructor(code: K3sVmErrorCode, message: string, options: K3sVmErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.hint = options.hint;
    this.details = options.details;
  }
}

export function isK3sVmError(error: unknown, code?: K3sVmErrorCode): error is K3sVmError {
  return error instanceof K3sVmError && (code === undefined || error.code === code);
}

/** Throws the AbortSignal's reason as an ABORTED error if it fired. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}

export function abortError(signal: AbortSignal): K3sVmError {
  const reason: unknown = signal.reason;
  if (reason instanceof K3sVmError) return reason;
  return new K3sVmError('ABORTED', 'the operation was aborted', { cause: reason });
}
