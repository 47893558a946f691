// Reads Nix's structured log (--log-format internal-json) into build progress and plain messages.

/** Nix's activity types (libutil/logging.hh), the ones progress is read from. */
const enum ActivityType {
  FileTransfer = 101,
  CopyPaths = 103,
  Builds = 104,
  Build = 105,
}

/** Nix's result types (libutil/logging.hh). */
const enum ResultType {
  BuildLogLine = 101,
  Progress = 105,
  SetExpected = 106,
}

/** What one line of Nix's stderr means to the caller. */
export type NixLogEvent =
  /** A message Nix would have printed (level 0 error, 1 warning, 2 notice, 3 info, higher: chatter). */
  | { readonly kind: 'message'; readonly level: number; readonly text: string }
  /** A line a builder wrote. */
  | { readonly kind: 'build-log'; readonly text: string }
  /** Counters changed; see NixProgress.summary(). */
  | { readonly kind: 'progress' };

interface Transfer {
  done: number;
  expected: number;
}

const MiB = 1024 * 1024;

/** ANSI colour codes, which Nix puts into its messages even in JSON. */
const ansi = /\u001b\[[0-9;]*m/g;

/** Accumulates the counters of one nix-build run from its `@nix {…}` lines. */
export class NixProgress {
  private built = { done: 0, expected: 0 };
  private fetched = { done: 0, expected: 0 };
  /** The highest counts of finished builds and fetches seen (Nix may lower them again at the end). */
  private mostBuilt = 0;
  private mostFetched = 0;
  private readonly transfers = new Map<number, Transfer>();
  private finishedBytes = 0;
  private expectedBytes = 0;
  /** Which activity (builds or substitutions) an id is, from its `start` line. */
  private readonly kinds = new Map<number, ActivityType>();

  /** Interprets one stderr line; plain (non-JSON) lines come back as messages. */
  read(line: string): NixLogEvent | undefined {
    if (!line.startsWith('@nix ')) return line.trim() ? { kind: 'message', level: 3, text: line } : undefined;
    let entry: Record<string, unknown>;
    try {
      entry = JSON.parse(line.slice(5)) as Record<string, unknown>;
    } catch {
      return { kind: 'message', level: 3, text: line };
    }
    const fields = Array.isArray(entry['fields']) ? (entry['fields'] as unknown[]) : [];
    const id = Number(entry['id']);
    switch (entry['action']) {
      case 'msg':
        return { kind: 'message', level: Number(entry['level'] ?? 3), text: String(entry['msg'] ?? '').replace(ansi, '') };
      case 'start': {
        const type = Number(entry['type']);
        if (type === ActivityType.FileTransfer) this.transfers.set(id, { done: 0, expected: 0 });
        else if (type === ActivityType.Builds || type === ActivityType.CopyPaths) this.kinds.set(id, type);
        return undefined;
      }
      case 'stop': {
        const transfer = this.transfers.get(id);
        if (!transfer) return undefined;
        this.finishedBytes += transfer.done;
        this.transfers.delete(id);
        return { kind: 'progress' };
      }
      case 'result':
        return this.result(id, Number(entry['type']), fields);
      default:
        return undefined;
    }
  }

  private result(id: number, type: number, fields: unknown[]): NixLogEvent | undefined {
    if (type === ResultType.BuildLogLine) return { kind: 'build-log', text: String(fields[0] ?? '').replace(ansi, '') };
    const numbers = fields.map(Number);
    if (type === ResultType.SetExpected && numbers[0] === ActivityType.FileTransfer) {
      this.expectedBytes = numbers[1] ?? 0;
      return { kind: 'progress' };
    }
    if (type !== ResultType.Progress) return undefined;
    const [done = 0, expected = 0] = numbers;
    const transfer = this.transfers.get(id);
    if (transfer) {
      transfer.done = done;
      transfer.expected = expected;
      return { kind: 'progress' };
    }
    // Builds and CopyPaths (substitutions) report [done, expected, running, failed].
    const kind = this.kinds.get(id);
    if (kind === ActivityType.Builds) this.built = { done, expected };
    else if (kind === ActivityType.CopyPaths) this.fetched = { done, expected };
    else return undefined;
    this.mostBuilt = Math.max(this.mostBuilt, this.built.done);
    this.mostFetched = Math.max(this.mostFetched, this.fetched.done);
    return { kind: 'progress' };
  }

  /** Bytes downloaded so far (finished and running transfers). */
  get downloadedBytes(): number {
    let bytes = this.finishedBytes;
    for (const transfer of this.transfers.values()) bytes += transfer.done;
    return bytes;
  }

  /**
   * Whether a derivation was built, a path fetched or anything downloaded. (Nix may announce a
   * build of an output that turns out to be in the store: `started` then, never `didWork`.)
   */
  get didWork(): boolean {
    return this.mostBuilt > 0 || this.mostFetched > 0 || this.downloadedBytes > 0;
  }

  /** Whether any work has been announced (nothing to show for an evaluation-only run). */
  get started(): boolean {
    return this.built.expected > 0 || this.fetched.expected > 0 || this.downloadedBytes > 0;
  }

  /** One line: "built 3 of 120 derivations, fetched 450 of 1800 paths, 312 of 1650 MiB downloaded". */
  summary(): string {
    const parts: string[] = [];
    if (this.built.expected > 0) parts.push(`built ${this.built.done} of ${this.built.expected} derivations`);
    if (this.fetched.expected > 0) parts.push(`fetched ${this.fetched.done} of ${this.fetched.expected} paths`);
    const downloaded = (this.downloadedBytes / MiB).toFixed(0);
    parts.push(
      this.expectedBytes > 0 ? `${downloaded} of ${(this.expectedBytes / MiB).toFixed(0)} MiB downloaded` : `${downloaded} MiB downloaded`,
    );
    return parts.join(', ');
  }
}
