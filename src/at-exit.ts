// What k3s-vm must still do when the process exits without the chance to do it properly (a
// runner that calls process.exit on Ctrl-C or SIGTERM): one 'exit' listener for all of it.
// Exit work is synchronous, never throws, and runs newest first, as a stack of clean-ups
// does: a VM's release before the lock that was held while it was booted.

type ExitWork = () => void;

const pending = new Set<{ readonly work: ExitWork }>();
let listening = false;

function runPending(): void {
  const entries = [...pending].reverse();
  pending.clear();
  for (const entry of entries) {
    try {
      entry.work();
    } catch {
      // Nothing more can be done while exiting; the next run cleans what is left.
    }
  }
}

/**
 * Registers work for the process's exit and returns its cancellation, for when the work has
 * been done the ordinary way (a lock released, a VM handed over). Cancelling twice is harmless.
 */
export function atExit(work: ExitWork): () => void {
  if (!listening) {
    listening = true;
    process.on('exit', runPending);
  }
  const entry = { work };
  pending.add(entry);
  return () => {
    pending.delete(entry);
  };
}
